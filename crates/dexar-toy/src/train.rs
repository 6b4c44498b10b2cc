//! Training the bundled demo VLM on the shapes world, in candle, through the
//! very model definition inference uses (`dexar_model::LlavaModel`).
//!
//! The weights live in a `VarMap` under the llava-hf (classic) names and are
//! initialised from the seed by our own PRNG; `LlavaModel::load` reads them
//! through `VarBuilder::from_varmap`, so every tensor of the model is a
//! trainable `Var`. One step takes `batch_size` fresh scenes and *all* their
//! question/answer pairs: the shared prefix `<s> USER: <image>...` runs once
//! per image and its key/value cache is fanned out to the image's prompts
//! (same decoder, same positions, same masks as one full sequence; about
//! three times less work). The loss is the cross-entropy of answer tokens and
//! `</s>` only; AdamW with linear warm-up and cosine decay.
//!
//! Two stages, as LLaVA itself starts from a pretrained CLIP: stage 1 warms
//! the vision tower and projector up with a patch probe that reads each image
//! token's object colour and shape through the logit lens (`patch_probe.rs`;
//! no decoder layers, so cheap), stage 2 trains everything on answers while
//! the probe goes on beside them with a small weight, on the same image
//! tokens and on their image positions after each decoder layer. Without it
//! the tokens carry colour only: answers are learned through colour first,
//! and colour gradients starve shape (measured: shape answers at chance after
//! 20 k training scenes).

mod batch;
mod patch_probe;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use dexar_model::{LlavaConfig, LlavaModel};

pub(crate) use batch::{batch_loss, BatchMaker};
use patch_probe::PatchProbe;
pub use patch_probe::{PatchLabels, ProbeReadout, ProbeShaping};

use crate::model_config::{preprocessor_json, ToyModelConfig, IMAGE_SIZE};
use crate::rng::SplitMix64;
use crate::shapes::SceneConfig;
use crate::vocab::tokenizer_json;
use crate::ToyError;

/// Files [`train`] writes, the llava-hf checkpoint layout.
pub const CHECKPOINT_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// Stage-1 scenes come from their own stream of the training seed.
const VISION_STREAM: u64 = 0x7157_0a11;

/// Seed of the weights and training scenes unless told otherwise: the
/// bundled model's, the best on a validation set of three seeds tried. Held-out evaluation
/// uses [`crate::HELD_OUT_SEED`], a different stream.
pub const TRAIN_SEED: u64 = 3;

