//! `config.json` of a llava-hf checkpoint, with the defaults transformers uses
//! for fields a checkpoint leaves out (llava-1.5's text_config lists only a few).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

use crate::error::{ModelError, Result};

/// The vision tower (CLIP ViT) configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        // CLIPVisionConfig defaults
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl VisionConfig {
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// The decoder configuration (LLaMA, Mistral, or a Qwen-VL text model).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub hidden_act: String,
    pub tie_word_embeddings: bool,
    pub sliding_window: Option<usize>,
    /// Family-specific decoder features (none for LLaMA and Mistral).
    #[serde(default)]
    pub variant: crate::decoder::DecoderVariant,
}

/// How image features are chosen from the vision tower.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSelect {
    /// Drop the CLS token (LLaVA-1.5).
    Default,
    /// Keep the CLS token.
    Full,
}

/// The whole LLaVA configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlavaConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub image_token_index: u32,
    pub projector_hidden_act: String,
    /// One or more hidden-state indices of the vision tower (negative from the end);
    /// several are concatenated along the feature axis.
    pub vision_feature_layers: Vec<i64>,
    pub vision_feature_select: FeatureSelect,
    pub eos_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
}

impl LlavaConfig {
    /// Number of image tokens one image expands into.
    pub fn num_image_tokens(&self) -> usize {
        let g = self.vision.grid_side();
        g * g + usize::from(self.vision_feature_select == FeatureSelect::Full)
    }

    /// The patch grid (height, width).
    pub fn grid(&self) -> dexar_core::Grid {
        let g = self.vision.grid_side();
        dexar_core::Grid::new(g, g)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_value(&read_config_json(path)?).map_err(|e| e.at(path))
    }

    pub fn from_value(v: &Value) -> std::result::Result<Self, ParseError> {
        let model_type = str_field(v, "model_type").unwrap_or_default();
        if model_type != "llava" {
            return Err(ParseError::Unsupported(if model_type.is_empty() {
                "<missing>".into()
            } else {
                model_type
            }));
        }
        let empty = Value::Object(Default::default());
        let vc = v.get("vision_config").unwrap_or(&empty);
        let vt = str_field(vc, "model_type").unwrap_or_else(|| "clip_vision_model".into());
        if vt != "clip_vision_model" {
            return Err(ParseError::Unsupported(format!("vision tower {vt}")));
        }
        let d = VisionConfig::default();
        let vision = VisionConfig {
            hidden_size: usize_field(vc, "hidden_size", d.hidden_size)?,
            intermediate_size: usize_field(vc, "intermediate_size", d.intermediate_size)?,
            num_hidden_layers: usize_field(vc, "num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: usize_field(vc, "num_attention_heads", d.num_attention_heads)?,
            image_size: usize_field(vc, "image_size", d.image_size)?,
            patch_size: usize_field(vc, "patch_size", d.patch_size)?,
            num_channels: usize_field(vc, "num_channels", d.num_channels)?,
            hidden_act: str_field(vc, "hidden_act").unwrap_or(d.hidden_act),
            layer_norm_eps: f64_field(vc, "layer_norm_eps", d.layer_norm_eps)?,
        };
        let tc = v.get("text_config").unwrap_or(&empty);
        let tt = str_field(tc, "model_type").unwrap_or_else(|| "llama".into());
        let mistral = match tt.as_str() {
            "llama" => false,
            "mistral" => true,
            other => return Err(ParseError::Unsupported(format!("text model {other}"))),
        };
        // LlamaConfig / MistralConfig defaults
        let hidden_size = usize_field(tc, "hidden_size", 4096)?;
        let heads = usize_field(tc, "num_attention_heads", 32)?;
        let kv_heads = usize_field(tc, "num_key_value_heads", if mistral { 8 } else { heads })?;
        let head_dim = match tc.get("head_dim") {
            Some(Value::Number(n)) => n.as_u64().ok_or(ParseError::Field(
                "text_config.head_dim must be a positive integer".into(),
            ))? as usize,
            _ => hidden_size / heads.max(1),
        };
        let sliding_window = match tc.get("sliding_window") {
            Some(Value::Number(n)) => n.as_u64().map(|w| w as usize),
            Some(Value::Null) => None,
            None if mistral => Some(4096),
            _ => None,
        };
        let text = TextConfig {
            model_type: tt,
            hidden_size,
            intermediate_size: usize_field(
                tc,
                "intermediate_size",
                if mistral { 14336 } else { 11008 },
            )?,
            num_hidden_layers: usize_field(tc, "num_hidden_layers", 32)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: usize_field(tc, "vocab_size", 32000)?,
            max_position_embeddings: usize_field(
                tc,
                "max_position_embeddings",
                if mistral { 32768 } else { 2048 },
            )?,
            rms_norm_eps: f64_field(tc, "rms_norm_eps", 1e-6)?,
            rope_theta: match tc.get("rope_parameters").and_then(|r| r.get("rope_theta")) {
                Some(x) => x.as_f64().ok_or(ParseError::Field(
                    "rope_parameters.rope_theta must be a number".into(),
                ))?,
                None => f64_field(tc, "rope_theta", 10000.0)?,
            },
            hidden_act: str_field(tc, "hidden_act").unwrap_or_else(|| "silu".into()),
            tie_word_embeddings: tc
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            sliding_window,
            variant: Default::default(),
        };
        for key in ["rope_parameters", "rope_scaling"] {
            let kind = tc
                .get(key)
                .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
                .and_then(Value::as_str);
            if let Some(kind) = kind.filter(|k| *k != "default") {
                return Err(ParseError::Field(format!(
                    "text_config.{key}: rope type `{kind}` is not supported"
                )));
            }
        }
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(ParseError::Field(format!(
                "text_config: num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        if text.hidden_act != "silu" {
            return Err(ParseError::Field(format!(
                "text_config.hidden_act `{}` is not supported (silu only)",
                text.hidden_act
            )));
        }
        if vision.num_attention_heads == 0
            || !vision
                .hidden_size
                .is_multiple_of(vision.num_attention_heads)
        {
            return Err(ParseError::Field(format!(
                "vision_config: num_attention_heads ({}) must be a positive divisor of hidden_size ({})",
                vision.num_attention_heads, vision.hidden_size
            )));
        }
        if vision.patch_size == 0
            || vision.image_size == 0
            || !vision.image_size.is_multiple_of(vision.patch_size)
        {
            return Err(ParseError::Field(format!(
                "vision_config: image_size ({}) must be a positive multiple of patch_size ({})",
                vision.image_size, vision.patch_size
            )));
        }
        let vision_feature_layers = match v.get("vision_feature_layer") {
            None => vec![-2],
            Some(Value::Number(n)) => vec![n.as_i64().ok_or(ParseError::Field(
                "vision_feature_layer must be an integer".into(),
            ))?],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_i64().ok_or(ParseError::Field(
                        "vision_feature_layer must hold integers".into(),
                    ))
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(_) => {
                return Err(ParseError::Field(
                    "vision_feature_layer must be an integer or a list".into(),
                ))
            }
        };
        let nl = vision.num_hidden_layers as i64;
        for &k in &vision_feature_layers {
            if k > nl || k < -(nl + 1) {
                return Err(ParseError::Field(format!(
                    "vision_feature_layer {k} is out of range for {nl} vision layers"
                )));
            }
        }
        let vision_feature_select = match str_field(v, "vision_feature_select_strategy").as_deref()
        {
            None | Some("default") => FeatureSelect::Default,
            Some("full") => FeatureSelect::Full,
            Some(other) => {
                return Err(ParseError::Field(format!(
                    "vision_feature_select_strategy `{other}` is not supported (default or full)"
                )))
            }
        };
        let id = |key: &str| -> Option<u32> {
            let x = v.get(key).or_else(|| tc.get(key))?;
            x.as_u64()
                .or_else(|| x.as_array()?.first()?.as_u64())
                .map(|n| n as u32)
        };
        Ok(Self {
            vision,
            text,
            image_token_index: id("image_token_index")
                .or_else(|| id("image_token_id"))
                .unwrap_or(32000),
            projector_hidden_act: str_field(v, "projector_hidden_act")
                .unwrap_or_else(|| "gelu".into()),
            vision_feature_layers,
            vision_feature_select,
            eos_token_id: id("eos_token_id"),
            bos_token_id: id("bos_token_id"),
        })
    }
}

/// The JSON of a checkpoint's `config.json`, with errors that name the file.
pub(crate) fn read_config_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.into(),
            what: "no config.json",
        },
        _ => ModelError::bad_file(path, format!("cannot read: {e}")),
    })?;
    serde_json::from_str(&text).map_err(|e| {
        ModelError::bad_file(
            path,
            format!("not valid JSON ({e}); re-download or re-export the checkpoint"),
        )
    })
}

