//! The map a selection of tokens shows under a strategy: one token's map, or
//! the strategy's aggregate over several, with what it was made of.

use std::ops::Range;

use dexar_core::maps::weighted_global_sum;
use dexar_core::{
    minmax, weighted_sum, Grid, HeadScores, RegionView, StepTrace, Strategy, TokenMap,
};

use crate::error::StateError;

/// A map in [0, 1] ready to draw, and its provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub strategy: String,
    /// E.g. `token 2 " circle" δ=0.310` or `tokens 0-6 "a red circle"`.
    pub title: String,
    pub map01: Vec<f32>,
    pub grid: Grid,
    /// Range of the map before min-max normalisation.
    pub raw_min: f32,
    pub raw_max: f32,
    /// Constant map: no visual evidence.
    pub degenerate: bool,
    /// An image split into regions, shown with [`RegionView::All`]: the
    /// global view's map in [0, 1] and its grid, drawn beside the tiles'
    /// composed map (`map01`).
    pub beside: Option<(Grid, Vec<f32>)>,
}

impl Shown {
    /// The map of `steps` (the traces of answer tokens `range`, already
    /// restricted to the selected layers) under `strategy`. `whole` says the
    /// selection is the whole answer; `topk` is DEX-AR's, for the δ in titles.
    /// For an image split into regions, `view` chooses the tiles' composed
    /// map, the global view's, or the composed map with the global one beside.
    pub fn compute(
        strategy: &dyn Strategy,
        steps: &[StepTrace],
        range: Range<usize>,
        whole: bool,
        topk: usize,
        view: RegionView,
    ) -> Result<Self, StateError> {
        let maps = steps
            .iter()
            .map(|s| strategy.token_map(s))
            .collect::<Result<Vec<TokenMap>, _>>()
            .map_err(StateError::strategy)?;
        let (Some(first), Some(step)) = (maps.first(), steps.first()) else {
            return Err(StateError::EmptyAnswer);
        };
        let grid = first.grid;
        let (raw, map01, title) = if let [map] = maps.as_slice() {
            let delta = HeadScores::compute(step, topk).token_weight();
            let title = format!("token {} {:?} δ={delta:.3}", step.step, step.token_text);
            (map.raw.clone(), map.normalized(), title)
        } else {
            let map01 = strategy.sentence_map(&maps).map_err(StateError::strategy)?;
            let text: String = steps.iter().map(|s| s.token_text.as_str()).collect();
            let title = if whole {
                format!(
                    "whole answer (tokens 0-{}, weighted by token weight)",
                    range.end - 1
                )
            } else {
                format!("tokens {}-{} {:?}", range.start, range.end - 1, text.trim())
            };
            (weighted_sum(&maps), map01, title)
        };
        if map01.len() != grid.len() {
            return Err(StateError::Strategy(format!(
                "strategy {} returned {} values for a {}x{} grid",
                strategy.name(),
                map01.len(),
                grid.height,
                grid.width
            )));
        }
        let global = maps
            .iter()
            .any(|m| !m.regions.is_empty())
            .then(|| global_map(&maps))
            .flatten();
        Ok(match (view, global) {
            (RegionView::Global, Some((g, global_raw))) => {
                let map01 = minmax(&global_raw).0;
                let title = format!("{title} · global view");
                Self::from_raw(strategy.name(), title, &global_raw, map01, g)
            }
            (RegionView::All, Some((g, global_raw))) => {
                // The raw range covers both maps.
                let both: Vec<f32> = raw.iter().chain(&global_raw).copied().collect();
                let title = format!("{title} · tiles | global view");
                Self {
                    beside: Some((g, minmax(&global_raw).0)),
                    ..Self::from_raw(strategy.name(), title, &both, map01, grid)
                }
            }
            (RegionView::Tiles, Some(_)) => Self::from_raw(
                strategy.name(),
                format!("{title} · tiles"),
                &raw,
                map01,
                grid,
            ),
            (_, None) => Self::from_raw(strategy.name(), title, &raw, map01, grid),
        })
    }

    /// What one head looked at for one token: its rectified image gradient
    /// `G_v = ReLU(g[V])` over the patch grid, titled with the head weight
    /// `w` (DEX-AR's filtering, top-`topk` scores). `slot` indexes the
    /// trace's layers.
    pub fn head(
        step: &StepTrace,
        slot: usize,
        head: usize,
        topk: usize,
    ) -> Result<Self, StateError> {
        step.validate().map_err(StateError::strategy)?;
        if slot >= step.layers.len() || head >= step.num_heads {
            return Err(StateError::Strategy(format!(
                "no head {head} of layer slot {slot}: the trace has {} layers of {} heads",
                step.layers.len(),
                step.num_heads
            )));
        }
        let grad = step.grad_row(slot, head);
        let cells: Vec<f32> = step.cell_positions().map(|j| grad[j].max(0.0)).collect();
        let w = HeadScores::compute(step, topk).weights[slot * step.num_heads + head];
        let TokenMap { raw, grid, .. } = TokenMap::from_cells(&step.regions, cells, w);
        let title = format!(
            "token {} {:?} layer {} head {head} w={w:.3}",
            step.step, step.token_text, step.layers[slot]
        );
        let map01 = minmax(&raw).0;
        Ok(Self::from_raw("head G_v", title, &raw, map01, grid))
    }

