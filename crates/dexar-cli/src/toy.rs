//! `dexar toy`: the bundled demo model's world: train it, export it, check its
//! answers, write a labelled data set of the shapes world.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::args::ModelArgs;
use crate::error::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum ToyCommand {
    /// Train the demo VLM from a seed on the synthetic shapes world (CPU).
    Train(TrainArgs),
    /// Write the bundled model as a llava-hf checkpoint directory.
    Export {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Ask a model every question of held-out scenes and score its answers.
    Accuracy {
        #[command(flatten)]
        model: ModelArgs,
        /// Number of held-out scenes.
        #[arg(long, value_name = "N", default_value_t = 100)]
        n: u64,
        /// Scene stream (the default is held out from training).
        #[arg(long, value_name = "N", default_value_t = dexar_toy::HELD_OUT_SEED)]
        seed: u64,
    },
    /// Write a labelled data set (images, masks, data.jsonl) usable by `dexar eval --data DIR`.
    Data {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Number of scenes.
        #[arg(long, value_name = "N", default_value_t = 100)]
        n: u64,
        #[arg(long, value_name = "N", default_value_t = dexar_toy::HELD_OUT_SEED)]
        seed: u64,
    },
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
        ToyCommand::Export { dir } => {
            dexar_toy::export_bundled(dir)
                .map_err(|e| CliError::usage(format!("{}: cannot write ({e})", dir.display())))?;
            println!("wrote the bundled model to {}", dir.display());
            Ok(())
        }
        ToyCommand::Accuracy { model, n, seed } => {
            let model = model.open()?;
            let acc = dexar_toy::answer_accuracy(&model.ckpt, *n, *seed).map_err(toy_error)?;
            print!("{acc}");
            Ok(())
        }
        ToyCommand::Data { dir, n, seed } => {
            let summary = dexar_toy::write_dataset(dir, *n, *seed).map_err(toy_error)?;
            println!("wrote {summary:?} to {}", dir.display());
            Ok(())
        }
    }
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
            eprintln!(
                "step {}/{} loss {:.4} lr {:.2e} {:.0?}",
                p.step, p.steps, p.smoothed_loss, p.lr, p.elapsed
            );
        }
    })
    .map_err(toy_error)?;
    bar.finish_and_clear();
    println!(
        "trained {} steps in {:.1?}: final loss {:.4}, {} parameters, {} bytes of weights, written to {}",
        report.steps,
        report.elapsed,
        report.final_loss,
        report.parameters,
        report.weights_bytes,
        report.out_dir.display()
    );
    Ok(())
}
