//! Randomly initialised checkpoints for timing, of two shapes: LLaVA-1.5 (a
//! CLIP tower of 4 layers x 256 on 336-pixel images with 14-pixel patches, a
//! 24x24 grid, 576 image tokens, and a LLaMA decoder) and Qwen2-VL (a Qwen2-VL
//! tower of 4 layers x 256 with 14-pixel patches merged 2x2, images resized to
//! about 672x672 pixels, so about 576 image tokens, and a Qwen2 decoder with
//! q/k/v biases and M-RoPE), the decoder of the size asked for. Their answers
//! mean nothing; their cost per token is realistic.

use candle_nn::{VarBuilder, VarMap};
use std::path::PathBuf;
use std::str::FromStr;

use crate::chat::ChatTemplate;
use crate::checkpoint::{Checkpoint, ImageMarker, ImageProcessing};
use crate::config::LlavaConfig;
use crate::error::{ModelError, Result};
use crate::llava::LlavaModel;
use crate::models::qwen_vl::{QwenFamily, QwenImageProcessor, QwenVlConfig, QwenVlModel};
use crate::models::VlModel;
use crate::options::LoadOptions;
use crate::preprocess::ImageProcessor;
use crate::prompt::{TextTokenizer, IMAGE_MARKER};

/// Which model shape a synthetic checkpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyntheticFamily {
    #[default]
    Llava,
    Qwen2Vl,
}

/// The model's shape: `[qwen2-vl:]LAYERSxHIDDEN`, e.g. `8x512` (LLaVA) or `qwen2-vl:8x512`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub family: SyntheticFamily,
    pub layers: usize,
    /// A multiple of 64 (heads of 64 dimensions).
    pub hidden: usize,
}

impl FromStr for SyntheticSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ModelError::Input(format!(
                "synthetic model `{s}`: expected [qwen2-vl:]LAYERSxHIDDEN, e.g. 8x512 or qwen2-vl:8x512 (1-64 layers, hidden a multiple of 64 up to 8192)"
            ))
        };
        let (family, shape) = match s.trim().split_once(':') {
            Some(("qwen2-vl", shape)) => (SyntheticFamily::Qwen2Vl, shape),
            Some(("llava", shape)) => (SyntheticFamily::Llava, shape),
            Some(_) => return Err(bad()),
            None => (SyntheticFamily::Llava, s.trim()),
        };
        let (l, h) = shape.split_once('x').ok_or_else(bad)?;
        let (layers, hidden): (usize, usize) =
            (l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        if layers == 0 || hidden == 0 || hidden % 64 != 0 || layers > 64 || hidden > 8192 {
            return Err(bad());
        }
        Ok(Self {
            family,
            layers,
            hidden,
        })
    }
}

impl std::fmt::Display for SyntheticSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.family == SyntheticFamily::Qwen2Vl {
            f.write_str("qwen2-vl:")?;
        }
        write!(f, "{}x{}", self.layers, self.hidden)
    }
}

/// A checkpoint of `spec`'s shape with weights drawn from N(0, 0.02),
/// using `tokenizer` (which must know `<image>`, the image token of both shapes here).
pub fn synthetic_checkpoint(
    spec: SyntheticSpec,
    tokenizer: TextTokenizer,
    opts: &LoadOptions,
) -> Result<Checkpoint> {
    synthetic_checkpoint_with_heads(spec, spec.hidden / 64, tokenizer, opts)
}

