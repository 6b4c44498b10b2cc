//! `dexar toy`: the bundled demo model's world: train it, export it, check its
//! answers, write a labelled data set of the shapes world.

use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use crate::args::ModelArgs;
use crate::error::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum ToyCommand {
    /// Train the demo VLM from a seed on the synthetic shapes world (CPU).
    Train(TrainArgs),
    /// Write the bundled model as a llava-hf checkpoint directory.
    Export {
        /// Output directory (created if missing; must be empty unless --force).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Replace the checkpoint files of a non-empty directory (its weights,
        /// config, tokenizer and preprocessor config; other files stay).
        #[arg(long)]
        force: bool,
    },
    /// Ask a model every question of held-out scenes and score its answers.
    Accuracy {
        #[command(flatten)]
        model: ModelArgs,
        /// Number of held-out scenes (at most 100000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = scene_count())]
        n: u64,
        /// Scene stream (the default is held out from training).
        #[arg(long, value_name = "N", default_value_t = dexar_toy::HELD_OUT_SEED)]
        seed: u64,
    },
    /// Write a labelled data set (images, masks, data.jsonl) usable by `dexar eval --data DIR`.
    Data {
        /// Output directory (created if missing; must be empty unless --force).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Number of scenes (at most 100000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = scene_count())]
        n: u64,
        #[arg(long, value_name = "N", default_value_t = dexar_toy::HELD_OUT_SEED)]
        seed: u64,
        /// Replace the data set of a non-empty directory (its data.jsonl,
        /// images/ and masks/; other files stay).
        #[arg(long)]
        force: bool,
    },
}

/// `--n`: 1 to [`dexar_toy::MAX_SCENES`].
fn scene_count() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=dexar_toy::MAX_SCENES)
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Optimiser steps of the answer stage.
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Steps of the vision warm-up stage, the patch probe alone (0 skips it).
    #[arg(long, value_name = "N")]
    pub vision_steps: Option<usize>,
    /// Scenes per step.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Weight of the patch probe (colour and shape words under each image
    /// token, read through the logit lens) beside the answers; 0 switches it off.
    #[arg(long, value_name = "W")]
    pub probe_weight: Option<f64>,
    /// Weight of the logit-lens loss (every decoder layer but the last also
    /// predicts the answers); 0 switches it off.
    #[arg(long, value_name = "W")]
    pub lens_weight: Option<f64>,
    /// Seed of the weights and of the training scenes.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Output directory for the checkpoint.
    #[arg(long, value_name = "DIR", default_value = "toy-model")]
    pub out: PathBuf,
}

pub fn run(cmd: &ToyCommand) -> CliResult<()> {
    match cmd {
        ToyCommand::Train(args) => train(args),
        ToyCommand::Export { dir, force } => {
            // A sharded index left beside the new weights would win over them.
            let mut parts = dexar_toy::CHECKPOINT_FILES.to_vec();
            parts.push("model.safetensors.index.json");
            write_fresh(dir, *force, &parts, dexar_toy::export_bundled)
                .map_err(|e| fresh_error(dir, e, |e| e.to_string()))?;
            outln!("wrote the bundled model to {}", dir.display())
        }
        ToyCommand::Accuracy { model, n, seed } => {
            let model = model.open()?;
            let acc = dexar_toy::answer_accuracy(&model.ckpt, *n, *seed).map_err(toy_error)?;
            out!("{acc}")
        }
        ToyCommand::Data {
            dir,
            n,
            seed,
            force,
        } => {
            let parts = ["images", "masks", dexar_toy::DATA_FILE];
            let mut summary = None;
            write_fresh(dir, *force, &parts, |tmp| {
                summary = Some(dexar_toy::write_dataset(tmp, *n, *seed)?);
                Ok(())
            })
            .map_err(|e| match e {
                FreshError::Fill(e) => toy_error(e),
                other => fresh_error(dir, other, |e| e.to_string()),
            })?;
            match summary {
                Some(summary) => outln!("wrote {summary:?} to {}", dir.display()),
                None => Ok(()),
            }
        }
    }
}

