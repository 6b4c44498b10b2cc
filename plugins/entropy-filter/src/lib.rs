//! entropy-filter: a DEX-AR-like strategy that weights heads by how focused
//! their attention is, instead of by gradient scores.
//!
//! For every layer slot l and head i, with `a = A^{l,i}[q, :]` renormalised to
//! sum 1 over the P key positions:
//! - normalised entropy `h = −Σ_j a_j ln a_j / ln P` (0: all attention on one
//!   position, 1: spread evenly; taken as 0 when P = 1);
//! - head weight `w = 1 − h`: focused heads count, diffuse ones fade out;
//! - map `M[j] = Σ_{l,i} w · ReLU(g^{l,i}[j])` over the grid cells j;
//! - token weight: the mean over heads of the attention mass on the image span,
//!   `Σ_{j ∈ V} a_j`, so tokens produced while looking at the image dominate
//!   the sentence map (host default aggregate, `minmax(Σ_t weight_t · M_t)`).
//!
//! A head whose attention row sums to 0 (or less) gets weight 0 and mass 0.

use dexar_plugin::sdk::{PluginStrategy, Row, TraceView};

#[derive(Default)]
pub struct EntropyFilter;

/// `(1 − normalised entropy, attention mass on the image)` of one head.
fn head_focus(attn: Row<'_>, image: impl Iterator<Item = usize>) -> (f32, f32) {
    let total: f64 = attn.iter().map(|a| a.max(0.0) as f64).sum();
    if total <= 0.0 {
        return (0.0, 0.0);
    }
    let entropy: f64 = attn
        .iter()
        .map(|a| a.max(0.0) as f64 / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    let max_entropy = (attn.len() as f64).ln();
    let normalised = if max_entropy > 0.0 {
        entropy / max_entropy
    } else {
        0.0
    };
    let mass: f64 = image.map(|j| attn.get(j).max(0.0) as f64).sum::<f64>() / total;
    ((1.0 - normalised).clamp(0.0, 1.0) as f32, mass as f32)
}

impl PluginStrategy for EntropyFilter {
    const NAME: &'static str = "entropy-filter";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HELP: &'static str =
        "Rectified image gradients, heads weighted by 1 - normalised attention entropy";

    fn token_map(&self, trace: &TraceView<'_>, map: &mut [f32]) -> Result<f32, String> {
        let cells = trace.cell_positions();
        let mut mass_sum = 0f32;
        for slot in 0..trace.num_layers() {
            for head in 0..trace.num_heads() {
                let (w, mass) = head_focus(trace.attn_row(slot, head), trace.image_positions());
                mass_sum += mass;
                let g = trace.grad_row(slot, head);
                for (cell, value) in map.iter_mut().zip(cells.clone().map(|j| g.get(j))) {
                    *cell += w * value.max(0.0);
                }
            }
        }
        let heads = trace.num_layers() * trace.num_heads();
        Ok(if heads > 0 {
            mass_sum / heads as f32
        } else {
            0.0
        })
    }
}

dexar_plugin::export_plugin!(EntropyFilter);
