//! dexar-top3: DEX-AR (shared/DEXAR.md) with top-k = 3 head scores, as a plugin.
//!
//! For every layer slot l and head i, with `G = ReLU(g^{l,i})`:
//! - `S_v` = mean of the 3 largest values of G over the image span (V, a CLS
//!   token included, as in dexar-core); `S_text` = the same over every other
//!   position (C ∪ Y);
//! - head weight `w = ReLU(S_v − S_text)`;
//! - map `M[j] = Σ_{l,i} w · G[j]` over the grid cells j;
//! - token weight `δ = ReLU(max_{l,i} S_v − max_{l,i} S_text)`.
//!
//! It must agree with the built-in `dexar` strategy run with `topk = 3`; the
//! dexar-plugin tests check exactly that. The sentence map is the host default,
//! `minmax(Σ_t δ_t · M_t)`.

use dexar_plugin::sdk::{PluginStrategy, TraceView};

/// How many of the largest rectified gradients make a head score.
const TOP_K: usize = 3;

#[derive(Default)]
pub struct DexarTop3;

/// Mean of the `k` largest values (fewer if there are fewer); 0 for none.
fn topk_mean(values: impl Iterator<Item = f32>, k: usize) -> f32 {
    let mut v: Vec<f32> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    let k = k.min(v.len());
    v.sort_unstable_by(|a, b| b.total_cmp(a));
    v[..k].iter().sum::<f32>() / k as f32
}

fn relu(x: f32) -> f32 {
    x.max(0.0)
}

impl PluginStrategy for DexarTop3 {
    const NAME: &'static str = "dexar-top3";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HELP: &'static str =
        "DEX-AR with head scores from the mean of the 3 largest rectified gradients";

    fn token_map(&self, trace: &TraceView<'_>, map: &mut [f32]) -> Result<f32, String> {
        let cells = trace.cell_positions();
        let (mut max_visual, mut max_text) = (0f32, 0f32);
        for slot in 0..trace.num_layers() {
            for head in 0..trace.num_heads() {
                let g = trace.grad_row(slot, head);
                let s_v = topk_mean(trace.image_positions().map(|j| relu(g.get(j))), TOP_K);
                let s_text = topk_mean(trace.text_positions().map(|j| relu(g.get(j))), TOP_K);
                max_visual = max_visual.max(s_v);
                max_text = max_text.max(s_text);
                // Heads that look at text more than at the image get weight 0.
                let w = relu(s_v - s_text);
                if w > 0.0 {
                    for (cell, value) in map.iter_mut().zip(cells.clone().map(|j| g.get(j))) {
                        *cell += w * relu(value);
                    }
                }
            }
        }
        Ok(relu(max_visual - max_text))
    }
}

dexar_plugin::export_plugin!(DexarTop3);
