//! `config.json` of SmolVLM (`smolvlm`) and Idefics3 (`idefics3`, the
//! architecture SmolVLM-256M/500M/2.2B were first published as): a LLaMA
//! `text_config`, a SigLIP `vision_config`, the connector's `scale_factor`
//! and the image token, with transformers' defaults for fields left out.

use serde::Serialize;
use serde_json::Value;

use crate::config::{
    object_field, str_field, text_config, token_id, usize_field, vision_config_or, ParseError,
    TextConfig, VisionConfig,
};

/// Which config.json `model_type` a checkpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmolFamily {
    /// `idefics3` (Idefics3ForConditionalGeneration).
    Idefics3,
    /// `smolvlm` (SmolVLMForConditionalGeneration).
    SmolVlm,
}

impl SmolFamily {
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "idefics3" => Some(Self::Idefics3),
            "smolvlm" => Some(Self::SmolVlm),
            _ => None,
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Self::Idefics3 => "idefics3",
            Self::SmolVlm => "smolvlm",
        }
    }
}

/// The whole SmolVLM configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmolVlmConfig {
    pub family: SmolFamily,
    pub text: TextConfig,
    pub vision: VisionConfig,
    /// The connector's pixel shuffle: `scale_factor^2` patches become one token.
    pub scale_factor: usize,
    pub image_token_id: u32,
    pub eos_token_id: Option<u32>,
}

impl SmolVlmConfig {
    pub fn from_value(v: &Value, family: SmolFamily) -> Result<Self, ParseError> {
        let vc = object_field(v, "vision_config")?;
        let vt = str_field(vc, "model_type")?;
        if let Some(vt) = vt.filter(|t| !matches!(t.as_str(), "smolvlm_vision" | "idefics3_vision"))
        {
            return Err(ParseError::Unsupported(format!("vision tower {vt}")));
        }
        // SmolVLMVisionConfig / Idefics3VisionConfig defaults
        let defaults = VisionConfig {
            hidden_size: 1152,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 16,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            hidden_act: "gelu_pytorch_tanh".into(),
            layer_norm_eps: 1e-6,
        };
        let vision = vision_config_or(vc, defaults)?;
        let tc = object_field(v, "text_config")?;
        let text = text_config(tc)?;
        let scale_factor = usize_field(v, "scale_factor", 2)?;
        let side = vision.image_size / vision.patch_size;
        if scale_factor == 0 || !side.is_multiple_of(scale_factor) {
            return Err(ParseError::Field(format!(
                "scale_factor ({scale_factor}) must divide the vision tower's {side} patches per side (image_size {} / patch_size {})",
                vision.image_size, vision.patch_size
            )));
        }
        // Both configurations default to 128257 (SmolLM2's `<image>`).
        let image_token_id = token_id(v, tc, "image_token_id")?.unwrap_or(128257);
        Ok(Self {
            family,
            text,
            vision,
            scale_factor,
            image_token_id,
            eos_token_id: token_id(v, tc, "eos_token_id")?,
        })
    }

    /// Image tokens per tile (and for the global view): `(side / scale)^2`.
    pub fn tokens_per_tile(&self) -> usize {
        let g = self.tile_grid_side();
        g * g
    }

    /// Side of a tile's grid of image tokens.
    pub fn tile_grid_side(&self) -> usize {
        self.vision.image_size / self.vision.patch_size / self.scale_factor
    }
}
