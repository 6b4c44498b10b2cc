//! A checkpoint of any supported family as one value: its config, tokenizer,
//! image processor, chat template and model, loaded from a directory (or the
//! bundled model's bytes), and the operations every front end uses on it
//! (preparing prompts, encoding images) whatever the family.

use candle_nn::VarBuilder;
use image::{DynamicImage, RgbImage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::chat::{apply_template, load_chat_template, ChatTemplate, Turn};
use crate::config::{LlavaConfig, TextConfig};
use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::llava::LlavaModel;
use crate::models::paligemma::{processor_text, PaliGemmaConfig, PaliGemmaModel};
use crate::models::qwen_vl::{QwenFamily, QwenImageProcessor, QwenVlConfig, QwenVlModel};
use crate::models::smolvlm::processor::{image_prompt, PromptTokens};
use crate::models::smolvlm::{SmolFamily, SmolImageProcessor, SmolVlmConfig, SmolVlmModel};
use crate::models::{ImageFeatures, VlModel};
use crate::options::LoadOptions;
use crate::preprocess::{ImageProcessor, Pixels};
use crate::prompt::{PreparedPrompt, TextTokenizer, IMAGE_MARKER};

/// The architectures dexar loads, as config.json's `model_type` names them.
pub const SUPPORTED_MODEL_TYPES: &str = "llava (LlavaForConditionalGeneration, llama or mistral text model), qwen2_vl (Qwen2VLForConditionalGeneration), qwen2_5_vl (Qwen2_5_VLForConditionalGeneration), qwen3_vl (Qwen3VLForConditionalGeneration), smolvlm (SmolVLMForConditionalGeneration), idefics3 (Idefics3ForConditionalGeneration) and paligemma (PaliGemmaForConditionalGeneration, gemma text model)";

/// How a family turns an image into pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageProcessing {
    /// CLIP: resize, centre crop (LLaVA); SigLIP: resize to the tower's
    /// size (PaliGemma).
    Clip(ImageProcessor),
    /// Qwen2-VL's `smart_resize` to the nearest valid size.
    Qwen(QwenImageProcessor),
    /// SmolVLM's tiles and global view.
    Smol(SmolImageProcessor),
}

impl ImageProcessing {
    /// The RGB pixels the model sees (resized, cropped): heatmaps are drawn over them.
    pub fn model_view(&self, image: &DynamicImage) -> Result<RgbImage> {
        match self {
            Self::Clip(p) => {
                self.checked_size(image)?;
                Ok(p.model_view(image))
            }
            Self::Qwen(p) => p.model_view(image).map_err(ModelError::ImageContent),
            Self::Smol(p) => Ok(p.model_view(image)),
        }
    }

    /// Refuses an image of `width` x `height` whose resizing would need too
    /// much memory (a very elongated picture resized to CLIP's shortest edge
    /// becomes gigantic; Qwen-VL's resize is bounded by its `max_pixels`).
    pub fn check_image_size(&self, width: u32, height: u32) -> std::result::Result<(), String> {
        match self {
            Self::Clip(p) => p.check_image_size(width, height),
            // Both resize to a bounded size (max_pixels; 4096 pixels a side).
            Self::Qwen(_) | Self::Smol(_) => Ok(()),
        }
    }

    fn checked_size(&self, image: &DynamicImage) -> Result<()> {
        self.check_image_size(image.width(), image.height())
            .map_err(|m| ModelError::Input(format!("image: {m}")))
    }

    /// Normalised channel-first pixels of the model's view.
    pub fn preprocess(&self, image: &DynamicImage) -> Result<Pixels> {
        match self {
            Self::Clip(p) => {
                self.checked_size(image)?;
                Ok(p.preprocess(image))
            }
            Self::Qwen(p) => p.preprocess(image).map_err(ModelError::ImageContent),
            Self::Smol(p) => Ok(p.preprocess(image)),
        }
    }
}

/// The image placeholder of a family's prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMarker {
    /// The text of the image token, expanded to one copy per image token
    /// (`<image>`, `<|image_pad|>`).
    pub text: String,
    pub token_id: u32,
    /// What `<image>` in a raw prompt stands for (Qwen:
    /// `<|vision_start|><|image_pad|><|vision_end|>`).
    pub raw_block: String,
}