    fn from_raw(strategy: &str, title: String, raw: &[f32], map01: Vec<f32>, grid: Grid) -> Self {
        let (lo, hi) = raw
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        Self {
            strategy: strategy.to_string(),
            title,
            degenerate: minmax(&map01).1 || minmax(raw).1,
            map01,
            grid,
            raw_min: lo,
            raw_max: hi,
            beside: None,
        }
    }
}

/// The un-normalised global view's map of `maps` (one token's, or the
/// weighted sum of several) and its grid; `None` without a global view.
fn global_map(maps: &[TokenMap]) -> Option<(Grid, Vec<f32>)> {
    let (grid, one) = maps.first()?.global()?;
    Some(match maps {
        [_] => (grid, one.to_vec()),
        _ => (grid, weighted_global_sum(maps)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_core::PositionKind;

    #[test]
    fn a_heads_map_is_its_rectified_image_gradient() {
        // 1 layer (absolute 4), 2 heads, positions: prompt, 4 image cells, query.
        let grads = vec![
            0.5, -1.0, 2.0, 0.0, 3.0, 0.1, // head 0
            0.0, 1.0, -2.0, 4.0, 0.0, 9.0, // head 1: text dominates
        ];
        let mut kinds = vec![PositionKind::Prompt];
        kinds.extend([PositionKind::Image; 4]);
        kinds.push(PositionKind::Generated);
        let step = StepTrace {
            step: 2,
            token_id: 7,
            token_text: " red".into(),
            query_position: 5,
            layers: vec![4],
            num_heads: 2,
            num_positions: 6,
            attn: vec![0.0; 12],
            grads,
            kinds,
            regions: vec![dexar_core::ImageRegion::whole((1, 5), Grid::new(2, 2))],
        };
        let h0 = Shown::head(&step, 0, 0, 1).unwrap();
        assert_eq!(h0.map01, [0.0, 2.0 / 3.0, 0.0, 1.0]);
        assert_eq!((h0.raw_min, h0.raw_max), (0.0, 3.0));
        // S_v = 3, S_text = max(0.5, 0.1) = 0.5: w = 2.5.
        assert!(h0.title.contains("layer 4 head 0 w=2.500"), "{}", h0.title);
        let h1 = Shown::head(&step, 0, 1, 1).unwrap();
        assert_eq!(h1.map01, [0.25, 0.0, 1.0, 0.0]);
        assert!(h1.title.ends_with("w=0.000"), "{}", h1.title);
        assert!(Shown::head(&step, 1, 0, 1).is_err());
        assert!(Shown::head(&step, 0, 2, 1).is_err());
    }

    #[test]
    fn a_split_image_shows_its_tiles_its_global_view_or_both() {
        use dexar_core::{DexarStrategy, RegionView};
        let steps = [0, 1].map(crate::records::tests::split_trace);
        let dexar = DexarStrategy {
            filtered: false,
            topk: 1,
        };
        let maps: Vec<TokenMap> = steps.iter().map(|s| dexar.token_map(s).unwrap()).collect();
        let show = |view, range: Range<usize>| {
            Shown::compute(&dexar, &steps[range.clone()], range, false, 1, view).unwrap()
        };
        // One token: two 2x2 tiles side by side make a 2x4 map; the global view is 2x2.
        let tiles = show(RegionView::Tiles, 0..1);
        assert_eq!(tiles.grid, Grid::new(2, 4));
        assert_eq!(tiles.map01, maps[0].normalized());
        assert!(tiles.title.ends_with("· tiles") && tiles.beside.is_none());
        let global = show(RegionView::Global, 0..1);
        assert_eq!(global.grid, Grid::new(2, 2));
        assert_eq!(global.map01, minmax(maps[0].global().unwrap().1).0);
        let both = show(RegionView::All, 0..1);
        assert_eq!((both.grid, &both.map01), (tiles.grid, &tiles.map01));
        assert_eq!(both.beside, Some((global.grid, global.map01.clone())));
        // Several tokens: the weighted sums of each.
        let global = show(RegionView::Global, 0..2);
        assert_eq!(global.map01, minmax(&weighted_global_sum(&maps)).0);
    }
}
