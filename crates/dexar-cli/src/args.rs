//! Options several subcommands share, declared once and flattened into each
//! (clap's `#[command(flatten)]`), so they have the same names, defaults and
//! help everywhere.

use clap::Args;
use dexar_core::LayerSelection;
use dexar_model::{LoadOptions, ModelSpec};
use dexar_plugin::host::PluginRegistry;
use dexar_render::term::{detect_terminal, CellSize, Graphics, Terminal};
use dexar_session::{Destination, LoadedModel, ModelIdentity, Recorder, TraceDtype};
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

/// `--model`, `--dtype`, `--device`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: `bundled` (the demo model compiled into dexar; also
    /// `toy`), a checkpoint directory as the Hugging Face Hub publishes it
    /// (LLaVA-1.5, BakLLaVA, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM, PaliGemma), or a Hugging Face
    /// id ORG/NAME[@REVISION] found in the local Hugging Face cache
    /// (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub); dexar never
    /// downloads. An existing directory always wins.
    #[arg(long, value_name = "SPEC", default_value = "bundled")]
    pub model: ModelSpec,
    /// Weights precision: f32, f16 or bf16 (gradients are always accumulated in f32).
    #[arg(long, value_name = "DTYPE", default_value = "f32")]
    pub dtype: String,
    /// cpu, or cuda / cuda:N (needs a build with --features cuda).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// Qwen-VL models: resize images to at most N pixels (the processor's
    /// max_pixels), bounding the number of image tokens and the cost.
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,
}

impl ModelArgs {
    pub fn load_options(&self) -> CliResult<LoadOptions> {
        let flag = |name: &'static str| {
            move |e: dexar_model::ModelError| CliError::usage(format!("{name}: {e}"))
        };
        Ok(LoadOptions {
            dtype: dexar_model::parse_dtype(&self.dtype).map_err(flag("--dtype"))?,
            device: dexar_model::parse_device(&self.device).map_err(flag("--device"))?,
            max_pixels: self.max_pixels,
        })
    }

    /// Loads the model.
    pub fn open(&self) -> CliResult<LoadedModel> {
        let opts = self.load_options()?;
        Ok(dexar_session::open_model(&self.model, &opts)?)
    }
}

/// `--layer-index`.
#[derive(Debug, Clone, Copy, Args)]
pub struct LayerArgs {
    /// First decoder layer the maps use; negative counts from the end. The
    /// default -10 uses the last ten layers (every layer of a model with ten
    /// or fewer); other values past either end are clamped to the model's
    /// layers, with a warning.
    #[arg(
        long,
        value_name = "K",
        default_value_t = LayerSelection::DEFAULT_INDEX,
        allow_negative_numbers = true
    )]
    pub layer_index: i64,
}

impl LayerArgs {
    pub fn selection(&self) -> LayerSelection {
        LayerSelection::new(self.layer_index)
    }

    /// The layers of a `num_layers`-layer model, with a warning when the
    /// index had to be clamped.
    pub fn layers(&self, num_layers: usize) -> std::ops::Range<usize> {
        let selection = self.selection();
        if let Some(note) = selection.clamp_note(num_layers) {
            crate::stdio::warn(&format!("--layer-index: {note}"));
        }
        selection.layers(num_layers)
    }
}

/// `--topk`.
#[derive(Debug, Clone, Copy, Args)]
pub struct TopkArgs {
    /// k of DEX-AR's top-k head scores (1 as in the paper).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub topk: usize,
}

impl TopkArgs {
    pub fn validated(&self) -> CliResult<usize> {
        if self.topk == 0 {
            return Err(CliError::usage("--topk must be at least 1"));
        }
        Ok(self.topk)
    }
}

/// `--plugin`, `--allow-insecure-plugins`.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// Load an attribution plugin (a shared library; repeatable); its
    /// strategy is then available by name. The directories of the config
    /// file's `plugin_dirs` and of DEXAR_PLUGIN_PATH (colon-separated) are
    /// loaded too.
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// Load plugins even if their file or directory is writable by group or others.
    #[arg(long)]
    pub allow_insecure_plugins: bool,
}

impl PluginArgs {
    pub fn load(&self) -> CliResult<PluginRegistry> {
        crate::strategies::load_plugins(&self.plugins, self.allow_insecure_plugins)
    }
}

