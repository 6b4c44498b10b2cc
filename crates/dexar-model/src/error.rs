//! Errors of model loading, input preparation and generation. Each message
//! names the file or input at fault and, where possible, what to do.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {what} (expected a Hugging Face checkpoint directory: LLaVA, Qwen-VL or SmolVLM)", path.display())]
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
    /// NaN or infinite logits: corrupt weights or a broken config, never a prompt.
    #[error("the model's output is not finite (NaN or infinity) at answer token {step}: its weights or config.json are likely corrupt")]
    NonFinite { step: usize },
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

/// Reads a checkpoint file whole (a regular file, at most
/// [`dexar_core::files::MAX_TEXT_FILE`] bytes); a missing one is
/// [`ModelError::MissingFile`] with `missing` as the explanation.
pub(crate) fn read_checkpoint_file(path: &Path, missing: &'static str) -> Result<Vec<u8>> {
    dexar_core::read_regular(path, dexar_core::files::MAX_TEXT_FILE).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.into(),
            what: missing,
        },
        _ => ModelError::bad_file(path, format!("cannot read: {e}")),
    })
}

/// [`read_checkpoint_file`] as UTF-8 text.
pub(crate) fn read_checkpoint_text(path: &Path, missing: &'static str) -> Result<String> {
    String::from_utf8(read_checkpoint_file(path, missing)?)
        .map_err(|_| ModelError::bad_file(path, "not UTF-8 text"))
}

/// [`read_checkpoint_text`] of an optional file: `None` when it does not exist.
pub(crate) fn read_optional_text(path: &Path) -> Result<Option<String>> {
    match read_checkpoint_text(path, "") {
        Err(ModelError::MissingFile { .. }) => Ok(None),
        other => other.map(Some),
    }
}
