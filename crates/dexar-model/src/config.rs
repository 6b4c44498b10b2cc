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
        if !v.is_object() {
            return Err(ParseError::Field(
                "the file must hold a JSON object of settings".into(),
            ));
        }
        let model_type = str_field(v, "model_type")?.unwrap_or_default();
        if model_type != "llava" {
            return Err(ParseError::Unsupported(if model_type.is_empty() {
                "<missing>".into()
            } else {
                model_type
            }));
        }
        let vc = object_field(v, "vision_config")?;
        let vt = str_field(vc, "model_type")?.unwrap_or_else(|| "clip_vision_model".into());
        if vt != "clip_vision_model" {
            return Err(ParseError::Unsupported(format!("vision tower {vt}")));
        }
        let vision = vision_config(vc)?;
        let tc = object_field(v, "text_config")?;
        let text = text_config(tc)?;
        let vision_feature_layers = match v.get("vision_feature_layer") {
            None => vec![-2],
            Some(Value::Number(n)) => vec![n.as_i64().ok_or(ParseError::Field(
                "vision_feature_layer must be an integer".into(),
            ))?],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|x| {
                    x.as_i64().ok_or(ParseError::Field(
                        "vision_feature_layer must hold integers".into(),
                    ))
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(_) => {
                return Err(ParseError::Field(
                    "vision_feature_layer must be an integer or a non-empty list".into(),
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
        let vision_feature_select = match str_field(v, "vision_feature_select_strategy")?.as_deref()
        {
            None | Some("default") => FeatureSelect::Default,
            Some("full") => FeatureSelect::Full,
            Some(other) => {
                return Err(ParseError::Field(format!(
                    "vision_feature_select_strategy `{other}` is not supported (default or full)"
                )))
            }
        };
        let projector_hidden_act =
            str_field(v, "projector_hidden_act")?.unwrap_or_else(|| "gelu".into());
        check_activation("projector_hidden_act", &projector_hidden_act)?;
        let image_token_index = match token_id(v, tc, "image_token_index")? {
            Some(id) => Some(id),
            None => token_id(v, tc, "image_token_id")?,
        };
        Ok(Self {
            vision,
            text,
            image_token_index: image_token_index.unwrap_or(32000),
            projector_hidden_act,
            vision_feature_layers,
            vision_feature_select,
            eos_token_id: token_id(v, tc, "eos_token_id")?,
            bos_token_id: token_id(v, tc, "bos_token_id")?,
        })
    }
}

/// `vision_config`, with CLIPVisionConfig's defaults.
fn vision_config(vc: &Value) -> std::result::Result<VisionConfig, ParseError> {
    vision_config_or(vc, VisionConfig::default())
}

/// `vision_config` with defaults `d` for the fields it leaves out (a ViT of
/// CLIP's layout: SigLIP's towers have the same fields).
pub(crate) fn vision_config_or(
    vc: &Value,
    d: VisionConfig,
) -> std::result::Result<VisionConfig, ParseError> {
    let at = |e: ParseError| e.within("vision_config");
    let vision = VisionConfig {
        hidden_size: usize_field(vc, "hidden_size", d.hidden_size).map_err(at)?,
        intermediate_size: usize_field(vc, "intermediate_size", d.intermediate_size).map_err(at)?,
        num_hidden_layers: usize_field(vc, "num_hidden_layers", d.num_hidden_layers).map_err(at)?,
        num_attention_heads: usize_field(vc, "num_attention_heads", d.num_attention_heads)
            .map_err(at)?,
        image_size: usize_field(vc, "image_size", d.image_size).map_err(at)?,
        patch_size: usize_field(vc, "patch_size", d.patch_size).map_err(at)?,
        num_channels: usize_field(vc, "num_channels", d.num_channels).map_err(at)?,
        hidden_act: str_field(vc, "hidden_act")
            .map_err(at)?
            .unwrap_or(d.hidden_act),
        layer_norm_eps: f64_field(vc, "layer_norm_eps", d.layer_norm_eps).map_err(at)?,
    };
    check_activation("vision_config.hidden_act", &vision.hidden_act)?;
    check_eps("vision_config.layer_norm_eps", vision.layer_norm_eps)?;
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
    if vision.image_size > MAX_VISION_IMAGE_SIZE {
        return Err(ParseError::Field(format!(
            "vision_config: image_size ({}) is larger than the {MAX_VISION_IMAGE_SIZE} pixels dexar supports",
            vision.image_size
        )));
    }
    if vision.num_channels != 3 {
        return Err(ParseError::Field(format!(
            "vision_config: num_channels ({}) must be 3 (RGB)",
            vision.num_channels
        )));
    }
    Ok(vision)
}

/// `text_config`, with LlamaConfig's or MistralConfig's defaults.
pub(crate) fn text_config(tc: &Value) -> std::result::Result<TextConfig, ParseError> {
    let at = |e: ParseError| e.within("text_config");
    let tt = str_field(tc, "model_type")
        .map_err(at)?
        .unwrap_or_else(|| "llama".into());
    let mistral = match tt.as_str() {
        "llama" => false,
        "mistral" => true,
        other => return Err(ParseError::Unsupported(format!("text model {other}"))),
    };
    let hidden_size = usize_field(tc, "hidden_size", 4096).map_err(at)?;
    let heads = usize_field(tc, "num_attention_heads", 32).map_err(at)?;
    let kv_heads =
        usize_field(tc, "num_key_value_heads", if mistral { 8 } else { heads }).map_err(at)?;
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ParseError::Field(format!(
            "text_config: num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
        )));
    }
    let head_dim = usize_field(tc, "head_dim", hidden_size / heads).map_err(at)?;
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(ParseError::Field(format!(
            "text_config: head_dim ({head_dim}) must be a positive even number (rotary embeddings rotate pairs)"
        )));
    }
    let sliding_window = match tc.get("sliding_window") {
        None if mistral => Some(4096),
        None | Some(Value::Null) => None,
        Some(_) => Some(usize_field(tc, "sliding_window", 0).map_err(at)?),
    };
    if sliding_window == Some(0) {
        return Err(ParseError::Field(
            "text_config.sliding_window must be at least 1 (or null for none)".into(),
        ));
    }
    let rope_theta = match tc.get("rope_parameters").and_then(|r| r.get("rope_theta")) {
        Some(x) => x.as_f64().ok_or(ParseError::Field(
            "text_config.rope_parameters.rope_theta must be a number".into(),
        ))?,
        None => f64_field(tc, "rope_theta", 10000.0).map_err(at)?,
    };
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(ParseError::Field(format!(
            "text_config.rope_theta ({rope_theta}) must be a positive number such as 10000"
        )));
    }
    let text = TextConfig {
        model_type: tt,
        hidden_size,
        intermediate_size: usize_field(
            tc,
            "intermediate_size",
            if mistral { 14336 } else { 11008 },
        )
        .map_err(at)?,
        num_hidden_layers: usize_field(tc, "num_hidden_layers", 32).map_err(at)?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        vocab_size: usize_field(tc, "vocab_size", 32000).map_err(at)?,
        max_position_embeddings: usize_field(
            tc,
            "max_position_embeddings",
            if mistral { 32768 } else { 2048 },
        )
        .map_err(at)?,
        rms_norm_eps: f64_field(tc, "rms_norm_eps", 1e-6).map_err(at)?,
        rope_theta,
        hidden_act: str_field(tc, "hidden_act")
            .map_err(at)?
            .unwrap_or_else(|| "silu".into()),
        tie_word_embeddings: bool_field(tc, "tie_word_embeddings", false).map_err(at)?,
        sliding_window,
        variant: Default::default(),
    };
    check_eps("text_config.rms_norm_eps", text.rms_norm_eps)?;
    for (key, n) in [
        ("num_hidden_layers", text.num_hidden_layers),
        ("hidden_size", text.hidden_size),
        ("intermediate_size", text.intermediate_size),
        ("vocab_size", text.vocab_size),
        ("max_position_embeddings", text.max_position_embeddings),
    ] {
        if n == 0 {
            return Err(ParseError::Field(format!(
                "text_config.{key} must be at least 1"
            )));
        }
    }
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
    if text.hidden_act != "silu" {
        return Err(ParseError::Field(format!(
            "text_config.hidden_act `{}` is not supported (silu only)",
            text.hidden_act
        )));
    }
    Ok(text)
}

