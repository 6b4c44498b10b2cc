//! `config.json` of the Qwen-VL families, as the Hub publishes them: the
//! text fields either at the top level (Qwen2-VL, Qwen2.5-VL as first
//! released) or under `text_config` (transformers' own saves, Qwen3-VL), the
//! rotary settings under `rope_scaling` or `rope_parameters`, with the
//! defaults transformers uses for fields a checkpoint leaves out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ParseError, TextConfig};
use crate::decoder::{DecoderVariant, MRope};

/// Which Qwen-VL generation a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QwenFamily {
    Qwen2Vl,
    Qwen25Vl,
    Qwen3Vl,
}

impl QwenFamily {
    /// From config.json's `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "qwen2_vl" => Self::Qwen2Vl,
            "qwen2_5_vl" => Self::Qwen25Vl,
            "qwen3_vl" => Self::Qwen3Vl,
            _ => return None,
        })
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Self::Qwen2Vl => "qwen2_vl",
            Self::Qwen25Vl => "qwen2_5_vl",
            Self::Qwen3Vl => "qwen3_vl",
        }
    }
}

/// The vision tower's configuration (fields of all three generations).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QwenVisionConfig {
    pub depth: usize,
    /// Width of the tower (Qwen2-VL's `embed_dim`).
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    /// Width of the merged tokens: the decoder's hidden size.
    pub out_hidden_size: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub hidden_act: String,
    pub rope_theta: f64,
    /// Qwen2.5-VL: window side in pixels and the blocks with full attention.
    pub window_size: Option<usize>,
    pub fullatt_block_indexes: Vec<usize>,
    /// Qwen3-VL: learned position embeddings (a square grid) and the blocks
    /// whose outputs feed DeepStack.
    pub num_position_embeddings: Option<usize>,
    pub deepstack_visual_indexes: Vec<usize>,
}

/// A Qwen-VL configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QwenVlConfig {
    pub family: QwenFamily,
    pub text: TextConfig,
    pub vision: QwenVisionConfig,
    pub image_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize, Default)]
struct RawText {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    tie_word_embeddings: Option<bool>,
    use_sliding_window: Option<bool>,
    attention_bias: Option<bool>,
    eos_token_id: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawVision {
    depth: Option<usize>,
    embed_dim: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    mlp_ratio: Option<f64>,
    num_heads: Option<usize>,
    out_hidden_size: Option<usize>,
    in_channels: Option<usize>,
    in_chans: Option<usize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    hidden_act: Option<String>,
    window_size: Option<usize>,
    fullatt_block_indexes: Option<Vec<usize>>,
    num_position_embeddings: Option<usize>,
    deepstack_visual_indexes: Option<Vec<usize>>,
    rope_parameters: Option<Value>,
}

fn section<T: serde::de::DeserializeOwned + Default>(
    v: Option<&Value>,
    name: &str,
) -> Result<T, ParseError> {
    match v {
        None | Some(Value::Null) => Ok(T::default()),
        Some(x) => serde_json::from_value(x.clone()).map_err(|e| {
            ParseError::Field(format!("{name}: {}", dexar_core::one_line(&e.to_string())))
        }),
    }
}

fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().map(|n| n as u32)
}