/// As [`synthetic_checkpoint`], with `heads` attention heads of
/// `hidden / heads` dimensions (traces of a 32-head model at a fraction of
/// its cost, e.g. for measuring the size of LLaVA-1.5-7B-shaped traces).
pub fn synthetic_checkpoint_with_heads(
    spec: SyntheticSpec,
    heads: usize,
    tokenizer: TextTokenizer,
    opts: &LoadOptions,
) -> Result<Checkpoint> {
    if heads == 0 || !spec.hidden.is_multiple_of(heads) {
        return Err(ModelError::Input(format!(
            "synthetic model {spec}: {heads} heads do not divide the hidden size"
        )));
    }
    let image_token = tokenizer
        .token_to_id(IMAGE_MARKER)
        .ok_or_else(|| ModelError::Input(format!("the tokenizer has no {IMAGE_MARKER} token")))?;
    let hidden = spec.hidden;
    let label = PathBuf::from(format!("synthetic:{spec}"));
    let text = serde_json::json!({"hidden_size": hidden, "intermediate_size": hidden * 8 / 3,
        "num_hidden_layers": spec.layers, "num_attention_heads": heads, "head_dim": hidden / heads,
        "vocab_size": tokenizer.vocab_size(), "max_position_embeddings": 2048,
        "tie_word_embeddings": true});
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, opts.dtype, &opts.device);
    let (model, processor) = match spec.family {
        SyntheticFamily::Llava => {
            let mut text = text;
            text["model_type"] = "llama".into();
            let config = serde_json::json!({
                "model_type": "llava",
                "image_token_index": image_token,
                "vision_feature_layer": -2,
                "vision_feature_select_strategy": "default",
                "vision_config": {"model_type": "clip_vision_model", "hidden_size": 256, "intermediate_size": 1024,
                                  "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 336, "patch_size": 14},
                "text_config": text,
            });
            let config = LlavaConfig::from_value(&config).map_err(|e| e.at(&label))?;
            (
                VlModel::Llava(LlavaModel::load(vb, &config)?),
                ImageProcessing::Clip(ImageProcessor::clip(336)),
            )
        }
        SyntheticFamily::Qwen2Vl => {
            let mut text = text;
            text["num_key_value_heads"] = (heads / 2).max(1).into();
            text["rope_scaling"] =
                serde_json::json!({"type": "mrope", "mrope_section": [8, 12, 12]});
            let config = serde_json::json!({
                "model_type": "qwen2_vl",
                "image_token_id": image_token,
                "text_config": text,
                "vision_config": {"depth": 4, "embed_dim": 256, "num_heads": 4, "mlp_ratio": 4,
                                  "hidden_size": hidden, "patch_size": 14, "spatial_merge_size": 2},
            });
            let config =
                QwenVlConfig::from_value(&config, QwenFamily::Qwen2Vl).map_err(|e| e.at(&label))?;
            // Every image is resized to about 672x672 pixels (576 merged
            // tokens, as LLaVA-1.5), or to the --max-pixels asked for.
            let side = opts.max_pixels.unwrap_or(672 * 672);
            let processor = QwenImageProcessor {
                min_pixels: side,
                max_pixels: side,
                ..QwenImageProcessor::default()
            };
            (
                VlModel::QwenVl(QwenVlModel::load(vb, &config)?),
                ImageProcessing::Qwen(processor),
            )
        }
    };
    for var in varmap.all_vars() {
        let noise = candle_core::Tensor::randn(0f32, 0.02, var.shape(), &opts.device)?
            .to_dtype(opts.dtype)?;
        var.set(&noise)?;
    }
    let marker = ImageMarker {
        text: IMAGE_MARKER.into(),
        token_id: image_token,
        raw_block: IMAGE_MARKER.into(),
    };
    Ok(Checkpoint::from_parts(
        label,
        tokenizer,
        processor,
        ChatTemplate::Llava15,
        model,
        marker,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse() {
        assert_eq!(
            "8x512".parse::<SyntheticSpec>().unwrap(),
            SyntheticSpec {
                family: SyntheticFamily::Llava,
                layers: 8,
                hidden: 512
            }
        );
        let q: SyntheticSpec = "qwen2-vl:2x128".parse().unwrap();
        assert_eq!(
            (q.family, q.layers, q.hidden),
            (SyntheticFamily::Qwen2Vl, 2, 128)
        );
        assert_eq!(q.to_string(), "qwen2-vl:2x128");
        for bad in [
            "8",
            "0x512",
            "8x500",
            "65x64",
            "8x16384",
            "ax64",
            "gemma:8x64",
        ] {
            let e = bad.parse::<SyntheticSpec>().unwrap_err().to_string();
            assert!(e.contains("LAYERSxHIDDEN"), "{bad}: {e}");
        }
    }
}
