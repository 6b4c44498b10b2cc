//! The LLaVA model (vision tower + projector + decoder) and loading of a
//! llava-hf checkpoint directory in either weight-name layout.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::chat::{apply_template, ChatTemplate, Turn};
use crate::config::LlavaConfig;
use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::options::LoadOptions;
use crate::preprocess::{ImageProcessor, Pixels};
use crate::prompt::{PreparedPrompt, TextTokenizer};
use crate::vision::ImageEncoder;

/// A loaded LLaVA-family model.
#[derive(Debug, Clone)]
pub struct LlavaModel {
    pub config: LlavaConfig,
    pub image_encoder: ImageEncoder,
    pub decoder: Decoder,
    pub device: Device,
    pub dtype: DType,
}

/// Weight-name layouts of llava checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// llava-hf: `language_model.model.*`, `language_model.lm_head`, `vision_tower.*`, `multi_modal_projector.*`.
    Classic,
    /// transformers 5: `model.language_model.*`, `lm_head`, `model.vision_tower.*`, `model.multi_modal_projector.*`.
    Modern,
}

impl WeightLayout {
    fn prefixes(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::Classic => (
                "vision_tower",
                "multi_modal_projector",
                "language_model.model",
                "language_model.lm_head",
            ),
            Self::Modern => (
                "model.vision_tower",
                "model.multi_modal_projector",
                "model.language_model",
                "lm_head",
            ),
        }
    }
}

impl LlavaModel {
    pub fn load(vb: VarBuilder, config: &LlavaConfig) -> candle_core::Result<Self> {
        let layout = if vb.contains_tensor("language_model.model.embed_tokens.weight") {
            WeightLayout::Classic
        } else {
            WeightLayout::Modern
        };
        let (tower, projector, lm, head) = layout.prefixes();
        let head_name = format!("{head}.weight");
        let head_vb = if vb.contains_tensor(&head_name) {
            Some(vb.pp(head))
        } else if config.text.tie_word_embeddings {
            None
        } else {
            return Err(candle_core::Error::Msg(format!(
                "missing tensor {head_name} (and tie_word_embeddings is false)"
            )));
        };
        Ok(Self {
            config: config.clone(),
            image_encoder: ImageEncoder::load(vb.pp(tower), vb.pp(projector), config)?,
            decoder: Decoder::load(vb.pp(lm), head_vb, &config.text)?,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// Preprocessed pixels to image tokens (vision tower and projector).
    pub fn encode_image(&self, pixels: &Pixels) -> candle_core::Result<ImageFeatures> {
        let (h, w) = (pixels.height as usize, pixels.width as usize);
        let t =
            Tensor::from_slice(&pixels.data, (1, 3, h, w), &self.device)?.to_dtype(self.dtype)?;
        Ok(ImageFeatures(self.image_encoder.forward(&t)?.squeeze(0)?))
    }

    /// Input embeddings `[1, T, D]` of `ids`, the span `image_span` replaced by `image_features` `[N, D]`.
    pub fn embed_with_image(
        &self,
        ids: &[u32],
        image_span: (usize, usize),
        image_features: &ImageFeatures,
    ) -> candle_core::Result<Tensor> {
        let (s, e) = image_span;
        let text = self.decoder.embed(&Tensor::new(ids, &self.device)?)?;
        let mut parts = Vec::with_capacity(3);
        if s > 0 {
            parts.push(text.narrow(0, 0, s)?);
        }
        parts.push(image_features.0.to_dtype(self.dtype)?);
        if e < ids.len() {
            parts.push(text.narrow(0, e, ids.len() - e)?);
        }
        Tensor::cat(&parts, 0)?.unsqueeze(0)
    }
}

/// Image tokens `[N, D]` as the decoder receives them: the output of the
/// vision tower and projector for one image.
#[derive(Debug, Clone)]
pub struct ImageFeatures(pub Tensor);

impl ImageFeatures {
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }
}

/// Everything in a checkpoint directory: config, tokenizer, image processor,
/// chat template, model.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory, or a label such as `bundled:toy` for one loaded from memory.
    pub dir: PathBuf,
    pub config: LlavaConfig,
    pub tokenizer: TextTokenizer,
    pub processor: ImageProcessor,
    pub template: ChatTemplate,
    pub model: LlavaModel,
}

/// The files of a checkpoint held in memory (the bundled demo model).
#[derive(Debug, Clone, Copy)]
pub struct MemoryCheckpoint<'a> {
    /// Shown where a directory would be, e.g. `bundled:toy`.
    pub label: &'a str,
    pub config_json: &'a [u8],
    pub tokenizer_json: &'a [u8],
    pub preprocessor_json: &'a [u8],
    pub weights: &'a [u8],
}