/// Why a `config.json` was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Field(String),
}

impl ParseError {
    /// The error for a config read from `path`.
    pub fn at(self, path: &Path) -> ModelError {
        match self {
            ParseError::Unsupported(model_type) => ModelError::Unsupported {
                path: path.into(),
                model_type,
            },
            ParseError::Field(message) => ModelError::bad_file(path, message),
        }
    }
}

pub(crate) fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

pub(crate) fn usize_field(
    v: &Value,
    key: &str,
    default: usize,
) -> std::result::Result<usize, ParseError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| ParseError::Field(format!("`{key}` must be a non-negative integer"))),
    }
}

pub(crate) fn f64_field(
    v: &Value,
    key: &str,
    default: f64,
) -> std::result::Result<f64, ParseError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| ParseError::Field(format!("`{key}` must be a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vision: Value) -> Value {
        serde_json::json!({"model_type": "llava", "vision_config": vision, "text_config": {}})
    }

    #[test]
    fn vision_mistakes_name_the_field_at_fault() {
        let bad_heads = config(serde_json::json!({"num_attention_heads": 0}));
        let e = LlavaConfig::from_value(&bad_heads).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads (0)"), "{e}");
        assert!(!e.contains("patch_size"), "{e}");
        let bad_patch = config(serde_json::json!({"image_size": 30, "patch_size": 14}));
        let e = LlavaConfig::from_value(&bad_patch).unwrap_err().to_string();
        assert!(
            e.contains("image_size (30)") && e.contains("patch_size (14)"),
            "{e}"
        );
        let ok = config(serde_json::json!({"image_size": 28, "patch_size": 14}));
        assert_eq!(LlavaConfig::from_value(&ok).unwrap().grid().len(), 4);
        let e = LlavaConfig::from_value(&serde_json::json!({"model_type": "blip"}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unsupported model: blip");
    }
}
