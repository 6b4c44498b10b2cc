//! Attribution strategies: DEX-AR (filtered and unfiltered) and the baselines
//! of DEXAR.md's Evaluation section. Every strategy maps one [`StepTrace`] to a
//! [`TokenMap`] and aggregates token maps into a sentence map.

use crate::maps::{minmax, weighted_sum, TokenMap};
use crate::trace::{StepTrace, TraceError};

/// Names of the built-in strategies, in display order.
pub const BUILTIN_NAMES: [&str; 4] = ["dexar", "dexar-unfiltered", "raw-attention", "grad-x-attn"];

#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error("invalid step trace: {0}")]
    InvalidTrace(#[from] TraceError),
    #[error("strategy `{strategy}` failed: {message}")]
    Failed { strategy: String, message: String },
    #[error("strategy `{strategy}` produced a non-finite value (NaN or infinity)")]
    NonFinite { strategy: String },
}

/// An attribution strategy. Built-ins and plugins both implement this.
pub trait Strategy: Send + Sync {
    /// Unique name used on the command line (`--strategy NAME`).
    fn name(&self) -> &str;
    /// One-line description.
    fn help(&self) -> &str;
    /// The map of one generated token.
    fn token_map(&self, trace: &StepTrace) -> Result<TokenMap, StrategyError>;
    /// The sentence-level map: `minmax(Σ_t weight_t · raw_t)`, min-max normalised.
    fn sentence_map(&self, maps: &[TokenMap]) -> Result<Vec<f32>, StrategyError> {
        Ok(weighted_sentence_map(maps))
    }
}

/// `minmax(Σ_t weight_t · raw_t)`; empty when there is nothing to sum.
pub fn weighted_sentence_map(maps: &[TokenMap]) -> Vec<f32> {
    minmax(&weighted_sum(maps)).0
}

fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// Mean of the `k` largest values (k clamped to `1..=len`); 0 for no values.
fn topk_mean(values: impl Iterator<Item = f32>, k: usize) -> f32 {
    let mut v: Vec<f32> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    let k = k.clamp(1, v.len());
    if k == 1 {
        return v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    }
    v.sort_unstable_by(|a, b| b.total_cmp(a));
    v[..k].iter().sum::<f32>() / k as f32
}

/// Per-head DEX-AR scores of one step, row-major `[layers, heads]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    pub layers: Vec<usize>,
    pub num_heads: usize,
    /// `S_v = topk-mean of ReLU(g[V])`.
    pub visual: Vec<f32>,
    /// `S_text = topk-mean of ReLU(g[C ∪ Y])`.
    pub text: Vec<f32>,
    /// `w = ReLU(S_v − S_text)`.
    pub weights: Vec<f32>,
}

impl HeadScores {
    pub fn compute(trace: &StepTrace, topk: usize) -> Self {
        let heads = trace.num_heads;
        let n = trace.layers.len() * heads;
        let (mut visual, mut text, mut weights) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        // V is every region's span together (S_v is the max over all image
        // positions of all regions); C ∪ Y is everything else.
        let image: Vec<bool> = (0..trace.num_positions)
            .map(|j| trace.is_image_position(j))
            .collect();
        fn part<'a>(g: &'a [f32], image: &'a [bool], want: bool) -> impl Iterator<Item = f32> + 'a {
            g.iter()
                .zip(image)
                .filter(move |(_, &is)| is == want)
                .map(|(&x, _)| relu(x))
        }
        for slot in 0..trace.layers.len() {
            for head in 0..heads {
                let g = trace.grad_row(slot, head);
                let s_v = topk_mean(part(g, &image, true), topk);
                let s_text = topk_mean(part(g, &image, false), topk);
                visual.push(s_v);
                text.push(s_text);
                weights.push(relu(s_v - s_text));
            }
        }
        Self {
            layers: trace.layers.clone(),
            num_heads: heads,
            visual,
            text,
            weights,
        }
    }

    /// Token weight `δ_t = ReLU(max S_v − max S_text)` over all layers and heads.
    pub fn token_weight(&self) -> f32 {
        let max = |v: &[f32]| v.iter().copied().fold(0.0f32, f32::max);
        relu(max(&self.visual) - max(&self.text))
    }
}

fn check_finite(name: &str, map: TokenMap) -> Result<TokenMap, StrategyError> {
    if map.raw.iter().all(|v| v.is_finite()) && map.weight.is_finite() {
        Ok(map)
    } else {
        Err(StrategyError::NonFinite {
            strategy: name.to_string(),
        })
    }
}