/// How to train. [`Default`] reproduces the bundled model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Steps of stage 1, the vision tower's warm-up on the patch probe alone
    /// (see `train/patch_probe.rs`); 0 skips it.
    pub vision_steps: usize,
    /// Scenes per stage-1 step.
    pub vision_batch_size: usize,
    /// Optimiser steps of stage 2, the whole model on answers.
    pub steps: usize,
    /// Scenes per step; each contributes all of its question/answer pairs
    /// (the description and about seven questions).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Stage 2 trains the vision tower at `lr * vision_lr_scale`.
    pub vision_lr_scale: f64,
    /// Weight of the patch-probe loss kept up during stage 2 (on the
    /// batch's own images); 0 trains on answers alone.
    pub probe_weight: f64,
    /// How the probe reads image tokens.
    pub probe_readout: ProbeReadout,
    /// Which object each patch is labelled with for the probe.
    pub probe_labels: PatchLabels,
    /// Label smoothing, z-loss and pointing term of the probe's loss. By
    /// default the pointing term at 0.5 and the others off. On
    /// `toy:200:777`, DEX-AR pointing: smoothing 0.1 alone 75.6% / 70.4% for
    /// seeds 1 / 2 against 78.2% / 66.8% without; with a z-loss of 0.1
    /// beside it 57.3% / 54.1% on `toy:100`; the pointing term at 0.5
    /// 78.0% / 66.2% / 84.0% for seeds 1 / 2 / 3 (unfiltered maps 82-87%).
    /// docs/findings.md.
    pub probe_shaping: ProbeShaping,
    /// In stage 2 the probe also reads the image positions of every decoder
    /// layer's output but the last's (what later layers attend to).
    pub probe_decoder_layers: bool,
    /// Weight of the logit-lens loss: every decoder layer but the last also
    /// predicts the answers through the final norm and LM head (deep
    /// supervision); 0 trains the last layer's prediction alone.
    pub lens_weight: f64,
    /// Steps of linear warm-up before the cosine decay.
    pub warmup_steps: usize,
    /// The learning rate decays to `lr * final_lr_fraction`.
    pub final_lr_fraction: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; `0` switches clipping off.
    pub grad_clip: f64,
    /// Standard deviation of the initial token embeddings (the other
    /// weights start at 0.02). Measured with the earlier linear probe: at
    /// 0.02 the model answers as well, but DEX-AR's maps point at the named
    /// object far less often (34% of object words against 66% at 0.3); with
    /// the lens probe 0.5 does worse than 0.3 (70% against 80%; docs/findings.md).
    pub embedding_std: f32,
    /// Seeds the weights and the stream of training scenes.
    pub seed: u64,
    /// Where the checkpoint is written (created if missing).
    pub out_dir: PathBuf,
    pub model: ToyModelConfig,
    pub scene: SceneConfig,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            vision_steps: 500,
            vision_batch_size: 32,
            steps: 8500,
            batch_size: 8,
            lr: 1e-3,
            vision_lr_scale: 1.0,
            probe_weight: 0.5,
            probe_readout: ProbeReadout::Lens,
            probe_labels: PatchLabels::Centre,
            probe_shaping: ProbeShaping {
                pointing_weight: 0.5,
                ..ProbeShaping::default()
            },
            probe_decoder_layers: true,
            lens_weight: 0.0,
            embedding_std: 0.3,
            warmup_steps: 100,
            final_lr_fraction: 0.05,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: TRAIN_SEED,
            out_dir: PathBuf::from("toy-model"),
            model: ToyModelConfig::demo(),
            scene: SceneConfig::default(),
        }
    }
}

impl TrainOptions {
    /// Learning rate of (1-based) stage-2 `step`: linear warm-up, then cosine decay.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.schedule(step, self.steps)
    }

    /// Learning rate of (1-based) stage-1 `step`, on the same shape of schedule.
    pub fn vision_lr_at(&self, step: usize) -> f64 {
        self.schedule(step, self.vision_steps)
    }

    fn schedule(&self, step: usize, steps: usize) -> f64 {
        let warmup = self.warmup_steps.min(steps / 2);
        if step <= warmup {
            return self.lr * step as f64 / warmup.max(1) as f64;
        }
        let span = steps.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.final_lr_fraction + (1.0 - self.final_lr_fraction) * cosine)
    }

    fn validate(&self) -> Result<(), ToyError> {
        let bad = |m: String| Err(ToyError::Options(m));
        if self.steps == 0 || self.batch_size == 0 || self.vision_batch_size == 0 {
            return bad("steps and batch sizes must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return bad("final_lr_fraction must be within 0..=1".into());
        }
        for (name, w) in [
            ("probe weight", self.probe_weight),
            ("lens weight", self.lens_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!("{name} {w} must be a finite number >= 0"));
            }
        }
        let ProbeShaping {
            label_smoothing,
            z_weight,
            pointing_weight,
        } = self.probe_shaping;
        if !(0.0..1.0).contains(&label_smoothing) {
            return bad(format!(
                "probe label smoothing {label_smoothing} must be within 0..1"
            ));
        }
        for (name, w) in [("z-loss", z_weight), ("pointing", pointing_weight)] {
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!(
                    "probe {name} weight {w} must be a finite number >= 0"
                ));
            }
        }
        self.model.validate().map_err(ToyError::Options)
    }
}

/// The two stages of [`train`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainStage {
    /// The vision tower alone, on the colour and shape under each patch.
    Vision,
    /// The whole model, on answers.
    Answers,
}

/// Reported after every step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainProgress {
    pub stage: TrainStage,
    /// 1-based, counting both stages (`vision_steps + steps` in all).
    pub step: usize,
    pub steps: usize,
    /// Stage 1: the patch probe's colour plus shape cross-entropy.
    /// Stage 2: mean cross-entropy per answer token of this step's batch.
    pub loss: f32,
    /// Exponential moving average of `loss` (smoothing 0.95), for display.
    pub smoothed_loss: f32,
    /// Learning rate used for this step.
    pub lr: f64,
    pub elapsed: Duration,
}

