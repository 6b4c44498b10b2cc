//! PaliGemma (PaliGemmaForConditionalGeneration): a SigLIP vision tower, one
//! linear projector, and a Gemma decoder (dexar's instrumented one with the
//! Gemma variant flags) that reads the image and the prompt as a prefix
//! attending both ways, the answer causally. Prompts are task prefixes
//! (`caption en`, `answer en ...`, `detect ...`), laid out as transformers'
//! PaliGemmaProcessor lays them out: `<image>` x N, BOS, the prefix, `\n`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;
use serde_json::Value;

use crate::config::{
    gemma_text_config, object_field, str_field, token_id, usize_field, vision_config_with,
    ParseError, TextConfig, VisionConfig,
};
use crate::decoder::Decoder;
use crate::models::ImageFeatures;
use crate::nn::Linear;
use crate::preprocess::Pixels;
use crate::vision::VisionTower;

/// A PaliGemma configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaliGemmaConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub image_token_index: u32,
    /// Width of the projected image tokens: the decoder's hidden size.
    pub projection_dim: usize,
    pub eos_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
}

impl PaliGemmaConfig {
    /// From config.json (model_type `paligemma`), with the defaults
    /// transformers' PaliGemmaConfig gives its SigLIP and Gemma parts.
    pub fn from_value(v: &Value) -> std::result::Result<Self, ParseError> {
        if !v.is_object() {
            return Err(ParseError::Field(
                "the file must hold a JSON object of settings".into(),
            ));
        }
        let vc = object_field(v, "vision_config")?;
        let vt = str_field(vc, "model_type")?.unwrap_or_else(|| "siglip_vision_model".into());
        if vt != "siglip_vision_model" {
            return Err(ParseError::Unsupported(format!("vision tower {vt}")));
        }
        let vision = vision_config_with(
            vc,
            VisionConfig {
                hidden_size: 1152,
                intermediate_size: 4096,
                num_hidden_layers: 27,
                num_attention_heads: 16,
                image_size: 224,
                patch_size: 14,
                num_channels: 3,
                hidden_act: "gelu_pytorch_tanh".into(),
                layer_norm_eps: 1e-6,
            },
        )?;
        let tc = object_field(v, "text_config")?;
        let text = gemma_text_config(tc)?;
        // transformers sets the vision config's from the top-level one
        let projection_dim = match v.get("projection_dim").filter(|x| !x.is_null()) {
            Some(_) => usize_field(v, "projection_dim", 0)?,
            None => usize_field(vc, "projection_dim", 2048)?,
        };
        if projection_dim != text.hidden_size {
            return Err(ParseError::Field(format!(
                "projection_dim ({projection_dim}) must equal text_config.hidden_size ({}): the projector feeds the decoder",
                text.hidden_size
            )));
        }
        let grid = vision.grid_side() * vision.grid_side();
        for (section, cfg) in [("text_config", tc), ("vision_config", vc)] {
            let n = usize_field(cfg, "num_image_tokens", grid)?;
            if n != grid {
                return Err(ParseError::Field(format!(
                    "{section}.num_image_tokens ({n}) does not match the vision tower's {grid} patches ((image_size / patch_size)²)"
                )));
            }
        }
        if vc.get("vision_use_head").and_then(Value::as_bool) == Some(true) {
            return Err(ParseError::Field(
                "vision_config.vision_use_head must be false: PaliGemma uses every patch, not a pooled head".into(),
            ));
        }
        let image_token_index = match token_id(v, tc, "image_token_index")? {
            Some(id) => id,
            None => token_id(v, tc, "image_token_id")?.unwrap_or(256000),
        };
        Ok(Self {
            vision,
            text,
            image_token_index,
            projection_dim,
            eos_token_id: token_id(v, tc, "eos_token_id")?,
            bos_token_id: token_id(v, tc, "bos_token_id")?,
        })
    }

    /// The patch grid (height, width).
    pub fn grid(&self) -> dexar_core::Grid {
        let g = self.vision.grid_side();
        dexar_core::Grid::new(g, g)
    }
}

/// A loaded PaliGemma model.
#[derive(Debug, Clone)]
pub struct PaliGemmaModel {
    pub config: PaliGemmaConfig,
    pub tower: VisionTower,
    /// `multi_modal_projector.linear`: vision width to the decoder's.
    pub projector: Linear,
    pub decoder: Decoder,
    pub device: Device,
    pub dtype: DType,
}

