//! Errors of model loading, input preparation and generation. Each message
//! names the file or input at fault and, where possible, what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {what} (expected a Hugging Face checkpoint directory: LLaVA or Qwen-VL)", path.display())]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("unsupported model_type `{model_type}` in {}: dexar supports {}", path.display(), crate::checkpoint::SUPPORTED_MODEL_TYPES)]
    Unsupported { path: PathBuf, model_type: String },
    #[error("image {}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// An image the model's processor cannot take (too small, too elongated).
    #[error("image {0}")]
    ImageContent(String),
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("sequence of {len} tokens exceeds the model's context of {max} tokens; shorten the prompt or ask for fewer tokens")]
    ContextOverflow { len: usize, max: usize },
    /// A value the user gave (a model name, a dtype, a device) that is not valid.
    #[error("{0}")]
    Input(String),
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::BadFile {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