/// The largest vision input side dexar accepts (CLIP towers use 224 or 336).
pub const MAX_VISION_IMAGE_SIZE: usize = 4096;

/// The most positions dexar prepares rotary tables for: a model declaring a
/// longer context (up to 10^9 in a broken config) still loads, with its
/// context limited to this.
pub const MAX_CONTEXT: usize = 32768;

impl TextConfig {
    /// The context dexar uses: `max_position_embeddings`, at most [`MAX_CONTEXT`].
    pub fn context_len(&self) -> usize {
        self.max_position_embeddings.min(MAX_CONTEXT)
    }
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

impl ParseError {
    /// The same error with a field name prefixed by its section.
    fn within(self, section: &str) -> Self {
        match self {
            ParseError::Field(m) if m.starts_with('`') => {
                ParseError::Field(format!("{section}.{}", m.replacen('`', "", 2)))
            }
            other => other,
        }
    }
}

/// A section of the config (`vision_config`, `text_config`): an object, or
/// an empty one when absent.
/// The JSON of a checkpoint's `config.json`, with errors that name the file.
pub(crate) fn read_config_json(path: &Path) -> Result<Value> {
    let text = crate::error::read_checkpoint_text(path, "no config.json")?;
    serde_json::from_str(&text).map_err(|e| {
        ModelError::bad_file(
            path,
            format!("not valid JSON ({e}); re-download or re-export the checkpoint"),
        )
    })
}

pub(crate) fn object_field<'a>(
    v: &'a Value,
    key: &str,
) -> std::result::Result<&'a Value, ParseError> {
    static EMPTY: Value = Value::Null;
    match v.get(key) {
        None | Some(Value::Null) => Ok(&EMPTY),
        Some(x) if x.is_object() => Ok(x),
        Some(_) => Err(ParseError::Field(format!("`{key}` must be an object"))),
    }
}