impl Checkpoint {
    /// Loads a llava-hf checkpoint directory.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.into(),
                what: "not a directory",
            });
        }
        let config = LlavaConfig::from_file(&dir.join("config.json"))?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let processor = ImageProcessor::from_file(
            &dir.join("preprocessor_config.json"),
            config.vision.image_size as u32,
        )?;
        check_processor(&processor, &config, &dir.join("preprocessor_config.json"))?;
        check_tokenizer(&tokenizer, &config, &dir.join("tokenizer.json"))?;
        let files = weight_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; dexar does not modify
        // checkpoints while they are loaded (the usual contract of mmap loading).
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
            .map_err(|e| {
                ModelError::bad_file(
                    &files[0],
                    format!(
                        "cannot read safetensors weights ({e}); the file may be truncated or corrupt"
                    ),
                )
            })?;
        let shown = if files.len() == 1 { &files[0] } else { dir };
        check_weight_dtypes(tensors.tensors().iter().map(|(n, v)| (n, v.dtype())), shown)?;
        let vb = VarBuilder::from_backend(Box::new(tensors), opts.dtype, opts.device.clone());
        let model = LlavaModel::load(vb, &config).map_err(|e| weight_error(&files, e))?;
        let ckpt = Self {
            dir: dir.into(),
            config,
            tokenizer,
            processor,
            template: ChatTemplate::Llava15,
            model,
        };
        ckpt.log_loaded(start, files.len());
        Ok(ckpt)
    }

    /// Loads a checkpoint held in memory (the bundled demo model).
    pub fn from_memory(files: &MemoryCheckpoint<'_>, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        let label = Path::new(files.label);
        let config_path = label.join("config.json");
        let text = |bytes: &[u8], path: &Path| {
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|e| ModelError::bad_file(path, format!("not UTF-8 text ({e})")))
        };
        let value: serde_json::Value =
            serde_json::from_str(&text(files.config_json, &config_path)?)
                .map_err(|e| ModelError::bad_file(&config_path, e))?;
        let config = LlavaConfig::from_value(&value).map_err(|e| e.at(&config_path))?;
        let tokenizer =
            TextTokenizer::from_bytes(files.tokenizer_json, &label.join("tokenizer.json"))?;
        check_tokenizer(&tokenizer, &config, &label.join("tokenizer.json"))?;
        let preprocessor_path = label.join("preprocessor_config.json");
        let processor = ImageProcessor::from_json(
            &text(files.preprocessor_json, &preprocessor_path)?,
            config.vision.image_size as u32,
        )
        .map_err(|m| ModelError::bad_file(&preprocessor_path, m))?;
        let weights_path = label.join("model.safetensors");
        let vb =
            VarBuilder::from_buffered_safetensors(files.weights.to_vec(), opts.dtype, &opts.device)
                .map_err(|e| ModelError::bad_file(&weights_path, e))?;
        let model = LlavaModel::load(vb, &config).map_err(|e| weight_error(&[weights_path], e))?;
        let ckpt = Self {
            dir: label.into(),
            config,
            tokenizer,
            processor,
            template: ChatTemplate::Llava15,
            model,
        };
        ckpt.log_loaded(start, 1);
        Ok(ckpt)
    }

    fn log_loaded(&self, start: Instant, weight_files: usize) {
        let text = &self.config.text;
        tracing::debug!(
            model = %self.dir.display(),
            text_model = %text.model_type,
            layers = text.num_hidden_layers,
            heads = text.num_attention_heads,
            hidden = text.hidden_size,
            image_tokens = self.config.num_image_tokens(),
            weight_files,
            dtype = ?self.model.dtype,
            device = ?self.model.device.location(),
            ms = crate::millis_since(start),
            "model loaded"
        );
    }
}

impl Checkpoint {
    /// Tokenises a prompt that holds one `<image>` marker, expanding it.
    pub fn prepare_prompt(&self, text: &str) -> Result<PreparedPrompt> {
        self.tokenizer.prepare(
            text,
            self.config.image_token_index,
            self.config.num_image_tokens(),
        )
    }

    /// The conversation of `turns` and the question `user` in the
    /// checkpoint's chat template, prepared.
    pub fn prepare_chat(&self, turns: &[Turn], user: &str) -> Result<PreparedPrompt> {
        self.prepare_prompt(&self.template.render(turns, user))
    }

    /// A question in a single-turn template of the user's (`{prompt}`
    /// replaced), prepared.
    pub fn prepare_templated(&self, template: &str, user: &str) -> Result<PreparedPrompt> {
        self.prepare_prompt(&apply_template(template, user)?)
    }