impl PaliGemmaModel {
    /// Loads the weights under the Hub's names (`vision_tower.vision_model.*`,
    /// `multi_modal_projector.*`, `language_model.model.*`) or transformers
    /// 5's (`model.vision_tower.*`, `model.multi_modal_projector.*`,
    /// `model.language_model.*`). The head is tied to the embeddings unless
    /// the checkpoint holds one.
    pub fn load(vb: VarBuilder, config: &PaliGemmaConfig) -> candle_core::Result<Self> {
        let modern = vb.contains_tensor("model.language_model.embed_tokens.weight");
        let (tower, projector, lm, head) = match modern {
            true => (
                "model.vision_tower",
                "model.multi_modal_projector",
                "model.language_model",
                "lm_head",
            ),
            false => (
                "vision_tower",
                "multi_modal_projector",
                "language_model.model",
                "language_model.lm_head",
            ),
        };
        let tower_vb = match vb.contains_tensor(&format!(
            "{tower}.vision_model.embeddings.patch_embedding.weight"
        )) {
            true => vb.pp(tower).pp("vision_model"),
            false => vb.pp(tower),
        };
        let head_vb = if vb.contains_tensor(&format!("{head}.weight")) {
            Some(vb.pp(head))
        } else if config.text.tie_word_embeddings {
            None
        } else {
            candle_core::bail!("missing tensor {head}.weight (and tie_word_embeddings is false)")
        };
        Ok(Self {
            tower: VisionTower::load_siglip(tower_vb, &config.vision)?,
            projector: Linear::load(
                vb.pp(projector).pp("linear"),
                config.vision.hidden_size,
                config.projection_dim,
                true,
            )?,
            decoder: Decoder::load(vb.pp(lm), head_vb, &config.text)?,
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// Preprocessed pixels to image tokens: the tower's last hidden state
    /// (after its final norm), projected. They enter the sequence as they
    /// are: Gemma's `sqrt(hidden)` scaling applies to token embeddings only
    /// (transformers 4 divided image features by `sqrt(hidden)` before
    /// scaling everything, which is the same).
    pub fn encode_image(&self, pixels: &Pixels) -> candle_core::Result<ImageFeatures> {
        let (h, w) = (pixels.height as usize, pixels.width as usize);
        let side = self.config.vision.image_size;
        if (h, w) != (side, side) {
            candle_core::bail!("pixels of {w}x{h} given to a vision tower of {side}x{side}");
        }
        let t =
            Tensor::from_slice(&pixels.data, (1, 3, h, w), &self.device)?.to_dtype(self.dtype)?;
        let feats = self.tower.last_hidden_state(&t)?;
        Ok(ImageFeatures {
            tokens: self.projector.forward(&feats)?.squeeze(0)?,
            grid: self.config.grid(),
            deepstack: Vec::new(),
            layout: Vec::new(),
        })
    }
}

/// The task prefixes PaliGemma was trained with, as its documentation names
/// them (`{lang}` a language code such as `en`).
pub const TASK_PREFIXES: [&str; 8] = [
    "cap {lang}",
    "caption {lang}",
    "describe {lang}",
    "ocr",
    "answer {lang} {question}",
    "question {lang} {answer}",
    "detect {object} ; {object}",
    "segment {object} ; {object}",
];

/// Checks that `prompt` starts with one of [`TASK_PREFIXES`] and has the
/// arguments it needs; the error names the prefixes that exist.
pub fn check_task_prefix(prompt: &str) -> std::result::Result<(), String> {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let Some(&first) = words.first() else {
        return Err(format!(
            "a PaliGemma prompt is a task prefix: {}",
            TASK_PREFIXES.join(", ")
        ));
    };
    let usage = TASK_PREFIXES
        .iter()
        .find(|p| p.split(' ').next() == Some(first))
        .ok_or_else(|| {
            format!(
                "unknown PaliGemma task prefix `{first}`: a prompt starts with one of {} (or give a raw prompt)",
                TASK_PREFIXES.join(", ")
            )
        })?;
    // `detect a ; b` counts as one argument list however many objects it names
    let needed = match usage.split(' ').nth(1) {
        None => 0,
        Some("{object}") => 1,
        Some(_) => usage.split(' ').count() - 1,
    };
    if words.len() - 1 < needed {
        return Err(format!(
            "the PaliGemma task `{first}` is written `{usage}`; `{}` lacks {}",
            prompt.trim(),
            usage
                .split(' ')
                .skip(words.len())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if needed == 0 && words.len() > 1 {
        return Err(format!(
            "the PaliGemma task `{first}` takes nothing after it; `{}` has more",
            prompt.trim()
        ));
    }
    Ok(())
}

/// The text PaliGemmaProcessor tokenises for `text` that holds the image
/// marker: BOS after the last marker, `\n` at the end.
pub fn processor_text(text: &str, marker: &str, bos: &str) -> String {
    match text.rfind(marker) {
        Some(i) => {
            let end = i + marker.len();
            format!("{}{bos}{}\n", &text[..end], &text[end..])
        }
        None => format!("{bos}{text}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_prefixes_are_checked() {
        for ok in [
            "caption en",
            "cap en",
            "describe de",
            "ocr",
            "answer en What is in the image?",
            "question en a red circle",
            "detect circle",
            "detect circle ; square",
            "segment cat",
        ] {
            assert_eq!(check_task_prefix(ok), Ok(()), "{ok}");
        }
        let e = check_task_prefix("What is in the image?").unwrap_err();
        assert!(e.contains("unknown PaliGemma task prefix `What`"), "{e}");
        assert!(
            e.contains("caption {lang}") && e.contains("detect {object}"),
            "{e}"
        );
        let e = check_task_prefix("answer en").unwrap_err();
        assert!(
            e.contains("answer {lang} {question}") && e.contains("{question}"),
            "{e}"
        );
        assert!(check_task_prefix("caption").is_err());
        assert!(check_task_prefix("detect").is_err());
        assert!(check_task_prefix("ocr now").is_err());
        assert!(check_task_prefix("  ").is_err());
    }

    fn hub_config() -> Value {
        serde_json::json!({
            "model_type": "paligemma",
            "image_token_index": 257152,
            "projection_dim": 2048,
            "text_config": {"model_type": "gemma", "hidden_activation": "gelu_pytorch_tanh",
                            "num_image_tokens": 256, "vocab_size": 257216},
            "vision_config": {"model_type": "siglip_vision_model", "intermediate_size": 4304,
                              "num_image_tokens": 256, "projection_dim": 2048}
        })
    }

    #[test]
    fn the_hub_config_reads_with_paligemmas_defaults() {
        let c = PaliGemmaConfig::from_value(&hub_config()).unwrap();
        assert_eq!(c.grid(), dexar_core::Grid::new(16, 16));
        let t = &c.text;
        assert_eq!(
            (t.hidden_size, t.num_hidden_layers, t.num_attention_heads),
            (2048, 18, 8)
        );
        assert_eq!(
            (t.num_key_value_heads, t.head_dim, t.vocab_size),
            (1, 256, 257216)
        );
        assert!(t.tie_word_embeddings && t.variant.norm_one_plus && t.variant.embed_scale);
        assert_eq!(t.hidden_act, "gelu_pytorch_tanh");
        assert_eq!(c.image_token_index, 257152);
        // transformers reads Gemma's legacy "gelu" as the tanh approximation
        let mut v = hub_config();
        v["text_config"]["hidden_activation"] = "gelu".into();
        assert_eq!(
            PaliGemmaConfig::from_value(&v).unwrap().text.hidden_act,
            "gelu_pytorch_tanh"
        );
    }

    #[test]
    fn configs_dexar_cannot_run_are_refused() {
        let refused = |edit: &dyn Fn(&mut Value)| {
            let mut v = hub_config();
            edit(&mut v);
            PaliGemmaConfig::from_value(&v).unwrap_err().to_string()
        };
        let e = refused(&|v| v["text_config"]["model_type"] = "gemma3".into());
        assert!(
            e.contains("text model gemma3") && e.contains("gemma or gemma2"),
            "{e}"
        );
        let e = refused(&|v| v["text_config"]["hidden_activation"] = "silu".into());
        assert!(e.contains("gelu_pytorch_tanh only"), "{e}");
        let e = refused(&|v| v["projection_dim"] = 1024.into());
        assert!(e.contains("projection_dim (1024)"), "{e}");
        let e = refused(&|v| v["vision_config"]["num_image_tokens"] = 64.into());
        assert!(e.contains("num_image_tokens (64)"), "{e}");
        let e = refused(&|v| v["vision_config"]["model_type"] = "clip_vision_model".into());
        assert!(e.contains("vision tower clip_vision_model"), "{e}");
        let e = refused(&|v| v["text_config"]["sliding_window"] = 128.into());
        assert!(e.contains("sliding_window"), "{e}");
    }

    #[test]
    fn a_paligemma_2_config_reads_with_gemma_2s_defaults() {
        let mut v = hub_config();
        v["projection_dim"] = 2304.into();
        v["text_config"] = serde_json::json!({"model_type": "gemma2", "num_image_tokens": 256,
                                              "final_logit_softcapping": null});
        let t = PaliGemmaConfig::from_value(&v).unwrap().text;
        assert_eq!(
            (t.hidden_size, t.num_hidden_layers, t.num_key_value_heads),
            (2304, 26, 4)
        );
        let var = &t.variant;
        assert!(var.sandwich_norms && var.norm_one_plus && var.embed_scale);
        assert_eq!(var.attn_softcap, Some(50.0));
        assert_eq!(var.final_softcap, None);
        assert_eq!(var.query_pre_attn_scalar, Some(256.0));
        // the context stays within the sliding window
        assert_eq!((t.sliding_window, t.max_position_embeddings), (None, 4096));
    }

    #[test]
    fn the_processor_adds_bos_after_the_image_and_a_newline() {
        assert_eq!(
            processor_text("<image>caption en", "<image>", "<bos>"),
            "<image><bos>caption en\n"
        );
        assert_eq!(processor_text("ocr", "<image>", "<bos>"), "<bos>ocr\n");
    }
}
