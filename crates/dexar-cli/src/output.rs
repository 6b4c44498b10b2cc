//! `explain.json`, schema `dexar.explain/1` (shared/EXPLAIN_JSON.md). Fields
//! may be added; none renamed or removed without bumping the schema.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

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
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub path: String,
    pub model_type: String,
    pub text_model_type: String,
    pub num_layers: usize,
    pub num_heads: usize,
    pub grid: [usize; 2],
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
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
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