/// `--max-tokens`, `--temperature`, `--top-p`, `--seed`.
#[derive(Debug, Clone, Copy, Args)]
pub struct SamplingArgs {
    /// Most tokens per answer.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub temperature: f64,
    /// Nucleus sampling mass, in (0, 1].
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub top_p: f64,
    /// Random seed for sampling.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn validate(&self) -> CliResult<()> {
        if self.max_tokens == 0 {
            return Err(CliError::usage("--max-tokens must be at least 1"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(CliError::usage("--temperature must be a number >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(CliError::usage("--top-p must be in (0, 1]"));
        }
        Ok(())
    }
}

/// `--no-record`, `--trace-dtype` (the REPL's `--session FILE` names the
/// file to record to; the TUI's opens one).
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Do not record the conversation. By default every conversation is
    /// recorded to <data dir>/dexar/sessions (`dexar sessions` lists them).
    #[arg(long)]
    pub no_record: bool,
    /// How traces are recorded: auto (f32, or f16 where one token's trace
    /// would exceed 1 MiB, as for 7B models), f32 (exact) or f16 (half the
    /// size; see docs/SESSION_FORMAT.md for the change in the maps).
    #[arg(long, value_name = "DTYPE", default_value = "auto")]
    pub trace_dtype: TraceDtype,
}

impl RecordArgs {
    /// The recorder for `model` (into the new file `file`, else the
    /// sessions directory), or none with the reason why (a warning: the
    /// conversation goes on unrecorded). A `--session` file that exists is
    /// refused.
    pub fn recorder(
        &self,
        file: Option<&Path>,
        model: &ModelIdentity,
    ) -> CliResult<(Option<Recorder>, Option<String>)> {
        if self.no_record {
            return Ok((None, None));
        }
        let destination = match file {
            Some(file) => Destination::File(file.to_path_buf()),
            None => match dexar_session::default_sessions_dir() {
                Some(dir) => Destination::Directory(dir),
                None => {
                    return Ok((
                        None,
                        Some("no data directory: this conversation is not recorded (--session FILE names a file)".into()),
                    ))
                }
            },
        };
        match Recorder::new(destination.clone(), model, self.trace_dtype) {
            Ok(r) => Ok((Some(r), None)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let file = file.unwrap_or(Path::new(""));
                Err(CliError::usage(format!(
                    "--session {}: the file exists; name a new file (/load opens a session)",
                    file.display()
                )))
            }
            Err(e) => {
                let place = match &destination {
                    Destination::Directory(d) | Destination::File(d) => d.display().to_string(),
                };
                Ok((
                    None,
                    Some(format!(
                        "cannot record to {place} ({e}): this conversation is not recorded"
                    )),
                ))
            }
        }
    }
}

/// `--graphics`, `--size`.
#[derive(Debug, Clone, Args)]
pub struct GraphicsArgs {
    /// Inline pictures: auto (probe the terminal), kitty, sixel, iterm,
    /// blocks (24-bit half-blocks), blocks256 or ascii. Default:
    /// DEXAR_GRAPHICS, else the config file's `graphics`, else auto.
    #[arg(long, value_name = "MODE")]
    pub graphics: Option<String>,
    /// Largest inline picture in character cells, e.g. 60x30 (default: the
    /// terminal's width by a third of its height).
    #[arg(long, value_name = "COLSxROWS")]
    pub size: Option<String>,
}

impl GraphicsArgs {
    /// `--graphics`, else `DEXAR_GRAPHICS`, else the config file, else what
    /// the terminal supports. The query runs before anything reads stdin,
    /// which would otherwise eat the terminal's reply.
    pub fn terminal(&self) -> CliResult<Terminal> {
        let env_set = std::env::var("DEXAR_GRAPHICS").is_ok_and(|v| !v.trim().is_empty());
        let (name, source) = match &self.graphics {
            Some(name) => (Some(name.clone()), "--graphics"),
            None if env_set => (None, "DEXAR_GRAPHICS"),
            None => (crate::config::load()?.graphics, "config graphics"),
        };
        match name.as_deref().map(str::trim) {
            None | Some("auto") => Ok(detect_terminal()),
            Some(name) => name
                .parse::<Graphics>()
                .map(Terminal::with_mode)
                .map_err(|_| {
                    CliError::usage(format!(
                        "{source}: unknown mode `{name}`; use auto, {}",
                        Graphics::NAMES.join(", ")
                    ))
                }),
        }
    }

    /// `--size` as cells, both at least 1.
    pub fn size(&self) -> CliResult<Option<CellSize>> {
        self.size.as_deref().map(parse_size).transpose()
    }
}

/// `COLSxROWS`, both at least 1.
fn parse_size(s: &str) -> CliResult<CellSize> {
    let bad = || CliError::usage(format!("--size: `{s}` is not COLSxROWS (e.g. 60x30)"));
    let (c, r) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let cols = c.trim().parse::<u16>().map_err(|_| bad())?;
    let rows = r.trim().parse::<u16>().map_err(|_| bad())?;
    if cols == 0 || rows == 0 {
        return Err(bad());
    }
    Ok(CellSize::new(cols, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("60x30").unwrap(), CellSize::new(60, 30));
        assert_eq!(parse_size(" 8X4 ").unwrap(), CellSize::new(8, 4));
        for bad in ["60", "0x5", "ax3", "70000x2"] {
            assert_eq!(parse_size(bad).unwrap_err().code, 2, "{bad}");
        }
    }

    #[test]
    fn sampling_and_topk_are_checked() {
        let ok = SamplingArgs {
            max_tokens: 4,
            temperature: 0.7,
            top_p: 0.9,
            seed: 1,
        };
        assert!(ok.validate().is_ok());
        for (bad, flag) in [
            (
                SamplingArgs {
                    max_tokens: 0,
                    ..ok
                },
                "--max-tokens",
            ),
            (
                SamplingArgs {
                    temperature: f64::INFINITY,
                    ..ok
                },
                "--temperature",
            ),
            (
                SamplingArgs {
                    temperature: -1.0,
                    ..ok
                },
                "--temperature",
            ),
            (SamplingArgs { top_p: 0.0, ..ok }, "--top-p"),
            (SamplingArgs { top_p: 1.5, ..ok }, "--top-p"),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.code == 2 && e.message.contains(flag), "{}", e.message);
        }
        assert!(TopkArgs { topk: 0 }.validated().is_err());
        assert_eq!(TopkArgs { topk: 3 }.validated().unwrap(), 3);
        assert_eq!(LayerArgs { layer_index: -2 }.selection().layers(4), 2..4);
    }
}
