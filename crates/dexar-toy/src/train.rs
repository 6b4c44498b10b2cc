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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use dexar_model::decoder::{Capture, KvCache};
use dexar_model::{ImageProcessor, LlavaConfig, LlavaModel, TextTokenizer};

use crate::model_config::{preprocessor_json, ToyModelConfig, IMAGE_SIZE};
use crate::rng::SplitMix64;
use crate::shapes::{generate, SceneConfig};
use crate::vocab::{chat_prompt, tokenizer_json, EOS_ID, IMAGE_ID, PAD_ID};
use crate::ToyError;

/// Files [`train`] writes, the llava-hf checkpoint layout.
pub const CHECKPOINT_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// Seed of the training scenes unless told otherwise. Held-out evaluation
/// uses [`crate::HELD_OUT_SEED`], a different stream.
pub const TRAIN_SEED: u64 = 1;

/// How to train. [`Default`] reproduces the bundled model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Scenes per step; each contributes all of its question/answer pairs
    /// (the description and about seven questions).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up before the cosine decay.
    pub warmup_steps: usize,
    /// The learning rate decays to `lr * final_lr_fraction`.
    pub final_lr_fraction: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; `0` switches clipping off.
    pub grad_clip: f64,
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
            steps: 3000,
            batch_size: 8,
            lr: 2e-3,
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
    /// Learning rate of (1-based) `step`: linear warm-up, then cosine decay.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step <= self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.final_lr_fraction + (1.0 - self.final_lr_fraction) * cosine)
    }

    fn validate(&self) -> Result<(), ToyError> {
        let bad = |m: String| Err(ToyError::Options(m));
        if self.steps == 0 || self.batch_size == 0 {
            return bad("steps and batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return bad("final_lr_fraction must be within 0..=1".into());
        }
        self.model.validate().map_err(ToyError::Options)
    }
}

/// Reported after every step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainProgress {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    /// Mean cross-entropy per answer token of this step's batch.
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
    /// Loss of every step, in order.
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
    let varmap = init_weights(&opts.model, &config, opts.seed, &device)?;
    let model = LlavaModel::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        &config,
    )?;
    let data = BatchMaker::new(&config)?;
    let mut optimizer = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            beta2: 0.98,
            ..ParamsAdamW::default()
        },
    )?;
    // In name order, so the gradient norm sums the same way every run.
    let trainable = vars_by_name(&varmap)?;

    let mut losses = Vec::with_capacity(opts.steps);
    let mut smoothed: Option<f32> = None;
    for step in 1..=opts.steps {
        let lr = opts.lr_at(step);
        optimizer.set_learning_rate(lr);
        let first = ((step - 1) * opts.batch_size) as u64;
        let batch = data.batch(
            &opts.scene,
            opts.seed,
            first..first + opts.batch_size as u64,
        )?;
        let loss = batch_loss(&model, &batch)?;
        let mut grads = loss.backward()?;
        if opts.grad_clip > 0.0 {
            clip_grad_norm(&mut grads, &trainable, opts.grad_clip)?;
        }
        optimizer.step(&grads)?;
        let loss = loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Err(ToyError::Diverged { step, loss });
        }
        losses.push(loss);
        let s = smoothed.map_or(loss, |s| 0.95 * s + 0.05 * loss);
        smoothed = Some(s);
        progress(TrainProgress {
            step,
            steps: opts.steps,
            loss,
            smoothed_loss: s,
            lr,
            elapsed: start.elapsed(),
        });
    }

    let weights_bytes = save_checkpoint(&opts.out_dir, &config_json, &varmap)?;
    let tail = (losses.len() / 10).max(1);
    let final_loss = losses[losses.len() - tail..].iter().sum::<f32>() / tail as f32;
    Ok(TrainReport {
        steps: opts.steps,
        losses,
        final_loss,
        elapsed: start.elapsed(),
        parameters: opts.model.parameter_count(),
        weights_bytes,
        out_dir: opts.out_dir.clone(),
    })
}

/// A step's training data: images, and the prompt+answer suffixes that
/// follow the shared image prefix, in groups of similar length (questions
/// and short descriptions, long descriptions) so little is spent on padding.
pub(crate) struct Batch {
    /// `[I, 3, H, W]` normalised pixels.
    pub pixels: Tensor,
    /// `[h]` the text tokens before the image (`<s> USER:`), shared by all.
    pub head_ids: Tensor,
    pub groups: Vec<SuffixGroup>,
    /// Scored tokens in all groups.
    pub scored_count: usize,
}

/// Suffixes of one length class.
pub(crate) struct SuffixGroup {
    /// `[B, S]` prompt words, `ASSISTANT:`, answer, `</s>`, right-padded.
    pub ids: Tensor,
    /// `[B]` index of each suffix's image.
    pub owner: Tensor,
    /// `[M]` flattened `b * S + j` positions whose next token is scored.
    pub scored: Tensor,
    /// `[M]` the tokens they must predict.
    pub targets: Tensor,
}

