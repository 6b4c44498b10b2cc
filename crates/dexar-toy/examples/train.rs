//! Trains the demo model with every training option exposed (`dexar toy
//! train` keeps the usual few) and scores it on held-out scenes:
//!
//! `cargo run --release -p dexar-toy --example train -- [--out DIR]
//! [--steps N] [--vision-steps N] [--batch N] [--lr X] [--probe W] [--lens W] [--embed-std X]
//! [--vision-lr-scale X] [--warmup N] [--wd X] [--seed N] [--vision H,I,L,HEADS]
//! [--text H,I,L,HEADS] [--probe-linear] [--probe-input-only] [--cover-labels]
//! [--probe-smoothing EPS] [--probe-z W] [--probe-pointing W]
//! [--min-objects N] [--max-objects N] [--eval N] [--eval-only]`
//!
//! Defaults are [`TrainOptions::default`]; `--eval N` scores N held-out
//! scenes afterwards (200 unless told), `--eval-only` just scores `--out`.

use std::path::PathBuf;

use dexar_model::{Checkpoint, LoadOptions};
use dexar_toy::{answer_accuracy_with, train, TrainOptions, HELD_OUT_SEED};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // candle's element-wise thread pool spin-waits between the many small
    // ops of this model; on 2 shared cores one thread is several times faster.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let mut opts = TrainOptions::default();
    let mut eval_scenes = 200u64;
    let mut eval_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => opts.steps = value()?.parse()?,
            "--vision-steps" => opts.vision_steps = value()?.parse()?,
            "--batch" => opts.batch_size = value()?.parse()?,
            "--lr" => opts.lr = value()?.parse()?,
            "--probe" => opts.probe_weight = value()?.parse()?,
            "--lens" => opts.lens_weight = value()?.parse()?,
            "--embed-std" => opts.embedding_std = value()?.parse()?,
            "--vision-lr-scale" => opts.vision_lr_scale = value()?.parse()?,
            "--warmup" => opts.warmup_steps = value()?.parse()?,
            "--probe-linear" => opts.probe_readout = dexar_toy::ProbeReadout::Linear,
            "--probe-input-only" => opts.probe_decoder_layers = false,
            "--cover-labels" => opts.probe_labels = dexar_toy::PatchLabels::Cover,
            "--probe-smoothing" => opts.probe_shaping.label_smoothing = value()?.parse()?,
            "--probe-z" => opts.probe_shaping.z_weight = value()?.parse()?,
            "--probe-pointing" => opts.probe_shaping.pointing_weight = value()?.parse()?,
            "--wd" => opts.weight_decay = value()?.parse()?,
            "--seed" => opts.seed = value()?.parse()?,
            "--out" => opts.out_dir = PathBuf::from(value()?),
            "--eval" => eval_scenes = value()?.parse()?,
            "--eval-only" => eval_only = true,
            // hidden,intermediate,layers,heads
            "--vision" | "--text" => {
                let v: Vec<usize> = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                let [hidden, inter, layers, heads] = v[..] else {
                    return Err(format!("{flag} wants hidden,intermediate,layers,heads").into());
                };
                let m = &mut opts.model;
                if flag == "--vision" {
                    (
                        m.vision_hidden,
                        m.vision_intermediate,
                        m.vision_layers,
                        m.vision_heads,
                    ) = (hidden, inter, layers, heads);
                } else {
                    (
                        m.text_hidden,
                        m.text_intermediate,
                        m.text_layers,
                        m.text_heads,
                    ) = (hidden, inter, layers, heads);
                }
            }
            "--min-objects" => opts.scene.min_objects = value()?.parse()?,
            "--max-objects" => opts.scene.max_objects = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if !eval_only {
        println!("{opts:?}");
        println!(
            "parameters: {} ({:.2} MB f32)",
            opts.model.parameter_count(),
            opts.model.parameter_count() as f64 * 4.0 / 1e6
        );
        let report = train(&opts, &mut |p| {
            if p.step == 1 || p.step % 25 == 0 || p.step == p.steps {
                println!(
                    "{:?} step {:>5}/{} loss {:.4} (smoothed {:.4}) lr {:.2e} {:.1}s ({:.3}s/step)",
                    p.stage,
                    p.step,
                    p.steps,
                    p.loss,
                    p.smoothed_loss,
                    p.lr,
                    p.elapsed.as_secs_f64(),
                    p.elapsed.as_secs_f64() / p.step as f64
                );
            }
        })?;
        println!(
            "trained {} steps in {:.1}s, final loss {:.4}, {} bytes of weights in {}",
            report.steps,
            report.elapsed.as_secs_f64(),
            report.final_loss,
            report.weights_bytes,
            report.out_dir.display()
        );
    }
    if eval_scenes > 0 {
        let start = std::time::Instant::now();
        let ckpt = Checkpoint::load(&opts.out_dir, &LoadOptions::default())?;
        let acc = answer_accuracy_with(&ckpt, eval_scenes, HELD_OUT_SEED, &opts.scene)?;
        println!("{acc}");
        println!("evaluated in {:.1}s", start.elapsed().as_secs_f64());
    }
    Ok(())
}