/// Why [`write_fresh`] failed.
#[derive(Debug)]
enum FreshError<E> {
    /// The directory holds files and `--force` was not given.
    NotEmpty,
    Io(std::io::Error),
    Fill(E),
}

impl<E> From<std::io::Error> for FreshError<E> {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn fresh_error<E>(dir: &Path, e: FreshError<E>, fill: impl Fn(E) -> String) -> CliError {
    CliError::usage(match e {
        FreshError::NotEmpty => format!(
            "{} is not empty; choose a new directory, or pass --force to replace what it holds",
            dir.display()
        ),
        FreshError::Io(e) => format!("{}: cannot write ({e})", dir.display()),
        FreshError::Fill(e) => format!("{}: cannot write ({})", dir.display(), fill(e)),
    })
}

/// Writes `parts` (files or directories) of `dir` all at once: `fill`
/// writes them into a temporary directory beside `dir`, which then becomes
/// `dir` (or, with `force`, whose parts replace those of a non-empty `dir`).
/// A failure half-way (a full disk) leaves `dir` as it was.
fn write_fresh<E>(
    dir: &Path,
    force: bool,
    parts: &[&str],
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), FreshError<E>> {
    let existing = match std::fs::read_dir(dir) {
        Ok(mut entries) => Some(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if existing == Some(true) && !force {
        return Err(FreshError::NotEmpty);
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".dexar-new-")
        .tempdir_in(parent)?;
    fill(tmp.path()).map_err(FreshError::Fill)?;
    if existing != Some(true) {
        if existing == Some(false) {
            std::fs::remove_dir(dir)?;
        }
        std::fs::rename(tmp.path(), dir)?;
        // Already moved: nothing left for the guard to delete.
        let _ = tmp.keep();
        return Ok(());
    }
    for part in parts {
        let (old, new) = (dir.join(part), tmp.path().join(part));
        match std::fs::symlink_metadata(&old) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&old)?,
            Ok(_) => std::fs::remove_file(&old)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if new.exists() {
            std::fs::rename(&new, &old)?;
        }
    }
    Ok(())
}

fn toy_error(e: dexar_toy::ToyError) -> CliError {
    match e {
        dexar_toy::ToyError::Candle(_) => CliError::internal(e.to_string()),
        _ => CliError::usage(e.to_string()),
    }
}

fn train(args: &TrainArgs) -> CliResult<()> {
    let mut opts = dexar_toy::TrainOptions {
        out_dir: args.out.clone(),
        ..Default::default()
    };
    if let Some(v) = args.steps {
        opts.steps = v;
    }
    if let Some(v) = args.vision_steps {
        opts.vision_steps = v;
    }
    if let Some(v) = args.batch_size {
        opts.batch_size = v;
    }
    if let Some(v) = args.lr {
        opts.lr = v;
    }
    if let Some(v) = args.seed {
        opts.seed = v;
    }
    if let Some(v) = args.probe_weight {
        opts.probe_weight = v;
    }
    if let Some(v) = args.lens_weight {
        opts.lens_weight = v;
    }
    crate::explain::prepare_out_dir(&opts.out_dir)?;
    // candle's per-op thread pool busy-waits; on a small shared machine one
    // thread per op trains several times faster. An explicit setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let bar = crate::progress::bar((opts.vision_steps + opts.steps) as u64, "steps");
    let quiet = bar.is_hidden();
    let report = dexar_toy::train(&opts, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.4} lr {:.2e}", p.smoothed_loss, p.lr));
        if quiet && (p.step % 100 == 0 || p.step == p.steps) {
            crate::stdio::err_line(&format!(
                "step {}/{} loss {:.4} lr {:.2e} {:.0?}",
                p.step, p.steps, p.smoothed_loss, p.lr, p.elapsed
            ));
        }
    })
    .map_err(toy_error)?;
    bar.finish_and_clear();
    outln!(
        "trained {} steps in {:.1?}: final loss {:.4}, {} parameters, {} bytes of weights, written to {}",
        report.steps,
        report.elapsed,
        report.final_loss,
        report.parameters,
        report.weights_bytes,
        report.out_dir.display()
    )
}
