//! Randomly initialised checkpoints for timing, of two shapes: LLaVA-1.5 (a
//! CLIP tower of 4 layers x 256 on 48-pixel images with 2-pixel patches, a
//! 24x24 grid, 576 image tokens as LLaVA-1.5's, and a LLaMA decoder) and Qwen2-VL (a Qwen2-VL
//! tower of 4 layers x 256 with 14-pixel patches merged 2x2, images resized to
//! about 672x672 pixels, so about 576 image tokens, and a Qwen2 decoder with
//! q/k/v biases and M-RoPE), the decoder of the size asked for, its MLP as
//! wide as LLaMA's rule makes it (8/3 of the hidden size, rounded up to a
//! multiple of 256: 2816 for 1024, 11008 for 4096). Their answers mean
//! nothing; their cost per token is realistic. A LLaVA-shaped one can be
//! written as a llava-hf directory, for transformers to time the same weights.

use candle_core::Tensor;
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// The side of the synthetic LLaVA's images and of its patches: a 24x24 grid.
const LLAVA_IMAGE: usize = 48;
const LLAVA_PATCH: usize = 2;

/// LLaMA's MLP width for a hidden size: 8/3 of it, rounded up to a multiple of 256.
fn llama_mlp_width(hidden: usize) -> usize {
    (hidden * 8).div_ceil(3).div_ceil(256) * 256
}

/// A checkpoint of `spec`'s shape with weights drawn from N(0, 0.02),
/// using `tokenizer` (which must know `<image>`, the image token of both shapes here).
pub fn synthetic_checkpoint(
    spec: SyntheticSpec,
    tokenizer: TextTokenizer,
    opts: &LoadOptions,
) -> Result<Checkpoint> {
    synthetic_model(spec, tokenizer, opts).map(|s| s.ckpt)
}

/// As [`synthetic_checkpoint`], with what it takes to write the checkpoint
/// as a directory ([`SyntheticCheckpoint::save`]).
pub fn synthetic_model(
    spec: SyntheticSpec,
    tokenizer: TextTokenizer,
    opts: &LoadOptions,
) -> Result<SyntheticCheckpoint> {
    build(spec, spec.hidden / 64, tokenizer, opts)
}

/// A synthetic checkpoint with its config and weights.
pub struct SyntheticCheckpoint {
    pub ckpt: Checkpoint,
    family: SyntheticFamily,
    /// config.json as transformers reads it.
    config: serde_json::Value,
    /// The weights under their checkpoint names (transformers 5 layout).
    tensors: HashMap<String, Tensor>,
}