/// Suffixes up to this many tokens go to the short group.
const SHORT_SUFFIX: usize = 11;

/// A suffix: its ids, the first position whose next token is scored, its image.
type Suffix = (Vec<u32>, usize, u32);

/// Turns scenes into [`Batch`]es with the checkpoint's own tokenizer and
/// image processor.
pub(crate) struct BatchMaker {
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) processor: ImageProcessor,
    num_image_tokens: usize,
    device: Device,
}

impl BatchMaker {
    pub fn new(config: &LlavaConfig) -> Result<Self, ToyError> {
        let tokenizer_bytes = serde_json::to_vec(&tokenizer_json())?;
        let tokenizer = TextTokenizer::from_bytes(&tokenizer_bytes, Path::new("tokenizer.json"))?;
        let processor =
            ImageProcessor::from_json(&preprocessor_json().to_string(), IMAGE_SIZE as u32)
                .map_err(ToyError::Options)?;
        Ok(Self {
            tokenizer,
            processor,
            num_image_tokens: config.num_image_tokens(),
            device: Device::Cpu,
        })
    }

    /// Prompt ids (image expanded) and image span, as inference builds them.
    pub(crate) fn prompt_ids(&self, prompt: &str) -> Result<(Vec<u32>, (usize, usize)), ToyError> {
        let prepared =
            self.tokenizer
                .prepare(&chat_prompt(prompt), IMAGE_ID, self.num_image_tokens)?;
        Ok((prepared.input_ids, prepared.image_span))
    }

    pub fn batch(
        &self,
        scene_config: &SceneConfig,
        seed: u64,
        indices: std::ops::Range<u64>,
    ) -> Result<Batch, ToyError> {
        let mut pixels = Vec::new();
        let mut head: Option<Vec<u32>> = None;
        let (mut short, mut long): (Vec<Suffix>, Vec<Suffix>) = (Vec::new(), Vec::new());
        let images = indices.end.saturating_sub(indices.start) as usize;
        for (image, index) in indices.enumerate() {
            let scene = generate(scene_config, seed, index);
            let img = image::DynamicImage::ImageRgb8(scene.image.clone());
            let (p, size) = self.processor.preprocess(&img);
            debug_assert_eq!(size, (IMAGE_SIZE as u32, IMAGE_SIZE as u32));
            pixels.extend(p);
            for (prompt, answer) in scene.qa_pairs() {
                let (ids, (s, e)) = self.prompt_ids(prompt)?;
                match &head {
                    None => head = Some(ids[..s].to_vec()),
                    Some(h) if h[..] != ids[..s] => {
                        return Err(ToyError::Options(
                            "prompts do not share the text before the image".into(),
                        ))
                    }
                    Some(_) => {}
                }
                let mut suffix = ids[e..].to_vec();
                // The last prompt token (`ASSISTANT:`) predicts the first answer token.
                let first_scored = suffix.len() - 1;
                suffix.extend(self.tokenizer.encode(&answer.text, false)?);
                suffix.push(EOS_ID);
                let group = if suffix.len() <= SHORT_SUFFIX {
                    &mut short
                } else {
                    &mut long
                };
                group.push((suffix, first_scored, image as u32));
            }
        }
        let head = head.ok_or_else(|| ToyError::Options("empty batch".into()))?;
        let mut groups = Vec::with_capacity(2);
        let mut scored_count = 0;
        for suffixes in [short, long] {
            if let Some(group) = self.group(&suffixes)? {
                scored_count += group.targets.dim(0)?;
                groups.push(group);
            }
        }
        Ok(Batch {
            pixels: Tensor::from_vec(pixels, (images, 3, IMAGE_SIZE, IMAGE_SIZE), &self.device)?,
            head_ids: Tensor::new(head.as_slice(), &self.device)?,
            groups,
            scored_count,
        })
    }

    fn group(&self, suffixes: &[Suffix]) -> Result<Option<SuffixGroup>, ToyError> {
        let Some(width) = suffixes.iter().map(|s| s.0.len()).max() else {
            return Ok(None);
        };
        let mut ids = Vec::with_capacity(suffixes.len() * width);
        let (mut scored, mut targets) = (Vec::new(), Vec::new());
        for (b, (suffix, first, _)) in suffixes.iter().enumerate() {
            for j in *first..suffix.len() - 1 {
                scored.push((b * width + j) as u32);
                targets.push(suffix[j + 1]);
            }
            ids.extend(suffix);
            ids.extend(std::iter::repeat_n(PAD_ID, width - suffix.len()));
        }
        let owner: Vec<u32> = suffixes.iter().map(|s| s.2).collect();
        let d = &self.device;
        Ok(Some(SuffixGroup {
            ids: Tensor::from_vec(ids, (suffixes.len(), width), d)?,
            owner: Tensor::new(owner.as_slice(), d)?,
            scored: Tensor::new(scored.as_slice(), d)?,
            targets: Tensor::new(targets.as_slice(), d)?,
        }))
    }
}