/// What [`train`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub steps: usize,
    pub vision_steps: usize,
    /// Stage-1 loss of every step, in order.
    pub vision_losses: Vec<f32>,
    /// Stage-2 (answer) loss of every step, in order.
    pub losses: Vec<f32>,
    /// Mean loss of the last 10% of steps (at least one).
    pub final_loss: f32,
    pub elapsed: Duration,
    pub parameters: usize,
    /// Size of `model.safetensors` in bytes.
    pub weights_bytes: u64,
    pub out_dir: PathBuf,
}

/// Trains the toy VLM and writes a llava-hf checkpoint to `opts.out_dir`.
/// Deterministic for a given seed and thread count.
pub fn train(
    opts: &TrainOptions,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<TrainReport, ToyError> {
    opts.validate()?;
    let start = Instant::now();
    let device = Device::Cpu;
    let config_json = opts.model.config_json();
    let config = LlavaConfig::from_value(&config_json)
        .map_err(|e| ToyError::Options(format!("toy config.json does not parse: {e:?}")))?;
    let varmap = init_weights(&opts.model, &config, opts.seed, opts.embedding_std, &device)?;
    let model = LlavaModel::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        &config,
    )?;
    let mut data = BatchMaker::new(&config)?;
    data.labels = opts.probe_labels;
    // In name order, so the gradient norm sums the same way every run.
    let named = named_vars(&varmap)?;
    let trainable: Vec<candle_core::Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let total_steps = opts.vision_steps + opts.steps;

    let probe = PatchProbe::for_decoder(opts.probe_readout, &model.decoder, opts.seed)?
        .with_shaping(opts.probe_shaping);
    let lens_probe = opts.probe_readout != ProbeReadout::Linear;
    let mut probe_optimizer = AdamW::new(
        probe.vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;

    let mut vision_log = LossLog::new(TrainStage::Vision, 0, total_steps, start);
    if opts.vision_steps > 0 {
        let tower: Vec<candle_core::Var> = named
            .iter()
            .filter(|(n, _)| {
                n.starts_with("vision_tower.")
                    || n.starts_with("multi_modal_projector.")
                    || (lens_probe
                        && (n.starts_with("language_model.lm_head.")
                            || n.starts_with("language_model.model.norm.")))
            })
            .map(|(_, v)| v.clone())
            .collect();
        let mut optimizer = AdamW::new(
            tower,
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        let stream = opts.seed ^ VISION_STREAM;
        for step in 1..=opts.vision_steps {
            let lr = opts.vision_lr_at(step);
            let first = ((step - 1) * opts.vision_batch_size) as u64;
            let (pixels, targets) = data.images(
                &opts.scene,
                stream,
                first..first + opts.vision_batch_size as u64,
            )?;
            let tokens = model.image_encoder.forward(&pixels)?;
            let loss = probe.loss(&tokens, &targets)?;
            let grads = loss.backward()?;
            optimizer.set_learning_rate(lr);
            optimizer.step(&grads)?;
            probe_optimizer.set_learning_rate(lr);
            probe_optimizer.step(&grads)?;
            vision_log.record(step, loss.to_scalar::<f32>()?, lr, progress)?;
        }
    }

    let (tower, rest): (Vec<_>, Vec<_>) = named
        .iter()
        .partition(|(n, _)| n.starts_with("vision_tower."));
    let adamw = |vars: Vec<&(String, candle_core::Var)>| {
        AdamW::new(
            vars.into_iter().map(|(_, v)| v.clone()).collect(),
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                beta2: 0.98,
                ..ParamsAdamW::default()
            },
        )
    };
    let (mut tower_optimizer, mut optimizer) = (adamw(tower)?, adamw(rest)?);

    let mut answer_log = LossLog::new(TrainStage::Answers, opts.vision_steps, total_steps, start);
    for step in 1..=opts.steps {
        let lr = opts.lr_at(step);
        optimizer.set_learning_rate(lr);
        tower_optimizer.set_learning_rate(lr * opts.vision_lr_scale);
        let first = ((step - 1) * opts.batch_size) as u64;
        let batch = data.batch(
            &opts.scene,
            opts.seed,
            first..first + opts.batch_size as u64,
        )?;
        let losses_of_batch = batch_loss(
            &model,
            &batch,
            opts.lens_weight > 0.0,
            opts.probe_weight > 0.0 && opts.probe_decoder_layers,
        )?;
        let loss = losses_of_batch.answers;
        let mut objective = loss.clone();
        if opts.probe_weight > 0.0 {
            // The probe keeps going beside the answers, so the colour
            // gradients of the answers cannot wash shape out of the tokens.
            let mut probe_loss = probe.loss(&losses_of_batch.tokens, &batch.patches)?;
            for tokens in &losses_of_batch.layer_tokens {
                probe_loss = (probe_loss + probe.loss(tokens, &batch.patches)?)?;
            }
            objective = (objective + (probe_loss * opts.probe_weight)?)?;
        }
        if let Some(lens) = losses_of_batch.lens {
            objective = (objective + (lens * opts.lens_weight)?)?;
        }
        let mut grads = objective.backward()?;
        if opts.grad_clip > 0.0 {
            clip_grad_norm(&mut grads, &trainable, opts.grad_clip)?;
        }
        optimizer.step(&grads)?;
        tower_optimizer.step(&grads)?;
        probe_optimizer.set_learning_rate(lr);
        probe_optimizer.step(&grads)?;
        answer_log.record(step, loss.to_scalar::<f32>()?, lr, progress)?;
    }

    let weights_bytes = save_checkpoint(&opts.out_dir, &config_json, &varmap)?;
    let (vision_losses, losses) = (vision_log.losses, answer_log.losses);
    let tail = (losses.len() / 10).max(1);
    let final_loss = losses[losses.len() - tail..].iter().sum::<f32>() / tail as f32;
    Ok(TrainReport {
        steps: opts.steps,
        vision_steps: opts.vision_steps,
        vision_losses,
        losses,
        final_loss,
        elapsed: start.elapsed(),
        parameters: opts.model.parameter_count(),
        weights_bytes,
        out_dir: opts.out_dir.clone(),
    })
}

/// Every variable with its name, sorted by name.
fn named_vars(varmap: &VarMap) -> Result<Vec<(String, candle_core::Var)>, ToyError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ToyError::Options("weight store poisoned by an earlier panic".into()))?;
    let mut named: Vec<(String, candle_core::Var)> =
        data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