/// Everything in a checkpoint directory: config, tokenizer, image processor,
/// chat template, model.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory, or a label such as `bundled:toy` for one loaded from memory.
    pub dir: PathBuf,
    pub tokenizer: TextTokenizer,
    pub processor: ImageProcessing,
    pub template: ChatTemplate,
    pub model: VlModel,
    pub image_marker: ImageMarker,
    /// Tokens that end an answer.
    pub eos_token_ids: Vec<u32>,
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
    /// Loads a checkpoint directory of any supported family.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.into(),
                what: "not a directory",
            });
        }
        let config_path = dir.join("config.json");
        let config = crate::config::read_config_json(&config_path)?;
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ckpt = match (model_type, QwenFamily::from_model_type(model_type)) {
            ("llava", _) => Self::load_llava(dir, &config, opts)?,
            ("paligemma", _) => Self::load_paligemma(dir, &config, opts)?,
            (_, Some(family)) => Self::load_qwen(dir, &config, family, opts)?,
            _ if SmolFamily::from_model_type(model_type).is_some() => {
                let family = SmolFamily::from_model_type(model_type).unwrap_or(SmolFamily::SmolVlm);
                Self::load_smolvlm(dir, &config, family, opts)?
            }
            _ => {
                return Err(ModelError::Unsupported {
                    path: config_path,
                    model_type: if model_type.is_empty() {
                        "<missing>".into()
                    } else {
                        model_type.into()
                    },
                })
            }
        };
        ckpt.log_loaded(start);
        Ok(ckpt)
    }

    fn load_llava(dir: &Path, value: &Value, opts: &LoadOptions) -> Result<Self> {
        let config = LlavaConfig::from_value(value).map_err(|e| e.at(&dir.join("config.json")))?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let processor = ImageProcessor::from_file(
            &dir.join("preprocessor_config.json"),
            config.vision.image_size as u32,
        )?;
        check_processor(
            &processor,
            config.vision.image_size,
            &dir.join("preprocessor_config.json"),
        )?;
        check_tokenizer(&tokenizer, &config.text, &dir.join("tokenizer.json"))?;
        let files = weight_files(dir)?;
        let vb = mmap_weights(dir, &files, opts)?;
        let model = LlavaModel::load(vb, &config).map_err(|e| weight_error(&files, e))?;
        Ok(Self::llava(dir.into(), config, tokenizer, processor, model))
    }

    fn llava(
        dir: PathBuf,
        config: LlavaConfig,
        tokenizer: TextTokenizer,
        processor: ImageProcessor,
        model: LlavaModel,
    ) -> Self {
        let eos = config
            .eos_token_id
            .or_else(|| tokenizer.token_to_id("</s>"));
        Self {
            dir,
            image_marker: ImageMarker {
                text: IMAGE_MARKER.into(),
                token_id: config.image_token_index,
                raw_block: IMAGE_MARKER.into(),
            },
            eos_token_ids: eos.into_iter().collect(),
            tokenizer,
            processor: ImageProcessing::Clip(processor),
            template: ChatTemplate::Llava15,
            model: VlModel::Llava(model),
        }
    }

    fn load_paligemma(dir: &Path, value: &Value, opts: &LoadOptions) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = PaliGemmaConfig::from_value(value).map_err(|e| e.at(&config_path))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = TextTokenizer::from_file(&tok_path)?;
        check_tokenizer(&tokenizer, &config.text, &tok_path)?;
        let pre_path = dir.join("preprocessor_config.json");
        let processor = ImageProcessor::from_file(&pre_path, config.vision.image_size as u32)?;
        check_processor(&processor, config.vision.image_size, &pre_path)?;
        let marker = tokenizer.id_to_token(config.image_token_index);
        if marker.as_deref() != Some(IMAGE_MARKER) {
            return Err(ModelError::bad_file(
                &tok_path,
                format!(
                    "token {} (the config's image_token_index) is not {IMAGE_MARKER}",
                    config.image_token_index
                ),
            ));
        }
        if config
            .bos_token_id
            .and_then(|b| tokenizer.id_to_token(b))
            .is_none()
        {
            return Err(ModelError::bad_file(
                &tok_path,
                "has no BOS token (config.json's bos_token_id), which PaliGemma prompts need after the image",
            ));
        }
        let files = weight_files(dir)?;
        let vb = mmap_weights(dir, &files, opts)?;
        let model = PaliGemmaModel::load(vb, &config).map_err(|e| weight_error(&files, e))?;
        let eos_token_ids = match generation_eos(dir)? {
            Some(ids) => ids,
            None => config.eos_token_id.into_iter().collect(),
        };
        Ok(Self {
            dir: dir.into(),
            image_marker: ImageMarker {
                text: IMAGE_MARKER.into(),
                token_id: config.image_token_index,
                raw_block: IMAGE_MARKER.into(),
            },
            eos_token_ids,
            tokenizer,
            processor: ImageProcessing::Clip(processor),
            template: ChatTemplate::PaliGemma,
            model: VlModel::PaliGemma(model),
        })
    }

    fn load_qwen(
        dir: &Path,
        value: &Value,
        family: QwenFamily,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = QwenVlConfig::from_value(value, family).map_err(|e| e.at(&config_path))?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        check_tokenizer(&tokenizer, &config.text, &dir.join("tokenizer.json"))?;
        let pre_path = dir.join("preprocessor_config.json");
        let text = crate::error::read_checkpoint_text(&pre_path, "no preprocessor_config.json")?;
        let mut processor =
            QwenImageProcessor::from_json(&text).map_err(|m| ModelError::bad_file(&pre_path, m))?;
        let v = &config.vision;
        if (
            processor.patch_size,
            processor.merge_size,
            processor.temporal_patch_size,
        ) != (v.patch_size, v.spatial_merge_size, v.temporal_patch_size)
        {
            return Err(ModelError::bad_file(
                &pre_path,
                format!(
                    "patch_size {}, merge_size {}, temporal_patch_size {} do not match the vision tower's {}, {}, {}",
                    processor.patch_size,
                    processor.merge_size,
                    processor.temporal_patch_size,
                    v.patch_size,
                    v.spatial_merge_size,
                    v.temporal_patch_size
                ),
            ));
        }
        if let Some(max) = opts.max_pixels {
            processor = processor
                .with_max_pixels(max)
                .map_err(|m| ModelError::Input(format!("max pixels: {m}")))?;
        }
        let template = load_chat_template(dir)?;
        let name = |id: u32| tokenizer.id_to_token(id);
        let (pad, start, end) = (
            name(config.image_token_id),
            name(config.vision_start_token_id),
            name(config.vision_end_token_id),
        );
        let Some(pad) = pad else {
            return Err(ModelError::bad_file(
                dir.join("tokenizer.json"),
                format!(
                    "has no token {} (the config's image_token_id)",
                    config.image_token_id
                ),
            ));
        };
        let raw_block = match (start, end) {
            (Some(s), Some(e)) => format!("{s}{pad}{e}"),
            _ => pad.clone(),
        };
        let files = weight_files(dir)?;
        let vb = mmap_weights(dir, &files, opts)?;
        let model = QwenVlModel::load(vb, &config).map_err(|e| weight_error(&files, e))?;
        let eos_token_ids = generation_eos(dir)?.unwrap_or_else(|| config.eos_token_ids.clone());
        Ok(Self {
            dir: dir.into(),
            image_marker: ImageMarker {
                text: pad,
                token_id: config.image_token_id,
                raw_block,
            },
            eos_token_ids,
            tokenizer,
            processor: ImageProcessing::Qwen(processor),
            template,
            model: VlModel::QwenVl(model),
        })
    }

    fn load_smolvlm(
        dir: &Path,
        value: &Value,
        family: SmolFamily,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = SmolVlmConfig::from_value(value, family).map_err(|e| e.at(&config_path))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = TextTokenizer::from_file(&tok_path)?;
        check_tokenizer(&tokenizer, &config.text, &tok_path)?;
        let pre_path = dir.join("preprocessor_config.json");
        let text = crate::error::read_checkpoint_text(&pre_path, "no preprocessor_config.json")?;
        let processor =
            SmolImageProcessor::from_json(&text).map_err(|m| ModelError::bad_file(&pre_path, m))?;
        check_tiles(&processor, &config, &pre_path)?;
        check_image_seq_len(dir, &config)?;
        let names = PromptTokens::default();
        for token in [&names.image, &names.fake, &names.global] {
            if tokenizer.token_to_id(token).is_none() {
                return Err(ModelError::bad_file(
                    &tok_path,
                    format!("has no {token} token, which SmolVLM's image prompt needs"),
                ));
            }
        }
        if tokenizer.id_to_token(config.image_token_id).as_deref() != Some(names.image.as_str()) {
            return Err(ModelError::bad_file(
                &tok_path,
                format!(
                    "token id {} (the config's image_token_id) is not {} in this tokenizer",
                    config.image_token_id, names.image
                ),
            ));
        }
        let template = load_chat_template(dir)?;
        let files = weight_files(dir)?;
        let vb = mmap_weights(dir, &files, opts)?;
        let model = SmolVlmModel::load(vb, &config).map_err(|e| weight_error(&files, e))?;
        let eos_token_ids = match generation_eos(dir)? {
            Some(ids) => ids,
            None => config
                .eos_token_id
                .or_else(|| tokenizer.token_to_id("<end_of_utterance>"))
                .into_iter()
                .collect(),
        };
        Ok(Self {
            dir: dir.into(),
            image_marker: ImageMarker {
                text: names.image.clone(),
                token_id: config.image_token_id,
                raw_block: names.image,
            },
            eos_token_ids,
            tokenizer,
            processor: ImageProcessing::Smol(processor),
            template,
            model: VlModel::SmolVlm(model),
        })
    }

    /// Loads a LLaVA checkpoint held in memory (the bundled demo model).
    pub fn from_memory(files: &MemoryCheckpoint<'_>, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        let label = Path::new(files.label);
        let config_path = label.join("config.json");
        let text = |bytes: &[u8], path: &Path| {
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|e| ModelError::bad_file(path, format!("not UTF-8 text ({e})")))
        };
        let value: Value = serde_json::from_str(&text(files.config_json, &config_path)?)
            .map_err(|e| ModelError::bad_file(&config_path, e))?;
        let config = LlavaConfig::from_value(&value).map_err(|e| e.at(&config_path))?;
        let tokenizer =
            TextTokenizer::from_bytes(files.tokenizer_json, &label.join("tokenizer.json"))?;
        check_tokenizer(&tokenizer, &config.text, &label.join("tokenizer.json"))?;
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
        let ckpt = Self::llava(label.into(), config, tokenizer, processor, model);
        ckpt.log_loaded(start);
        Ok(ckpt)
    }

    /// A checkpoint made of parts in memory (synthetic benchmark models).
    pub fn from_parts(
        dir: PathBuf,
        tokenizer: TextTokenizer,
        processor: ImageProcessing,
        template: ChatTemplate,
        model: VlModel,
        image_marker: ImageMarker,
    ) -> Self {
        let eos_token_ids = tokenizer.token_to_id("</s>").into_iter().collect();
        Self {
            dir,
            tokenizer,
            processor,
            template,
            model,
            image_marker,
            eos_token_ids,
        }
    }

    fn log_loaded(&self, start: Instant) {
        let text = self.text_config();
        tracing::debug!(
            model = %self.dir.display(),
            family = self.model_type(),
            text_model = %text.model_type,
            layers = text.num_hidden_layers,
            heads = text.num_attention_heads,
            hidden = text.hidden_size,
            dtype = ?self.model.dtype(),
            device = ?self.model.device().location(),
            ms = crate::millis_since(start),
            "model loaded"
        );
    }

    /// config.json's `model_type`: `llava`, `qwen2_vl`, `qwen2_5_vl`,
    /// `qwen3_vl`, `smolvlm` or `idefics3`.
    pub fn model_type(&self) -> &'static str {
        match &self.model {
            VlModel::Llava(_) => "llava",
            VlModel::QwenVl(m) => m.config.family.model_type(),
            VlModel::SmolVlm(m) => m.config.family.model_type(),
            VlModel::PaliGemma(_) => "paligemma",
        }
    }

    pub fn decoder(&self) -> &Decoder {
        self.model.decoder()
    }

    /// The decoder's configuration.
    pub fn text_config(&self) -> &TextConfig {
        self.model.text_config()
    }

    /// The parsed configuration as JSON (what a session's config hash is
    /// computed from).
    pub fn config_json(&self) -> Value {
        match &self.model {
            VlModel::Llava(m) => serde_json::to_value(&m.config),
            VlModel::QwenVl(m) => serde_json::to_value(&m.config),
            VlModel::SmolVlm(m) => serde_json::to_value(&m.config),
            VlModel::PaliGemma(m) => serde_json::to_value(&m.config),
        }
        .unwrap_or_default()
    }

    /// The LLaVA configuration, for a LLaVA checkpoint.
    pub fn llava_config(&self) -> Option<&LlavaConfig> {
        match &self.model {
            VlModel::Llava(m) => Some(&m.config),
            VlModel::QwenVl(_) | VlModel::SmolVlm(_) | VlModel::PaliGemma(_) => None,
        }
    }

    /// Side in pixels of one heatmap cell of the model's view (LLaVA's patch,
    /// Qwen-VL's merged patch, SmolVLM's shuffled block of patches of a tile).
    pub fn cell_pixels(&self) -> usize {
        match (&self.model, &self.processor) {
            (VlModel::Llava(m), _) => m.config.vision.patch_size,
            (VlModel::SmolVlm(m), _) => m.config.vision.patch_size * m.config.scale_factor,
            (VlModel::PaliGemma(m), _) => m.config.vision.patch_size,
            (_, ImageProcessing::Qwen(p)) => p.factor(),
            (VlModel::QwenVl(m), _) => {
                m.config.vision.patch_size * m.config.vision.spatial_merge_size
            }
        }
    }

    /// Tokenises a raw prompt that holds the image once (`<image>`, or the
    /// family's own image token), expanding it for `image`. PaliGemma's
    /// processor then adds BOS after the image and `\n` at the end, and the
    /// tokenizer adds nothing more.
    pub fn prepare_prompt(&self, text: &str, image: &ImageFeatures) -> Result<PreparedPrompt> {
        let m = &self.image_marker;
        if let VlModel::SmolVlm(model) = &self.model {
            let (rows, cols) = image.tiles();
            let expansion = image_prompt(
                rows,
                cols,
                model.config.tokens_per_tile(),
                &PromptTokens::default(),
            );
            return self.tokenizer.prepare_blocks(
                text,
                &m.text,
                m.token_id,
                &expansion,
                &image.block_sizes(),
            );
        }
        if let VlModel::PaliGemma(model) = &self.model {
            let bos = model
                .config
                .bos_token_id
                .and_then(|b| self.tokenizer.id_to_token(b))
                .unwrap_or_default();
            return self.tokenizer.prepare_with_marker_special(
                &processor_text(text, &m.text, &bos),
                &m.text,
                m.token_id,
                image.num_tokens(),
                false,
            );
        }
        let text = if m.text != IMAGE_MARKER
            && !text.contains(&m.text)
            && text.matches(IMAGE_MARKER).count() == 1
        {
            text.replacen(IMAGE_MARKER, &m.raw_block, 1)
        } else {
            text.to_string()
        };
        self.tokenizer
            .prepare_with_marker(&text, &m.text, m.token_id, image.num_tokens())
    }

    /// The conversation of `turns` and the question `user` in the
    /// checkpoint's chat template, prepared for `image`.
    pub fn prepare_chat(
        &self,
        turns: &[Turn],
        user: &str,
        image: &ImageFeatures,
    ) -> Result<PreparedPrompt> {
        self.prepare_prompt(&self.template.render(turns, user)?, image)
    }

    /// A question in a single-turn template of the user's (`{prompt}`
    /// replaced), prepared.
    pub fn prepare_templated(
        &self,
        template: &str,
        user: &str,
        image: &ImageFeatures,
    ) -> Result<PreparedPrompt> {
        self.prepare_prompt(&apply_template(template, user)?, image)
    }

    /// The RGB pixels the model sees of `img`.
    pub fn model_view(&self, img: &DynamicImage) -> Result<RgbImage> {
        self.processor.model_view(img)
    }

    /// Preprocesses a decoded image and runs the vision tower and projector.
    pub fn encode_image(&self, img: &DynamicImage) -> Result<ImageFeatures> {
        self.encode_pixels(&self.processor.preprocess(img)?)
    }

    /// Runs the vision tower and projector on preprocessed pixels.
    pub fn encode_pixels(&self, pixels: &Pixels) -> Result<ImageFeatures> {
        let start = Instant::now();
        let features = match (&self.model, &self.processor) {
            (VlModel::Llava(m), _) => m.encode_image(pixels)?,
            (VlModel::PaliGemma(m), _) => m.encode_image(pixels)?,
            (VlModel::QwenVl(m), ImageProcessing::Qwen(p)) => m.encode_pixels(pixels, p)?,
            (VlModel::QwenVl(_), _) => {
                return Err(ModelError::Setting(
                    "a Qwen-VL model needs its own image processor".into(),
                ))
            }
            (VlModel::SmolVlm(m), _) => m.encode_pixels(pixels)?,
        };
        tracing::debug!(
            height = pixels.height,
            width = pixels.width,
            grid = ?(features.grid.height, features.grid.width),
            ms = crate::millis_since(start),
            "image encoded"
        );
        Ok(features)
    }
}