/// Mean cross-entropy of the scored tokens. The prefix `<s> USER: <image>`
/// runs once per image; its key/value cache is then repeated for each of
/// the image's prompts and the suffixes continue at the same positions a
/// full sequence would give them.
pub(crate) fn batch_loss(model: &LlavaModel, batch: &Batch) -> Result<Tensor, ToyError> {
    let decoder = &model.decoder;
    let features = model.image_encoder.forward(&batch.pixels)?; // [I, N, D]
    let (images, _, d) = features.dims3()?;
    let head = decoder.embed(&batch.head_ids)?; // [h, D]
    let head_len = head.dim(0)?;
    let head = head
        .unsqueeze(0)?
        .broadcast_as((images, head_len, d))?
        .contiguous()?;
    let prefix = Tensor::cat(&[&head, &features], 1)?;
    let prefix_len = prefix.dim(1)?;
    let mut prefix_cache = KvCache::default();
    decoder.forward(&prefix, 0, Some(&mut prefix_cache), &Capture::default())?;
    let mut total: Option<Tensor> = None;
    for group in &batch.groups {
        let fan_out = |kv: &(Tensor, Tensor)| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((
                kv.0.index_select(&group.owner, 0)?,
                kv.1.index_select(&group.owner, 0)?,
            ))
        };
        let mut cache = KvCache {
            layers: prefix_cache
                .layers
                .iter()
                .map(|layer| layer.as_ref().map(fan_out).transpose())
                .collect::<Result<_, _>>()?,
        };
        let suffix = decoder.embed(&group.ids)?; // [B, S, D]
        let (b, s, _) = suffix.dims3()?;
        let out = decoder.forward(&suffix, prefix_len, Some(&mut cache), &Capture::default())?;
        let hidden = out
            .hidden
            .ok_or_else(|| ToyError::Options("decoder returned no hidden state".into()))?;
        let hidden = hidden.reshape((b * s, d))?.index_select(&group.scored, 0)?;
        let nll = summed_nll(&decoder.logits(&hidden)?, &group.targets)?;
        total = Some(match total {
            Some(t) => (t + nll)?,
            None => nll,
        });
    }
    let total = total.ok_or_else(|| ToyError::Options("empty batch".into()))?;
    Ok((total / batch.scored_count.max(1) as f64)?)
}

/// Sum of `-log softmax(logits)[target]`, composed from differentiable ops.
fn summed_nll(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&log_z)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?;
    picked.sum_all()?.neg()
}

fn vars_by_name(varmap: &VarMap) -> Result<Vec<candle_core::Var>, ToyError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ToyError::Options("weight store poisoned by an earlier panic".into()))?;
    let mut named: Vec<(&String, &candle_core::Var)> = data.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
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
/// starts: `Normal(0, std)`-like (uniform of that std), ones or zeros.
#[derive(Debug, Clone, Copy)]
enum Init {
    Random(f32),
    Ones,
    Zeros,
}

fn weight_specs(m: &ToyModelConfig, vocab: usize) -> Vec<(String, Vec<usize>, Init)> {
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
        (
            format!("{vm}.embeddings.patch_embedding.weight"),
            vec![dv, 3, p, p],
            Init::Random(STD),
        ),
        (
            format!("{vm}.embeddings.position_embedding.weight"),
            vec![patches + 1, dv],
            Init::Random(STD),
        ),
        (
            format!("{lm}.embed_tokens.weight"),
            vec![vocab, dt],
            Init::Random(STD),
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
    device: &Device,
) -> Result<VarMap, ToyError> {
    let varmap = VarMap::new();
    for (name, shape, init) in weight_specs(m, config.text.vocab_size) {
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

/// Writes the checkpoint files (weights through a temporary file and a
/// rename, so a reader never sees half a file); returns the weight bytes.
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
    let weights = dir.join("model.safetensors");
    let tmp = dir.join("model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &weights).map_err(io(&weights))?;
    let write_json = |name: &str, value: &serde_json::Value| -> Result<(), ToyError> {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(&path, text + "\n").map_err(io(&path))
    };
    write_json("config.json", config_json)?;
    write_json("tokenizer.json", &tokenizer_json())?;
    write_json("preprocessor_config.json", &preprocessor_json())?;
    Ok(std::fs::metadata(&weights).map_err(io(&weights))?.len())
}

#[cfg(test)]
mod tests;