pub(crate) fn str_field(v: &Value, key: &str) -> std::result::Result<Option<String>, ParseError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ParseError::Field(format!("`{key}` must be a string"))),
    }
}

fn bool_field(v: &Value, key: &str, default: bool) -> std::result::Result<bool, ParseError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ParseError::Field(format!("`{key}` must be true or false"))),
    }
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
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ParseError::Field(format!("`{key}` must be a non-negative integer"))),
    }
}

fn f64_field(v: &Value, key: &str, default: f64) -> std::result::Result<f64, ParseError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| ParseError::Field(format!("`{key}` must be a number"))),
    }
}

/// A token id at the top level or in `text_config`: an integer (or a list,
/// whose first is taken, as `eos_token_id` may be).
pub(crate) fn token_id(
    v: &Value,
    tc: &Value,
    key: &str,
) -> std::result::Result<Option<u32>, ParseError> {
    let Some(x) = v.get(key).or_else(|| tc.get(key)) else {
        return Ok(None);
    };
    let first = match x {
        Value::Null => return Ok(None),
        Value::Array(a) => a.first(),
        other => Some(other),
    };
    match first {
        None => Ok(None),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ParseError::Field(format!("`{key}` must be a token id (an integer)"))),
    }
}

/// Normalisation epsilons: small positive numbers.
fn check_eps(key: &str, eps: f64) -> std::result::Result<(), ParseError> {
    if eps.is_finite() && eps > 0.0 && eps < 1.0 {
        return Ok(());
    }
    Err(ParseError::Field(format!(
        "{key} ({eps}) must be a small positive number such as 1e-6"
    )))
}

fn check_activation(key: &str, name: &str) -> std::result::Result<(), ParseError> {
    if crate::nn::Activation::from_name(name).is_some() {
        return Ok(());
    }
    Err(ParseError::Field(format!(
        "{key} `{name}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, silu)"
    )))
}

#[cfg(test)]
mod tests;
