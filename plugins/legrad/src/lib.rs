//! legrad: a LeGrad-style attribution strategy as a dexar plugin.
//!
//! The smallest useful template: copy this crate, rename it, change the maths.
//!
//! Map: for every grid cell j, the mean over all layer slots l and heads i of
//! `ReLU(g^{l,i}[j])`, the rectified query-row gradient (LeGrad: gradients of
//! the attention map, rectified and averaged; no head or token filtering).
//! Token weight: 1, so the sentence map is the plain sum of token maps.
//!
//! Build: `cargo build -p legrad`, then load `target/debug/liblegrad.so`
//! (`/plugin load PATH` in the REPL, or put it in a `DEXAR_PLUGIN_PATH` dir).

use dexar_plugin::sdk::{PluginStrategy, TraceView};

/// The plugin type: created once by the host (via `Default`), shared by all calls.
#[derive(Default)]
pub struct Legrad;

impl PluginStrategy for Legrad {
    const NAME: &'static str = "legrad";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HELP: &'static str =
        "LeGrad-style: mean over heads and layers of rectified image gradients, no filtering";

    fn token_map(&self, trace: &TraceView<'_>, map: &mut [f32]) -> Result<f32, String> {
        // `map` has one zeroed cell per grid cell of every image region (one
        // region for most models; tiles and a global view for SmolVLM);
        // `cell_positions` lists their positions in the same order.
        let cells = trace.cell_positions();
        for slot in 0..trace.num_layers() {
            for head in 0..trace.num_heads() {
                let grads = trace.grad_row(slot, head);
                for (cell, g) in map.iter_mut().zip(cells.clone().map(|j| grads.get(j))) {
                    *cell += g.max(0.0);
                }
            }
        }
        let count = trace.num_layers() * trace.num_heads();
        if count > 0 {
            map.iter_mut().for_each(|cell| *cell /= count as f32);
        }
        // The token weight: LeGrad has no notion of it.
        Ok(1.0)
    }
}

// Generates `dexar_plugin_abi_version`, `dexar_plugin_abi_minor` and `dexar_plugin_entry`, with panics
// caught and reported to the host as errors.
dexar_plugin::export_plugin!(Legrad);
