//! The LLaVA model (vision tower + projector + decoder) in either weight-name
//! layout of llava-hf checkpoints.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::LlavaConfig;
use crate::decoder::Decoder;
use crate::models::ImageFeatures;
use crate::preprocess::Pixels;
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
        Ok(ImageFeatures {
            tokens: self.image_encoder.forward(&t)?.squeeze(0)?,
            grid: self.config.grid(),
            deepstack: Vec::new(),
            layout: Vec::new(),
        })
    }
}
