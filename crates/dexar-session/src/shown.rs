//! The map a selection of tokens shows under a strategy: one token's map, or
//! the strategy's aggregate over several, with what it was made of.

use std::ops::Range;

use dexar_core::{minmax, weighted_sum, Grid, HeadScores, StepTrace, Strategy, TokenMap};

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
}

impl Shown {
    /// The map of `steps` (the traces of answer tokens `range`, already
    /// restricted to the selected layers) under `strategy`. `whole` says the
    /// selection is the whole answer; `topk` is DEX-AR's, for the δ in titles.
    pub fn compute(
        strategy: &dyn Strategy,
        steps: &[StepTrace],
        range: Range<usize>,
        whole: bool,
        topk: usize,
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
        let (lo, hi) = raw
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        Ok(Self {
            strategy: strategy.name().to_string(),
            title,
            degenerate: minmax(&map01).1 || minmax(&raw).1,
            map01,
            grid,
            raw_min: lo,
            raw_max: hi,
        })
    }
}
