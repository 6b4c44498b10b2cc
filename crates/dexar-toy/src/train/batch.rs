//! Training batches: scenes to token ids and pixels, and the loss of a
//! batch computed through the model with one shared image prefix per scene.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use dexar_model::decoder::{Capture, KvCache};
use dexar_model::{ImageProcessor, LlavaConfig, LlavaModel, TextTokenizer};

use crate::model_config::{preprocessor_json, IMAGE_SIZE};
use crate::shapes::{generate, SceneConfig};

use super::patch_probe::{PatchLabels, PatchTargets};
use crate::vocab::{chat_prompt, tokenizer_json, EOS_ID, IMAGE_ID, PAD_ID};
use crate::ToyError;

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
    /// What the patch probe must read from each image token.
    pub patches: PatchTargets,
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
    /// Side of the patch grid.
    grid: usize,
    /// How patches are labelled for the probe.
    pub(crate) labels: PatchLabels,
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
            grid: config.vision.image_size / config.vision.patch_size,
            labels: PatchLabels::default(),
            device: Device::Cpu,
        })
    }

    /// Normalised pixels `[3, H, W]` of a scene image.
    pub(crate) fn pixels(&self, image: &image::RgbImage) -> Result<Tensor, ToyError> {
        let img = image::DynamicImage::ImageRgb8(image.clone());
        let p = self.processor.preprocess(&img);
        Ok(Tensor::from_vec(
            p.data,
            (3, p.height as usize, p.width as usize),
            &self.device,
        )?)
    }

    /// Prompt ids (image expanded) and image span, as inference builds them.
    pub(crate) fn prompt_ids(&self, prompt: &str) -> Result<(Vec<u32>, (usize, usize)), ToyError> {
        let prepared =
            self.tokenizer
                .prepare(&chat_prompt(prompt), IMAGE_ID, self.num_image_tokens)?;
        let span = prepared.image_span();
        Ok((prepared.input_ids, span))
    }

    /// Pixels `[I, 3, H, W]` and patch targets of scenes `indices`, for the
    /// probe alone.
    pub fn images(
        &self,
        scene_config: &SceneConfig,
        seed: u64,
        indices: std::ops::Range<u64>,
    ) -> Result<(Tensor, PatchTargets), ToyError> {
        let mut pixels = Vec::new();
        let mut targets = PatchTargets::default();
        for index in indices {
            let scene = generate(scene_config, seed, index);
            pixels.push(self.pixels(&scene.image)?);
            targets.push_scene(&scene, self.grid, self.labels);
        }
        Ok((Tensor::stack(&pixels, 0)?, targets))
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
        let mut patches = PatchTargets::default();
        for (image, index) in indices.enumerate() {
            let scene = generate(scene_config, seed, index);
            patches.push_scene(&scene, self.grid, self.labels);
            let img = image::DynamicImage::ImageRgb8(scene.image.clone());
            let p = self.processor.preprocess(&img);
            debug_assert_eq!((p.height, p.width), (IMAGE_SIZE as u32, IMAGE_SIZE as u32));
            pixels.extend(p.data);
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
            patches,
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

/// What [`batch_loss`] computes.
pub(crate) struct BatchLoss {
    /// Mean cross-entropy of the scored tokens.
    pub answers: Tensor,
    /// With `lens`: the same through the logit lens (final norm and LM head)
    /// of every decoder layer but the last, averaged over those layers.
    pub lens: Option<Tensor>,
    /// The image tokens `[I, N, D]` the decoder received.
    pub tokens: Tensor,
    /// With `image_layers`: the image positions `[I, N, D]` of the outputs
    /// of every decoder layer but the last (what later layers attend to).
    pub layer_tokens: Vec<Tensor>,
}

/// Losses of a batch. The prefix `<s> USER: <image>` runs once per image;
/// its key/value cache is then repeated for each of the image's prompts and
/// the suffixes continue at the same positions a full sequence would give them.
pub(crate) fn batch_loss(
    model: &LlavaModel,
    batch: &Batch,
    lens: bool,
    image_layers: bool,
) -> Result<BatchLoss, ToyError> {
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
    let prefix_out = decoder.forward(
        &prefix,
        0,
        Some(&mut prefix_cache),
        &Capture {
            layer_outputs: image_layers,
            ..Capture::default()
        },
    )?;
    let lens_layers = decoder.layers.len().saturating_sub(1);
    let n_image = features.dim(1)?;
    let layer_tokens = prefix_out
        .layer_outputs
        .iter()
        .take(lens_layers)
        .map(|h| h.narrow(1, head_len, n_image))
        .collect::<Result<Vec<_>, _>>()?;
    let capture = Capture {
        layer_outputs: lens && lens_layers > 0,
        ..Capture::default()
    };
    let add = |acc: Option<Tensor>, t: Tensor| -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match acc {
            Some(a) => (a + t)?,
            None => t,
        }))
    };
    let (mut total, mut lens_total): (Option<Tensor>, Option<Tensor>) = (None, None);
    for group in &batch.groups {
        let fan_out = |kv: &(Tensor, Tensor)| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((
                kv.0.index_select(&group.owner, 0)?,
                kv.1.index_select(&group.owner, 0)?,
            ))
        };
        let mut cache = KvCache::from_layers(
            prefix_cache
                .layers
                .iter()
                .map(|layer| layer.as_ref().map(fan_out).transpose())
                .collect::<Result<_, _>>()?,
        );
        let suffix = decoder.embed(&group.ids)?; // [B, S, D]
        let (b, s, _) = suffix.dims3()?;
        let out = decoder.forward(&suffix, prefix_len, Some(&mut cache), &capture)?;
        let scored = |h: &Tensor| -> candle_core::Result<Tensor> {
            let h = h.reshape((b * s, d))?.index_select(&group.scored, 0)?;
            summed_nll(&decoder.logits(&h)?, &group.targets)
        };
        let hidden = out
            .hidden
            .as_ref()
            .ok_or_else(|| ToyError::Options("decoder returned no hidden state".into()))?;
        total = add(total, scored(hidden)?)?;
        for h in out.layer_outputs.iter().take(lens_layers) {
            lens_total = add(lens_total, scored(h)?)?;
        }
    }
    let total = total.ok_or_else(|| ToyError::Options("empty batch".into()))?;
    let count = batch.scored_count.max(1) as f64;
    Ok(BatchLoss {
        answers: (total / count)?,
        lens: lens_total
            .map(|t| t / (count * lens_layers as f64))
            .transpose()?,
        tokens: features,
        layer_tokens,
    })
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