impl SyntheticCheckpoint {
    /// Writes a llava-hf directory (created if missing) that both dexar
    /// (`--model DIR`) and transformers' `LlavaForConditionalGeneration`
    /// load: config.json, model.safetensors, the tokenizer given as
    /// `tokenizer_json`, a CLIP preprocessor_config.json. LLaVA shape only.
    pub fn save(&self, dir: &Path, tokenizer_json: &[u8]) -> Result<()> {
        if self.family != SyntheticFamily::Llava {
            return Err(ModelError::Input(
                "only LLaVA-shaped synthetic models can be saved".into(),
            ));
        }
        let io = |e: std::io::Error| {
            ModelError::Input(format!("cannot write to {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut config = self.config.clone();
        config["architectures"] = serde_json::json!(["LlavaForConditionalGeneration"]);
        config["tie_word_embeddings"] = true.into();
        config["torch_dtype"] = "float32".into();
        let side = LLAVA_IMAGE;
        let preprocessor = serde_json::json!({
            "image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
            "do_resize": true, "size": {"shortest_edge": side}, "resample": 3,
            "do_center_crop": true, "crop_size": {"height": side, "width": side},
            "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
            "do_convert_rgb": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        });
        let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        for (name, bytes) in [
            ("config.json", pretty(&config)),
            ("preprocessor_config.json", pretty(&preprocessor)),
            ("tokenizer.json", tokenizer_json.to_vec()),
        ] {
            dexar_core::write_atomic(&dir.join(name), &bytes).map_err(io)?;
        }
        // Stored in f32 whatever the run's dtype: the directory is a checkpoint
        // to load at any precision.
        let f32_tensors = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_dtype(candle_core::DType::F32)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        candle_core::safetensors::save(&f32_tensors, dir.join("model.safetensors"))?;
        Ok(())
    }
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
    build(spec, heads, tokenizer, opts).map(|s| s.ckpt)
}

fn build(
    spec: SyntheticSpec,
    heads: usize,
    tokenizer: TextTokenizer,
    opts: &LoadOptions,
) -> Result<SyntheticCheckpoint> {
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
    let text = serde_json::json!({"hidden_size": hidden, "intermediate_size": llama_mlp_width(hidden),
        "num_hidden_layers": spec.layers, "num_attention_heads": heads, "head_dim": hidden / heads,
        "vocab_size": tokenizer.vocab_size(), "max_position_embeddings": 2048,
        "tie_word_embeddings": true});
    // Built twice: once on a VarMap to learn the weights' names and shapes,
    // then on plain tensors, so that the model holds no autograd variables
    // (a model loaded from disk holds none either: operations on variables
    // record a graph, which would make the timings unrepresentative).
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, opts.dtype, &opts.device);
    let (config, processor) = match spec.family {
        SyntheticFamily::Llava => {
            let mut text = text;
            text["model_type"] = "llama".into();
            let config = serde_json::json!({
                "model_type": "llava",
                "image_token_index": image_token,
                "vision_feature_layer": -2,
                "vision_feature_select_strategy": "default",
                "vision_config": {"model_type": "clip_vision_model", "hidden_size": 256, "intermediate_size": 1024,
                                  "num_hidden_layers": 4, "num_attention_heads": 4,
                                  "image_size": LLAVA_IMAGE, "patch_size": LLAVA_PATCH},
                "text_config": text,
            });
            LlavaConfig::from_value(&config).map_err(|e| e.at(&label))?;
            (
                config,
                ImageProcessing::Clip(ImageProcessor::clip(LLAVA_IMAGE as u32)),
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
            QwenVlConfig::from_value(&config, QwenFamily::Qwen2Vl).map_err(|e| e.at(&label))?;
            // Every image is resized to about 672x672 pixels (576 merged
            // tokens, as LLaVA-1.5), or to the --max-pixels asked for.
            let side = opts.max_pixels.unwrap_or(672 * 672);
            let processor = QwenImageProcessor {
                min_pixels: side,
                max_pixels: side,
                ..QwenImageProcessor::default()
            };
            (config, ImageProcessing::Qwen(processor))
        }
    };
    let load = |vb: VarBuilder| -> Result<VlModel> {
        Ok(match spec.family {
            SyntheticFamily::Llava => {
                let c = LlavaConfig::from_value(&config).map_err(|e| e.at(&label))?;
                VlModel::Llava(LlavaModel::load(vb, &c)?)
            }
            SyntheticFamily::Qwen2Vl => {
                let c = QwenVlConfig::from_value(&config, QwenFamily::Qwen2Vl)
                    .map_err(|e| e.at(&label))?;
                VlModel::QwenVl(QwenVlModel::load(vb, &c)?)
            }
        })
    };
    load(vb)?;
    let mut tensors = HashMap::new();
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Setting("synthetic weights: poisoned lock".into()))?
        .iter()
        .map(|(name, var)| (name.clone(), var.shape().clone()))
        .collect::<Vec<_>>();
    for (name, shape) in vars {
        let noise = Tensor::randn(0f32, 0.02, shape, &opts.device)?.to_dtype(opts.dtype)?;
        tensors.insert(name, noise);
    }
    drop(varmap);
    let model = load(VarBuilder::from_tensors(
        tensors.clone(),
        opts.dtype,
        &opts.device,
    ))?;
    let marker = ImageMarker {
        text: IMAGE_MARKER.into(),
        token_id: image_token,
        raw_block: IMAGE_MARKER.into(),
    };
    let ckpt = Checkpoint::from_parts(
        label,
        tokenizer,
        processor,
        ChatTemplate::Llava15,
        model,
        marker,
    );
    Ok(SyntheticCheckpoint {
        ckpt,
        family: spec.family,
        config,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_width_follows_llama() {
        assert_eq!(llama_mlp_width(1024), 2816);
        assert_eq!(llama_mlp_width(4096), 11008);
        assert_eq!(llama_mlp_width(64), 256);
    }

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
