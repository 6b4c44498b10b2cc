//! Heatmap grids and the min-max normalisation every displayed map goes through.

use serde::{Deserialize, Serialize};

/// The patch grid of the image tokens, row-major `height x width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub height: usize,
    pub width: usize,
}

impl Grid {
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }

    pub fn len(&self) -> usize {
        self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One strategy's attribution for one generated token.
///
/// `raw` is the un-normalised map over the image positions (row-major over
/// `grid`; when the image span holds one more position than the grid, as with
/// the `full` feature strategy's CLS token, that extra leading value has been
/// dropped). `weight` is the token weight (δ_t for DEX-AR, 1.0 for strategies
/// without a notion of token weight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMap {
    pub grid: Grid,
    pub raw: Vec<f32>,
    pub weight: f32,
}

impl TokenMap {
    /// The displayed map: min-max normalised to [0, 1]; all zeros when constant.
    pub fn normalized(&self) -> Vec<f32> {
        minmax(&self.raw).0
    }

    /// True when the map is constant, i.e. the token has no visual evidence.
    pub fn is_degenerate(&self) -> bool {
        minmax(&self.raw).1
    }
}

/// Min-max normalise to [0, 1]. Returns the map and whether it was degenerate
/// (max == min, or empty, or non-finite), in which case the map is all zeros.
pub fn minmax(values: &[f32]) -> (Vec<f32>, bool) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &v in values {
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) || hi <= lo {
        return (vec![0.0; values.len()], true);
    }
    let span = hi - lo;
    (
        values
            .iter()
            .map(|&v| ((v as f64 - lo) / span) as f32)
            .collect(),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_maps_to_unit_interval() {
        let (m, degenerate) = minmax(&[2.0, 4.0, 3.0]);
        assert!(!degenerate);
        assert_eq!(m, vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn constant_map_is_zero_and_degenerate() {
        let (m, degenerate) = minmax(&[0.7, 0.7, 0.7]);
        assert!(degenerate);
        assert_eq!(m, vec![0.0; 3]);
        assert!(minmax(&[]).1);
        assert!(minmax(&[1.0, f32::NAN]).1);
        assert_eq!(minmax(&[1.0, f32::INFINITY]).0, vec![0.0, 0.0]);
    }
}