impl QwenVlConfig {
    pub fn from_value(v: &Value, family: QwenFamily) -> Result<Self, ParseError> {
        // Text fields: under text_config when it exists, else at the top level.
        let text_value = v.get("text_config").filter(|t| t.is_object()).unwrap_or(v);
        let text_name = if std::ptr::eq(text_value, v) {
            "config.json"
        } else {
            "text_config"
        };
        let raw: RawText = section(Some(text_value), text_name)?;
        let top: RawText = section(Some(v), "config.json")?;
        let vision: RawVision = section(v.get("vision_config"), "vision_config")?;
        let qwen3 = family == QwenFamily::Qwen3Vl;

        let hidden = raw.hidden_size.unwrap_or(if qwen3 { 4096 } else { 8192 });
        let heads = raw
            .num_attention_heads
            .unwrap_or(if qwen3 { 32 } else { 64 });
        let kv_heads = raw
            .num_key_value_heads
            .unwrap_or(if qwen3 { 32 } else { 8 });
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ParseError::Field(format!(
                "{text_name}: num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        // Qwen2(.5)-VL's attention takes head_dim = hidden / heads whatever the file says.
        let head_dim = match (qwen3, raw.head_dim) {
            (true, Some(hd)) => hd,
            (true, None) => 128,
            (false, _) => hidden / heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ParseError::Field(format!(
                "{text_name}: head dimension {head_dim} must be positive and even"
            )));
        }
        let rope = raw
            .rope_parameters
            .clone()
            .or_else(|| raw.rope_scaling.clone())
            .unwrap_or(Value::Null);
        if let Some(kind) = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(Value::as_str)
            .filter(|k| !matches!(*k, "default" | "mrope"))
        {
            return Err(ParseError::Field(format!(
                "{text_name}: rope type `{kind}` is not supported (default or mrope)"
            )));
        }
        let rope_theta = rope
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or(raw.rope_theta)
            .unwrap_or(match family {
                QwenFamily::Qwen3Vl => 500_000.0,
                _ => 1_000_000.0,
            });
        let section = match rope.get("mrope_section") {
            None | Some(Value::Null) => match family {
                QwenFamily::Qwen3Vl => vec![24, 20, 20],
                _ => vec![16, 24, 24],
            },
            Some(s) => serde_json::from_value::<Vec<usize>>(s.clone()).map_err(|_| {
                ParseError::Field(format!(
                    "{text_name}: mrope_section must be a list of 3 integers"
                ))
            })?,
        };
        let section: [usize; 3] = match section.as_slice() {
            [t, h, w] => [*t, *h, *w],
            _ => {
                return Err(ParseError::Field(format!(
                    "{text_name}: mrope_section {section:?} must have 3 entries (temporal, height, width)"
                )))
            }
        };
        if section.iter().sum::<usize>() != head_dim / 2 {
            return Err(ParseError::Field(format!(
                "{text_name}: mrope_section {section:?} sums to {}, not half the head dimension ({})",
                section.iter().sum::<usize>(),
                head_dim / 2
            )));
        }
        if raw.use_sliding_window == Some(true) {
            return Err(ParseError::Field(format!(
                "{text_name}: use_sliding_window is not supported for Qwen-VL models"
            )));
        }
        let hidden_act = raw.hidden_act.clone().unwrap_or_else(|| "silu".into());
        if hidden_act != "silu" {
            return Err(ParseError::Field(format!(
                "{text_name}: hidden_act `{hidden_act}` is not supported (silu only)"
            )));
        }
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let text = TextConfig {
            model_type: family.model_type().to_string() + "_text",
            hidden_size: hidden,
            intermediate_size: raw
                .intermediate_size
                .unwrap_or(if qwen3 { 22016 } else { 29568 }),
            num_hidden_layers: raw.num_hidden_layers.unwrap_or(if qwen3 { 32 } else { 80 }),
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: raw
                .vocab_size
                .unwrap_or(if qwen3 { 151_936 } else { 152_064 }),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(if qwen3 {
                128_000
            } else {
                32_768
            }),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(if qwen3 { 1e-6 } else { 1e-5 }),
            rope_theta,
            hidden_act,
            // Tied when either level says so (transformers moves the inner flag out).
            tie_word_embeddings: top.tie_word_embeddings.unwrap_or(false)
                || raw.tie_word_embeddings.unwrap_or(false),
            sliding_window: None,
            variant: DecoderVariant {
                qkv_bias: !qwen3 || attention_bias,
                o_bias: qwen3 && attention_bias,
                qk_norm: qwen3,
                mrope: Some(MRope {
                    section,
                    interleaved: qwen3,
                }),
                ..DecoderVariant::default()
            },
        };

        let qwen2 = family == QwenFamily::Qwen2Vl;
        let width = if qwen2 {
            vision.embed_dim.unwrap_or(1280)
        } else {
            vision.hidden_size.unwrap_or(match family {
                QwenFamily::Qwen3Vl => 1152,
                _ => 3584,
            })
        };
        let out_hidden_size = if qwen2 {
            vision.hidden_size.unwrap_or(hidden)
        } else {
            vision.out_hidden_size.unwrap_or(3584)
        };
        let intermediate_size = match family {
            QwenFamily::Qwen2Vl => (width as f64 * vision.mlp_ratio.unwrap_or(4.0)) as usize,
            QwenFamily::Qwen25Vl => vision.intermediate_size.unwrap_or(3420),
            QwenFamily::Qwen3Vl => vision.intermediate_size.unwrap_or(4304),
        };
        let vision_rope_theta = vision
            .rope_parameters
            .as_ref()
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0);
        let vc = QwenVisionConfig {
            depth: vision.depth.unwrap_or(match family {
                QwenFamily::Qwen3Vl => 27,
                _ => 32,
            }),
            hidden_size: width,
            intermediate_size,
            num_heads: vision.num_heads.unwrap_or(16),
            out_hidden_size,
            in_channels: vision.in_channels.or(vision.in_chans).unwrap_or(3),
            patch_size: vision.patch_size.unwrap_or(if qwen3 { 16 } else { 14 }),
            temporal_patch_size: vision.temporal_patch_size.unwrap_or(2),
            spatial_merge_size: vision.spatial_merge_size.unwrap_or(2),
            hidden_act: vision.hidden_act.clone().unwrap_or_else(|| {
                match family {
                    QwenFamily::Qwen2Vl => "quick_gelu",
                    QwenFamily::Qwen25Vl => "silu",
                    QwenFamily::Qwen3Vl => "gelu_pytorch_tanh",
                }
                .into()
            }),
            rope_theta: vision_rope_theta,
            window_size: (family == QwenFamily::Qwen25Vl)
                .then(|| vision.window_size.unwrap_or(112)),
            fullatt_block_indexes: match family {
                QwenFamily::Qwen25Vl => vision
                    .fullatt_block_indexes
                    .clone()
                    .unwrap_or_else(|| vec![7, 15, 23, 31]),
                _ => Vec::new(),
            },
            num_position_embeddings: qwen3.then(|| vision.num_position_embeddings.unwrap_or(2304)),
            deepstack_visual_indexes: match family {
                QwenFamily::Qwen3Vl => vision
                    .deepstack_visual_indexes
                    .clone()
                    .unwrap_or_else(|| vec![8, 16, 24]),
                _ => Vec::new(),
            },
        };
        check_vision(&vc, &text)?;
        let id =
            |key: &str, default: u32| -> u32 { v.get(key).and_then(u32_of).unwrap_or(default) };
        let eos_token_ids = match raw.eos_token_id.as_ref().or(top.eos_token_id.as_ref()) {
            Some(Value::Array(a)) => a.iter().filter_map(u32_of).collect(),
            Some(x) => u32_of(x).into_iter().collect(),
            None => vec![151_645],
        };
        Ok(Self {
            family,
            text,
            vision: vc,
            image_token_id: id("image_token_id", 151_655),
            vision_start_token_id: id("vision_start_token_id", 151_652),
            vision_end_token_id: id("vision_end_token_id", 151_653),
            eos_token_ids,
        })
    }
}

