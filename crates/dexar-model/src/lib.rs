//! dexar-model: LLaVA-family vision-language models in candle, instrumented
//! for exact, streaming DEX-AR (see `shared/DEXAR.md`).
//!
//! What it is for: loading llava-hf checkpoints (config, weights in either
//! name layout, tokenizer, image processor), preparing prompts as transformers
//! does, and generating with a [`dexar_core::StepTrace`] per token computed by
//! the local backward; plus a naive full-recompute autograd path as a second
//! implementation. What it is not: strategies, rendering or any UI.

pub mod config;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod llava;
mod local_backward;
pub mod naive;
pub mod nn;
pub mod preprocess;
pub mod prompt;
pub mod score;
pub mod vision;

pub use config::{FeatureSelect, LlavaConfig, TextConfig, VisionConfig};
pub use error::{ModelError, Result};
pub use generate::{
    generate_traced, sample_token, Generation, GenerationSettings, Mode, StopReason, TracedStep,
};
pub use llava::{Checkpoint, LlavaModel, LoadOptions, WeightLayout};
pub use naive::{naive_step, NaiveStep};
pub use preprocess::{decode_image, load_image, ImageProcessor};
pub use prompt::{apply_template, PreparedPrompt, TextTokenizer, DEFAULT_TEMPLATE, IMAGE_MARKER};
pub use score::answer_logprobs;

/// Loads an image file and turns it into image tokens `[N, D]`.
pub fn encode_image_file(ckpt: &Checkpoint, path: &std::path::Path) -> Result<candle_core::Tensor> {
    let img = load_image(path)?;
    encode_image(ckpt, &img)
}

/// Preprocesses a decoded image and runs the vision tower and projector.
pub fn encode_image(ckpt: &Checkpoint, img: &image::DynamicImage) -> Result<candle_core::Tensor> {
    let (pixels, size) = ckpt.processor.preprocess(img);
    Ok(ckpt.model.encode_image(&pixels, size)?)
}
