//! The interactive REPL (being written).

use clap::Args;
use std::path::PathBuf;

use crate::error::{CliError, CliResult};

/// Options of the REPL, which `dexar` runs when no subcommand is given.
#[derive(Debug, Args)]
pub struct ReplArgs {
    /// Checkpoint directory (llava-hf layout) or Hugging Face id; default: the bundled model.
    #[arg(long, value_name = "DIR|HF-ID")]
    pub model: Option<String>,
    /// Image to open; default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
}

pub fn run(_args: &ReplArgs) -> CliResult<()> {
    Err(CliError::internal(
        "the REPL is not available yet; use `dexar explain`",
    ))
}