/// Sums `f(slot, head, j)` over layers and heads for every grid cell position
/// j of every region (region after region).
fn sum_over_heads(trace: &StepTrace, mut f: impl FnMut(usize, usize, usize) -> f32) -> Vec<f32> {
    let cells = trace.cell_positions();
    let mut map = vec![0f32; trace.num_cells()];
    for slot in 0..trace.layers.len() {
        for head in 0..trace.num_heads {
            for (cell, j) in map.iter_mut().zip(cells.clone()) {
                *cell += f(slot, head, j);
            }
        }
    }
    map
}

/// DEX-AR: per-head dynamic filtering (`filtered`) or the plain sum (`dexar-unfiltered`).
#[derive(Debug, Clone)]
pub struct DexarStrategy {
    pub filtered: bool,
    /// k of the top-k head score (1 is the paper's default).
    pub topk: usize,
}

impl Strategy for DexarStrategy {
    fn name(&self) -> &str {
        if self.filtered {
            "dexar"
        } else {
            "dexar-unfiltered"
        }
    }

    fn help(&self) -> &str {
        if self.filtered {
            "DEX-AR: rectified query-row gradients, heads weighted by visual minus text score, tokens by δ_t"
        } else {
            "DEX-AR without head or token filtering: plain sum of rectified image gradients"
        }
    }

    fn token_map(&self, trace: &StepTrace) -> Result<TokenMap, StrategyError> {
        trace.validate()?;
        let map = if self.filtered {
            let scores = HeadScores::compute(trace, self.topk);
            let raw = sum_over_heads(trace, |s, i, j| {
                scores.weights[s * trace.num_heads + i] * relu(trace.grad_row(s, i)[j])
            });
            TokenMap::from_cells(&trace.regions, raw, scores.token_weight())
        } else {
            let raw = sum_over_heads(trace, |s, i, j| relu(trace.grad_row(s, i)[j]));
            TokenMap::from_cells(&trace.regions, raw, 1.0)
        };
        check_finite(self.name(), map)
    }
}

/// Raw attention: mean over chosen layers and heads of `A[q, V]`.
#[derive(Debug, Clone, Default)]
pub struct RawAttentionStrategy;

impl Strategy for RawAttentionStrategy {
    fn name(&self) -> &str {
        "raw-attention"
    }

    fn help(&self) -> &str {
        "Baseline: attention of the query to each patch, averaged over heads and layers"
    }

    fn token_map(&self, trace: &StepTrace) -> Result<TokenMap, StrategyError> {
        trace.validate()?;
        let count = (trace.layers.len() * trace.num_heads).max(1) as f32;
        let raw = sum_over_heads(trace, |s, i, j| trace.attn_row(s, i)[j])
            .into_iter()
            .map(|v| v / count)
            .collect();
        check_finite(self.name(), TokenMap::from_cells(&trace.regions, raw, 1.0))
    }
}

/// Gradient x attention: `Σ ReLU(g ⊙ A)` over heads and layers.
#[derive(Debug, Clone, Default)]
pub struct GradXAttnStrategy;

impl Strategy for GradXAttnStrategy {
    fn name(&self) -> &str {
        "grad-x-attn"
    }

    fn help(&self) -> &str {
        "Baseline: rectified gradient times attention, summed over heads and layers"
    }

    fn token_map(&self, trace: &StepTrace) -> Result<TokenMap, StrategyError> {
        trace.validate()?;
        let raw = sum_over_heads(trace, |s, i, j| {
            relu(trace.grad_row(s, i)[j] * trace.attn_row(s, i)[j])
        });
        check_finite(self.name(), TokenMap::from_cells(&trace.regions, raw, 1.0))
    }
}

/// A built-in strategy by name; `topk` applies to the DEX-AR variants.
pub fn builtin_strategy(name: &str, topk: usize) -> Option<Box<dyn Strategy>> {
    Some(match name {
        "dexar" => Box::new(DexarStrategy {
            filtered: true,
            topk,
        }),
        "dexar-unfiltered" => Box::new(DexarStrategy {
            filtered: false,
            topk,
        }),
        "raw-attention" => Box::new(RawAttentionStrategy),
        "grad-x-attn" => Box::new(GradXAttnStrategy),
        _ => return None,
    })
}
