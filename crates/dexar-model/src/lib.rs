//! dexar-model: vision-language models in candle (LLaVA-1.5 / BakLLaVA,
//! Qwen2-VL, Qwen2.5-VL, Qwen3-VL, PaliGemma), instrumented for exact, streaming DEX-AR
//! (see `shared/DEXAR.md`).
//!
//! What it is for: naming a model ([`ModelSpec`]: the bundled one, a
//! directory or a Hugging Face id in the local cache) and loading it
//! (config, weights in either name layout, tokenizer, image processor, chat
//! template), preparing prompts as transformers does, and generating with a
//! [`dexar_core::StepTrace`] per token computed by the local backward; plus
//! a naive full-recompute autograd path as a second implementation, and
//! random LLaVA- or Qwen2-VL-shaped checkpoints for benchmarks. What it is not:
//! strategies, rendering or any UI. It is the only crate of dexar (besides
//! the demo model's trainer) that knows candle.

pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod llava;
mod local_backward;
pub mod models;
pub mod naive;
pub mod nn;
pub mod options;
pub mod preprocess;
pub mod prompt;
pub mod score;
pub mod spec;
pub mod synthetic;
pub mod vision;

pub use chat::{apply_template, ChatTemplate, JinjaTemplate, Turn};
pub use checkpoint::{Checkpoint, ImageMarker, ImageProcessing, MemoryCheckpoint};
pub use config::{FeatureSelect, LlavaConfig, ParseError, TextConfig, VisionConfig};
pub use error::{ModelError, Result};
pub use generate::{
    generate_traced, sample_token, Generation, GenerationSettings, GenerationTimes, Mode,
    StopReason, TracedStep,
};
pub use llava::{LlavaModel, WeightLayout};
pub use models::paligemma::{PaliGemmaConfig, PaliGemmaModel};
pub use models::qwen_vl::{QwenFamily, QwenImageProcessor, QwenVlConfig, QwenVlModel};
pub use models::smolvlm::{SmolFamily, SmolImageProcessor, SmolVlmConfig, SmolVlmModel};
pub use models::{ImageFeatures, VlModel};
pub use naive::{naive_step, NaiveStep};
pub use options::{parse_device, parse_dtype, LoadOptions};
pub use preprocess::{decode_image, load_image, ImageProcessor, Pixels};
pub use prompt::{PreparedPrompt, TextTokenizer, IMAGE_MARKER};
pub use score::{answer_logprobs, masked_answer_logprobs};
pub use spec::{HubEnv, ModelSource, ModelSpec};
pub use synthetic::{
    synthetic_checkpoint, synthetic_checkpoint_with_heads, synthetic_model, SyntheticCheckpoint,
    SyntheticFamily, SyntheticSpec,
};

/// Loads an image file and turns it into image tokens.
pub fn encode_image_file(ckpt: &Checkpoint, path: &std::path::Path) -> Result<ImageFeatures> {
    ckpt.encode_image(&load_image(path)?)
}

/// How many threads candle's CPU kernels use (RAYON_NUM_THREADS, else one per core).
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Milliseconds since `start`, rounded to 0.01 ms, for debug logs.
pub(crate) fn millis_since(start: std::time::Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e5).round() / 100.0
}
