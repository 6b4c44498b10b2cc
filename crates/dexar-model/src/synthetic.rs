//! Randomly initialised LLaVA-1.5-shaped checkpoints for timing: a CLIP
//! tower of 4 layers x 256 on 336-pixel images with 14-pixel patches (a 24x24
//! grid, 576 image tokens, as LLaVA-1.5) and a LLaMA decoder of the size
//! asked for. Their answers mean nothing; their cost per token is realistic.

use candle_nn::{VarBuilder, VarMap};
use std::path::PathBuf;
use std::str::FromStr;

use crate::chat::ChatTemplate;
use crate::config::LlavaConfig;
use crate::error::{ModelError, Result};
use crate::llava::{Checkpoint, LlavaModel};
use crate::options::LoadOptions;
use crate::preprocess::ImageProcessor;
use crate::prompt::{TextTokenizer, IMAGE_MARKER};

/// The decoder's shape: `LAYERSxHIDDEN`, e.g. `8x512`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub layers: usize,
    /// A multiple of 64 (heads of 64 dimensions).
    pub hidden: usize,
}

impl FromStr for SyntheticSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ModelError::Input(format!(
                "synthetic model `{s}`: expected LAYERSxHIDDEN, e.g. 8x512 (1-64 layers, hidden a multiple of 64 up to 8192)"
            ))
        };
        let (l, h) = s.trim().split_once('x').ok_or_else(bad)?;
        let (layers, hidden): (usize, usize) =
            (l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        if layers == 0 || hidden == 0 || hidden % 64 != 0 || layers > 64 || hidden > 8192 {
            return Err(bad());
        }
        Ok(Self { layers, hidden })
    }
}

impl std::fmt::Display for SyntheticSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.layers, self.hidden)
    }
}

/// A checkpoint of `spec`'s shape with weights drawn from N(0, 0.02),
/// using `tokenizer` (which must know `<image>`).
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
    let config = serde_json::json!({
        "model_type": "llava",
        "image_token_index": image_token,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 256, "intermediate_size": 1024,
                          "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 336, "patch_size": 14},
        "text_config": {"model_type": "llama", "hidden_size": hidden, "intermediate_size": hidden * 8 / 3,
                        "num_hidden_layers": spec.layers, "num_attention_heads": heads,
                        "head_dim": hidden / heads,
                        "vocab_size": tokenizer.vocab_size(), "max_position_embeddings": 2048,
                        "tie_word_embeddings": true},
    });
    let label = PathBuf::from(format!("synthetic:{spec}"));
    let config = LlavaConfig::from_value(&config).map_err(|e| e.at(&label))?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, opts.dtype, &opts.device);
    let model = LlavaModel::load(vb, &config)?;
    for var in varmap.all_vars() {
        let noise = candle_core::Tensor::randn(0f32, 0.02, var.shape(), &opts.device)?
            .to_dtype(opts.dtype)?;
        var.set(&noise)?;
    }
    Ok(Checkpoint {
        dir: label,
        processor: ImageProcessor::clip(336),
        template: ChatTemplate::Llava15,
        config,
        tokenizer,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse() {
        assert_eq!(
            "8x512".parse::<SyntheticSpec>().unwrap(),
            SyntheticSpec {
                layers: 8,
                hidden: 512
            }
        );
        for bad in ["8", "0x512", "8x500", "65x64", "8x16384", "ax64"] {
            let e = bad.parse::<SyntheticSpec>().unwrap_err().to_string();
            assert!(e.contains("LAYERSxHIDDEN"), "{bad}: {e}");
        }
    }
}