/// Per-stage loss bookkeeping: divergence check, history, smoothing, progress.
struct LossLog {
    stage: TrainStage,
    /// Steps of earlier stages, so reported steps count both stages.
    offset: usize,
    total_steps: usize,
    start: Instant,
    losses: Vec<f32>,
    smoothed: Option<f32>,
}

impl LossLog {
    fn new(stage: TrainStage, offset: usize, total_steps: usize, start: Instant) -> Self {
        Self {
            stage,
            offset,
            total_steps,
            start,
            losses: Vec::new(),
            smoothed: None,
        }
    }

    /// Records the loss of (1-based, in-stage) `step` and reports it.
    fn record(
        &mut self,
        step: usize,
        loss: f32,
        lr: f64,
        progress: &mut dyn FnMut(TrainProgress),
    ) -> Result<(), ToyError> {
        let step = self.offset + step;
        if !loss.is_finite() {
            return Err(ToyError::Diverged { step, loss });
        }
        self.losses.push(loss);
        let s = self.smoothed.map_or(loss, |s| 0.95 * s + 0.05 * loss);
        self.smoothed = Some(s);
        progress(TrainProgress {
            stage: self.stage,
            step,
            steps: self.total_steps,
            loss,
            smoothed_loss: s,
            lr,
            elapsed: self.start.elapsed(),
        });
        Ok(())
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`.
fn clip_grad_norm(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[candle_core::Var],
    max_norm: f64,
) -> candle_core::Result<()> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * scale)?);
            }
        }
    }
    Ok(())
}

/// Every tensor of the llava-hf checkpoint, by classic name, with how it
/// starts: `Normal(0, std)`-like (uniform of that std), ones, zeros, or
/// 2-D sine-cosine patch positions (MAE) after a CLS row of zeros.
#[derive(Debug, Clone, Copy)]
enum Init {
    Random(f32),
    Ones,
    Zeros,
    /// Grid side and amplitude.
    SinCos2d(usize, f32),
}

fn weight_specs(
    m: &ToyModelConfig,
    vocab: usize,
    embedding_std: f32,
) -> Vec<(String, Vec<usize>, Init)> {
    const STD: f32 = 0.02;
    let mut specs: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let mut linear = |prefix: &str, inp: usize, out: usize, bias: bool, std: f32| {
        specs.push((
            format!("{prefix}.weight"),
            vec![out, inp],
            Init::Random(std),
        ));
        if bias {
            specs.push((format!("{prefix}.bias"), vec![out], Init::Zeros));
        }
    };
    let (dv, iv) = (m.vision_hidden, m.vision_intermediate);
    // Residual branches are scaled down with depth (GPT-2).
    let v_out_std = STD / (2.0 * m.vision_layers as f32).sqrt();
    let vm = "vision_tower.vision_model";
    for l in 0..m.vision_layers {
        let p = format!("{vm}.encoder.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj"] {
            linear(&format!("{p}.self_attn.{proj}"), dv, dv, true, STD);
        }
        linear(&format!("{p}.self_attn.out_proj"), dv, dv, true, v_out_std);
        linear(&format!("{p}.mlp.fc1"), dv, iv, true, STD);
        linear(&format!("{p}.mlp.fc2"), iv, dv, true, v_out_std);
    }
    linear(
        "multi_modal_projector.linear_1",
        dv,
        m.text_hidden,
        true,
        STD,
    );
    linear(
        "multi_modal_projector.linear_2",
        m.text_hidden,
        m.text_hidden,
        true,
        STD,
    );
    let (dt, it) = (m.text_hidden, m.text_intermediate);
    let t_out_std = STD / (2.0 * m.text_layers as f32).sqrt();
    let lm = "language_model.model";
    for l in 0..m.text_layers {
        let p = format!("{lm}.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj"] {
            linear(&format!("{p}.self_attn.{proj}"), dt, dt, false, STD);
        }
        linear(&format!("{p}.self_attn.o_proj"), dt, dt, false, t_out_std);
        linear(&format!("{p}.mlp.gate_proj"), dt, it, false, STD);
        linear(&format!("{p}.mlp.up_proj"), dt, it, false, STD);
        linear(&format!("{p}.mlp.down_proj"), it, dt, false, t_out_std);
    }
    linear("language_model.lm_head", dt, vocab, false, STD);
    let patches = m.num_image_tokens();
    let p = m.patch_size;
    specs.extend([
        (
            format!("{vm}.embeddings.class_embedding"),
            vec![dv],
            Init::Random(STD),
        ),
        // Patch features on the scale of the positions, so neither drowns
        // the other in the pre-layernorm.
        (
            format!("{vm}.embeddings.patch_embedding.weight"),
            vec![dv, 3, p, p],
            Init::Random(1.0 / ((3 * p * p) as f32).sqrt()),
        ),
        // A ready-made sense of which patches are near each other: learning
        // it from scratch is most of what makes a small ViT slow to train.
        (
            format!("{vm}.embeddings.position_embedding.weight"),
            vec![patches + 1, dv],
            Init::SinCos2d(IMAGE_SIZE / p, 0.5),
        ),
        (
            format!("{lm}.embed_tokens.weight"),
            vec![vocab, dt],
            Init::Random(embedding_std),
        ),
        (format!("{lm}.norm.weight"), vec![dt], Init::Ones),
    ]);
    // Unused by LLaVA (it takes hidden states before it) but part of every
    // CLIP checkpoint, so transformers loads ours without complaint.
    for norm in ["pre_layrnorm", "post_layernorm"] {
        specs.push((format!("{vm}.{norm}.weight"), vec![dv], Init::Ones));
        specs.push((format!("{vm}.{norm}.bias"), vec![dv], Init::Zeros));
    }
    for l in 0..m.vision_layers {
        for norm in ["layer_norm1", "layer_norm2"] {
            let p = format!("{vm}.encoder.layers.{l}.{norm}");
            specs.push((format!("{p}.weight"), vec![dv], Init::Ones));
            specs.push((format!("{p}.bias"), vec![dv], Init::Zeros));
        }
    }
    for l in 0..m.text_layers {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            specs.push((
                format!("{lm}.layers.{l}.{norm}.weight"),
                vec![dt],
                Init::Ones,
            ));
        }
    }
    specs
}

/// `[1 + side², dim]`: a zero row for CLS, then for the patch at (row, col)
/// `[sin(row ω), cos(row ω), sin(col ω), cos(col ω)]` over `dim / 4`
/// frequencies ω from 1 down to 1/side.
fn sincos_2d(side: usize, dim: usize, amplitude: f32) -> Vec<f32> {
    let quarter = dim / 4;
    let mut out = vec![0f32; (1 + side * side) * dim];
    for row in 0..side {
        for col in 0..side {
            let at = (1 + row * side + col) * dim;
            for k in 0..quarter {
                let omega = (side as f64).powf(-(k as f64) / quarter.max(1) as f64);
                let (r, c) = (row as f64 * omega, col as f64 * omega);
                let values = [r.sin(), r.cos(), c.sin(), c.cos()];
                for (part, v) in values.iter().enumerate() {
                    out[at + part * quarter + k] = amplitude * *v as f32;
                }
            }
        }
    }
    out
}

/// FNV-1a, to give every tensor its own PRNG stream by name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A `VarMap` holding every checkpoint tensor, initialised from `seed` (the
/// values depend on the seed and the tensor's name only).
pub(crate) fn init_weights(
    m: &ToyModelConfig,
    config: &LlavaConfig,
    seed: u64,
    embedding_std: f32,
    device: &Device,
) -> Result<VarMap, ToyError> {
    let varmap = VarMap::new();
    for (name, shape, init) in weight_specs(m, config.text.vocab_size, embedding_std) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Ones => vec![1.0; n],
            Init::Zeros => vec![0.0; n],
            Init::Random(std) => {
                let mut rng = SplitMix64::for_scene(seed, name_hash(&name));
                // Uniform on [-a, a] has standard deviation a / sqrt(3).
                let a = std * 3f32.sqrt();
                (0..n).map(|_| (rng.unit_f32() * 2.0 - 1.0) * a).collect()
            }
            Init::SinCos2d(side, amplitude) => sincos_2d(side, shape[1], amplitude),
        };
        let tensor = Tensor::from_vec(values, shape.as_slice(), device)?;
        varmap
            .data()
            .lock()
            .map_err(|_| ToyError::Options("weight store poisoned by an earlier panic".into()))?
            .insert(name, candle_core::Var::from_tensor(&tensor)?);
    }
    Ok(varmap)
}

/// Writes the checkpoint files, each atomically ([`dexar_core::write_atomic`]);
/// returns the weight bytes.
fn save_checkpoint(
    dir: &Path,
    config_json: &serde_json::Value,
    varmap: &VarMap,
) -> Result<u64, ToyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ToyError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| ToyError::Options("weight store poisoned by an earlier panic".into()))?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    };
    let weights = safetensors_bytes(&tensors)?;
    let write = |name: &str, bytes: &[u8]| -> Result<(), ToyError> {
        let path = dir.join(name);
        dexar_core::write_atomic(&path, bytes).map_err(io(&path))
    };
    write("model.safetensors", &weights)?;
    let json = |value: &serde_json::Value| -> Result<Vec<u8>, ToyError> {
        Ok((serde_json::to_string_pretty(value)? + "\n").into_bytes())
    };
    write("config.json", &json(config_json)?)?;
    write("tokenizer.json", &json(&tokenizer_json())?)?;
    write("preprocessor_config.json", &json(&preprocessor_json())?)?;
    Ok(weights.len() as u64)
}

/// The safetensors file of `tensors`, as `candle_core::safetensors::save`
/// writes it.
fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>, ToyError> {
    safetensors::tensor::serialize(tensors.iter(), None)
        .map_err(|e| ToyError::Candle(candle_core::Error::wrap(e)))
}

#[cfg(test)]
mod tests;