    /// Preprocesses a decoded image and runs the vision tower and projector.
    pub fn encode_image(&self, img: &image::DynamicImage) -> Result<ImageFeatures> {
        self.encode_pixels(&self.preprocess(img)?)
    }

    /// The pixels the vision tower takes; refuses an image whose resizing
    /// would need too much memory.
    pub fn preprocess(&self, img: &image::DynamicImage) -> Result<Pixels> {
        self.processor
            .check_image_size(img.width(), img.height())
            .map_err(|m| ModelError::Input(format!("image: {m}")))?;
        Ok(self.processor.preprocess(img))
    }

    /// Runs the vision tower and projector on preprocessed pixels.
    pub fn encode_pixels(&self, pixels: &Pixels) -> Result<ImageFeatures> {
        let start = Instant::now();
        let features = self.model.encode_image(pixels)?;
        tracing::debug!(
            height = pixels.height,
            width = pixels.width,
            ms = crate::millis_since(start),
            "image encoded"
        );
        Ok(features)
    }
}

fn check_processor(p: &ImageProcessor, cfg: &LlavaConfig, path: &Path) -> Result<()> {
    let size = cfg.vision.image_size as u32;
    let square = crate::preprocess::Resize::Exact {
        height: size,
        width: size,
    };
    let square_output = p.do_center_crop || (p.do_resize && p.resize == square);
    if !square_output {
        return Err(ModelError::bad_file(
            path,
            format!(
                "without do_center_crop, size must be {{\"height\": {size}, \"width\": {size}}} (the vision tower's image_size)"
            ),
        ));
    }
    if p.do_center_crop && p.crop != (size, size) {
        return Err(ModelError::bad_file(
            path,
            format!(
                "crop_size {:?} does not match the vision tower's image_size {size}",
                p.crop
            ),
        ));
    }
    Ok(())
}

/// Every token the tokenizer can produce must have an embedding: a larger
/// tokenizer would fail at the first prompt using such a token.
fn check_tokenizer(tok: &TextTokenizer, cfg: &LlavaConfig, path: &Path) -> Result<()> {
    let vocab = cfg.text.vocab_size;
    match tok.largest_id() {
        Some(id) if id as usize >= vocab => Err(ModelError::bad_file(
            path,
            format!(
                "has token ids up to {id}, but config.json's text_config.vocab_size of {vocab} covers ids 0-{}; the tokenizer does not belong to these weights", vocab - 1
            ),
        )),
        _ => Ok(()),
    }
}

/// Weights must be stored as floating-point numbers: integers of the right
/// byte size would otherwise be converted into meaningless values.
fn check_weight_dtypes<'a>(
    tensors: impl Iterator<Item = (&'a String, safetensors::Dtype)>,
    shown: &Path,
) -> Result<()> {
    use safetensors::Dtype;
    for (name, dtype) in tensors {
        if !matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64) {
            return Err(ModelError::bad_file(
                shown,
                format!(
                    "tensor {name} is stored as {dtype:?}; weights must be floating point (F32, F16 or BF16)"
                ),
            ));
        }
    }
    Ok(())
}

fn weight_error(files: &[PathBuf], e: candle_core::Error) -> ModelError {
    let shown = files.first().cloned().unwrap_or_default();
    ModelError::bad_file(shown, format!("weights do not match config.json: {e}"))
}

/// The safetensors files of a checkpoint: a sharded index, a single file, or every `*.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = crate::error::read_checkpoint_text(&index, "no model.safetensors.index.json")?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::bad_file(&index, format!("not valid JSON ({e})")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::bad_file(&index, "no `weight_map` object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for f in map.values() {
            let name = f.as_str().ok_or_else(|| {
                ModelError::bad_file(&index, "weight_map values must be file names")
            })?;
            let p = dir.join(name);
            if !files.contains(&p) {
                if !p.exists() {
                    return Err(ModelError::MissingFile {
                        path: p,
                        what: "shard listed in model.safetensors.index.json is missing",
                    });
                }
                files.push(p);
            }
        }
        return checked_weight_files(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return checked_weight_files(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::bad_file(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::MissingFile {
            path: single,
            what: "no model.safetensors (nor a sharded index)",
        });
    }
    checked_weight_files(files)
}

/// Weight files are memory-mapped by candle: refuse a FIFO or a device first.
fn checked_weight_files(files: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    for f in &files {
        dexar_core::check_regular(f)
            .map_err(|e| ModelError::bad_file(f, format!("cannot read: {e}")))?;
    }
    Ok(files)
}
