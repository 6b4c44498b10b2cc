//! Which decoder layers the maps use: DEXAR.md's `layer_index`. One type
//! chooses the layers a generation traces and restricts recorded traces to
//! fewer layers afterwards (the REPL's `/layers`), so both agree.

use serde::{Deserialize, Serialize};
use std::ops::Range;

use crate::trace::StepTrace;

/// The first decoder layer used; negative values count from the end.
///
/// The default, [`LayerSelection::DEFAULT_INDEX`] = -10, uses the last ten
/// decoder layers, i.e. every layer of a model with ten or fewer. Indices
/// outside the model are clamped: a negative one reaching past the first
/// layer starts at layer 0, a positive one past the last layer starts at the
/// last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerSelection {
    pub layer_index: i64,
}

impl Default for LayerSelection {
    fn default() -> Self {
        Self::new(Self::DEFAULT_INDEX)
    }
}

impl LayerSelection {
    /// The default `layer_index` of every front end.
    pub const DEFAULT_INDEX: i64 = -10;

    pub fn new(layer_index: i64) -> Self {
        Self { layer_index }
    }

    /// Every layer (`layer_index` 0).
    pub fn all() -> Self {
        Self::new(0)
    }

    /// The absolute layers selected in a decoder of `num_layers` layers.
    pub fn layers(&self, num_layers: usize) -> Range<usize> {
        let n = num_layers as i64;
        let start = if self.layer_index < 0 {
            (n + self.layer_index).max(0)
        } else {
            self.layer_index.min(n - 1).max(0)
        };
        start as usize..num_layers
    }

    /// What clamping did, when the index lies outside a decoder of
    /// `num_layers` layers (the default index never counts: its clamping is
    /// documented).
    pub fn clamp_note(&self, num_layers: usize) -> Option<String> {
        let n = num_layers as i64;
        let k = self.layer_index;
        if k == Self::DEFAULT_INDEX || (-n..n).contains(&k) {
            return None;
        }
        Some(format!(
            "layer index {k} is outside the model's {num_layers} layers; using {}",
            describe(&self.layers(num_layers))
        ))
    }

    /// `trace` restricted to the selected layers of its `num_layers`-layer
    /// decoder (slots of other layers dropped).
    pub fn restrict(&self, trace: &StepTrace, num_layers: usize) -> StepTrace {
        trace.restricted_to_layers_from(self.layers(num_layers).start)
    }
}

/// `layers a-b` for messages.
pub fn describe(layers: &Range<usize>) -> String {
    format!("layers {}-{}", layers.start, layers.end.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_counts_from_the_end_and_both_ends_clamp() {
        let sel = |k| LayerSelection::new(k).layers(32);
        assert_eq!(LayerSelection::default().layers(32), 22..32);
        assert_eq!(LayerSelection::default().layers(3), 0..3);
        assert_eq!(sel(-1), 31..32);
        assert_eq!(sel(-99), 0..32);
        assert_eq!(sel(0), 0..32);
        assert_eq!(sel(5), 5..32);
        assert_eq!(sel(99), 31..32);
        assert_eq!(LayerSelection::all().layers(4), 0..4);
        assert_eq!(LayerSelection::new(3).layers(0), 0..0);
        assert_eq!(describe(&(2..4)), "layers 2-3");
        let note = |k| LayerSelection::new(k).clamp_note(4);
        assert_eq!(
            note(99).as_deref(),
            Some("layer index 99 is outside the model's 4 layers; using layers 3-3")
        );
        assert_eq!(
            note(-99).as_deref(),
            Some("layer index -99 is outside the model's 4 layers; using layers 0-3")
        );
        assert_eq!(note(3), None);
        assert_eq!(note(-4), None);
        assert_eq!(LayerSelection::default().clamp_note(3), None);
    }
}