/// `eos_token_id` of generation_config.json (a number or a list), if the file has one.
fn generation_eos(dir: &Path) -> Result<Option<Vec<u32>>> {
    let path = dir.join("generation_config.json");
    let Some(text) = crate::error::read_optional_text(&path)? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::bad_file(&path, format!("not valid JSON ({e})")))?;
    Ok(match v.get("eos_token_id") {
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|x| x.as_u64().map(|n| n as u32))
                .collect(),
        ),
        Some(x) => x.as_u64().map(|n| vec![n as u32]),
        None => None,
    })
}

fn mmap_weights(dir: &Path, files: &[PathBuf], opts: &LoadOptions) -> Result<VarBuilder<'static>> {
    // SAFETY: the files are memory-mapped read-only; dexar does not modify
    // checkpoints while they are loaded (the usual contract of mmap loading).
    let tensors =
        unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }.map_err(|e| {
            ModelError::bad_file(
                &files[0],
                format!(
                    "cannot read safetensors weights ({e}); the file may be truncated or corrupt"
                ),
            )
        })?;
    let shown = if files.len() == 1 { &files[0] } else { dir };
    check_weight_dtypes(tensors.tensors().iter().map(|(n, v)| (n, v.dtype())), shown)?;
    Ok(VarBuilder::from_backend(
        Box::new(tensors),
        opts.dtype,
        opts.device.clone(),
    ))
}

