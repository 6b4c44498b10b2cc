//! `explain.json`, schema `dexar.explain/1` (docs/EXPLAIN_JSON.md). Fields
//! may be added; none renamed or removed without bumping the schema.

use serde::Serialize;
use std::collections::BTreeMap;

pub const SCHEMA: &str = "dexar.explain/1";

#[derive(Debug, Serialize)]
pub struct ExplainJson {
    pub schema: &'static str,
    pub model: ModelInfo,
    pub settings: Settings,
    pub prompt: PromptInfo,
    pub tokens: Vec<TokenInfo>,
    pub strategies: BTreeMap<String, StrategyOutput>,
    /// Per token, `len(layers_used) * num_heads` values, layer-major: `w^{l,t,i}`.
    pub head_weights: Vec<Vec<f32>>,
    /// The image's blocks of tokens: one covering the whole image for most
    /// models; SmolVLM's tiles and global view.
    pub regions: Vec<RegionInfo>,
}

/// One image region as explain.json describes it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionInfo {
    /// `global` or `tile`.
    pub kind: &'static str,
    /// Half-open `[start, end)` in `prompt.input_ids`.
    pub span: [usize; 2],
    pub grid: [usize; 2],
    /// `[x0, y0, x1, y1]` on the image, normalised to [0, 1].
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

impl RegionInfo {
    pub fn of(r: &dexar_core::ImageRegion) -> Self {
        Self {
            kind: r.kind.as_str(),
            span: [r.span.0, r.span.1],
            grid: [r.grid.height, r.grid.width],
            bbox: r.bbox,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: String,
    pub model_type: String,
    pub text_model_type: String,
    pub num_layers: usize,
    pub num_heads: usize,
    pub grid: [usize; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub layer_index: i64,
    pub layers_used: Vec<usize>,
    pub topk: usize,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub dtype: String,
    pub device: String,
    pub stop_reason: String,
}

impl Settings {
    /// `settings.mode`: how the answer came about.
    pub fn mode(teacher_forced: bool) -> &'static str {
        if teacher_forced {
            "teacher-forced"
        } else {
            "generate"
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptInfo {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub image_span: [usize; 2],
    pub image: String,
}

#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub index: usize,
    pub id: u32,
    pub text: String,
    pub position: usize,
    pub weight: f32,
    pub no_visual_evidence: bool,
}

#[derive(Debug, Serialize, Default)]
pub struct StrategyOutput {
    pub per_token: Vec<Vec<f32>>,
    pub token_weights: Vec<f32>,
    pub sentence: Vec<f32>,
    /// Images of several regions only: the global view's maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalOutput>,
}

/// The global view's maps of an image of several regions.
#[derive(Debug, Serialize, Default)]
pub struct GlobalOutput {
    pub grid: [usize; 2],
    /// One array per token, min-max normalised.
    pub per_token: Vec<Vec<f32>>,
    /// `minmax(Σ_t weight_t · global_t)`.
    pub sentence: Vec<f32>,
}