fn check_vision(v: &QwenVisionConfig, text: &TextConfig) -> Result<(), ParseError> {
    let bad = |m: String| Err(ParseError::Field(format!("vision_config: {m}")));
    if v.num_heads == 0
        || !v.hidden_size.is_multiple_of(v.num_heads)
        || !(v.hidden_size / v.num_heads).is_multiple_of(4)
    {
        return bad(format!(
            "num_heads ({}) must divide the width ({}) into heads whose size is a multiple of 4",
            v.num_heads, v.hidden_size
        ));
    }
    if v.patch_size == 0 || v.spatial_merge_size == 0 || v.temporal_patch_size == 0 {
        return bad(
            "patch_size, spatial_merge_size and temporal_patch_size must be positive".into(),
        );
    }
    if v.in_channels != 3 {
        return bad(format!(
            "in_channels {} is not supported (3, RGB)",
            v.in_channels
        ));
    }
    if v.out_hidden_size != text.hidden_size {
        return bad(format!(
            "the merged tokens' width ({}) is not the text model's hidden_size ({})",
            v.out_hidden_size, text.hidden_size
        ));
    }
    if let Some(w) = v.window_size {
        let unit = v.patch_size * v.spatial_merge_size;
        if w < unit || w % unit != 0 {
            return bad(format!(
                "window_size ({w}) must be a positive multiple of patch x merge size ({unit})"
            ));
        }
    }
    if let Some(&i) = v
        .fullatt_block_indexes
        .iter()
        .chain(&v.deepstack_visual_indexes)
        .find(|&&i| i >= v.depth)
    {
        return bad(format!(
            "block index {i} is out of range for depth {}",
            v.depth
        ));
    }
    if v.deepstack_visual_indexes.len() > text.num_hidden_layers {
        return bad(format!(
            "{} DeepStack features for {} decoder layers",
            v.deepstack_visual_indexes.len(),
            text.num_hidden_layers
        ));
    }
    if let Some(n) = v.num_position_embeddings {
        let side = (n as f64).sqrt().round() as usize;
        if side * side != n || n == 0 {
            return bad(format!("num_position_embeddings ({n}) must be a square"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qwen2(text: Value) -> Value {
        let mut v = json!({"model_type": "qwen2_vl", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vision_config": {"embed_dim": 32, "num_heads": 2, "hidden_size": 64}});
        for (k, x) in text.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn hub_layouts_parse() {
        let c = QwenVlConfig::from_value(
            &qwen2(json!({"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "tie_word_embeddings": true})),
            QwenFamily::Qwen2Vl,
        )
        .unwrap();
        assert_eq!(c.text.head_dim, 16);
        assert!(c.text.tie_word_embeddings && c.text.variant.qkv_bias && !c.text.variant.qk_norm);
        assert_eq!(
            c.text.variant.mrope,
            Some(MRope {
                section: [2, 3, 3],
                interleaved: false
            })
        );
        assert_eq!(c.vision.intermediate_size, 128);
        let q3 = json!({"model_type": "qwen3_vl", "text_config": {"hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 24, "rope_scaling": {"rope_type": "default", "mrope_section": [4, 4, 4],
            "mrope_interleaved": true}}, "vision_config": {"hidden_size": 32, "num_heads": 2, "out_hidden_size": 64,
            "depth": 3, "deepstack_visual_indexes": [0, 1], "num_position_embeddings": 16}});
        let c = QwenVlConfig::from_value(&q3, QwenFamily::Qwen3Vl).unwrap();
        assert_eq!((c.text.head_dim, c.text.variant.qk_norm), (24, true));
        assert!(c.text.variant.mrope.unwrap().interleaved);
    }

    #[test]
    fn mistakes_are_named() {
        let e = QwenVlConfig::from_value(
            &qwen2(json!({"rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}})),
            QwenFamily::Qwen2Vl,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "config.json: mrope_section [16, 24, 24] sums to 64, not half the head dimension (8)"
        );
        let e = QwenVlConfig::from_value(
            &qwen2(json!({"rope_scaling": {"type": "yarn"}})),
            QwenFamily::Qwen2Vl,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rope type `yarn`"), "{e}");
        let e =
            QwenVlConfig::from_value(&qwen2(json!({"hidden_size": "big"})), QwenFamily::Qwen2Vl)
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("config.json: invalid type") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn mrope_axes_follow_both_layouts() {
        let blocks = MRope {
            section: [2, 3, 3],
            interleaved: false,
        };
        assert_eq!(blocks.axes(8), [0, 0, 1, 1, 1, 2, 2, 2]);
        let inter = MRope {
            section: [4, 4, 4],
            interleaved: true,
        };
        assert_eq!(inter.axes(12), [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        let real = MRope {
            section: [24, 20, 20],
            interleaved: true,
        };
        let axes = real.axes(64);
        assert_eq!(&axes[57..64], &[0, 1, 2, 0, 0, 0, 0]);
        assert_eq!(axes.iter().filter(|&&a| a == 0).count(), 24);
    }
}