/// SmolVLM's tiles must be what the vision tower and the connector take:
/// squares of the tower's `image_size`, whole blocks of `scale_factor`
/// patches; otherwise the tile size does not divide the resized image into
/// the token blocks the prompt announces.
fn check_tiles(p: &SmolImageProcessor, cfg: &SmolVlmConfig, path: &Path) -> Result<()> {
    let v = &cfg.vision;
    let block = v.patch_size * cfg.scale_factor;
    if p.tile as usize != v.image_size || !(p.tile as usize).is_multiple_of(block) {
        return Err(ModelError::bad_file(
            path,
            format!(
                "max_image_size.longest_edge {} must be the vision tower's image_size {} (tiles of whole {block}-pixel blocks: patch_size {} x scale_factor {}); the tiles would not match the image tokens",
                p.tile, v.image_size, v.patch_size, cfg.scale_factor
            ),
        ));
    }
    Ok(())
}

/// processor_config.json's `image_seq_len`, when given, must be the tokens
/// a tile makes: the processor writes that many `<image>` per block.
fn check_image_seq_len(dir: &Path, cfg: &SmolVlmConfig) -> Result<()> {
    let path = dir.join("processor_config.json");
    let Some(text) = crate::error::read_optional_text(&path)? else {
        return Ok(());
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::bad_file(&path, format!("not valid JSON ({e})")))?;
    match v.get("image_seq_len").map(Value::as_u64) {
        None => Ok(()),
        Some(Some(n)) if n as usize == cfg.tokens_per_tile() => Ok(()),
        Some(n) => Err(ModelError::bad_file(
            &path,
            format!(
                "image_seq_len {} does not match the {} tokens a tile makes ((image_size / patch_size / scale_factor)^2)",
                n.map_or("(not a number)".to_string(), |n| n.to_string()),
                cfg.tokens_per_tile()
            ),
        )),
    }
}

/// The processor must output the vision tower's `image_size` square.
fn check_processor(p: &ImageProcessor, image_size: usize, path: &Path) -> Result<()> {
    let size = image_size as u32;
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
fn check_tokenizer(tok: &TextTokenizer, text: &TextConfig, path: &Path) -> Result<()> {
    let vocab = text.vocab_size;
    match tok.largest_id() {
        Some(id) if id as usize >= vocab => Err(ModelError::bad_file(
            path,
            format!(
                "has token ids up to {id}, but config.json's vocab_size of {vocab} covers ids 0-{}; the tokenizer does not belong to these weights", vocab - 1
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
