//! What can go wrong when a front end changes or queries the state. Each
//! message is one sentence a user can act on and names no UI command.

use dexar_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("image {label}: {message}")]
    Image { label: String, message: String },
    #[error("the bundled model does not load ({0})")]
    Bundled(ModelError),
    #[error("nothing to show yet: type a question about the image first")]
    NothingToShow,
    #[error("the last answer has no tokens to show; ask another question")]
    EmptyAnswer,
    #[error("no token {index}: the answer has tokens 0-{last}")]
    NoToken { index: usize, last: usize },
    #[error("no \"{0}\" in the answer")]
    NoWord(String),
    #[error("unknown strategy {name}{}", hint.as_ref().map(|h| format!(" (did you mean {h}?)")).unwrap_or_default())]
    UnknownStrategy { name: String, hint: Option<String> },
    #[error("{0}")]
    Strategy(String),
    #[error("leave <image> out of the question: dexar places the image itself")]
    ImageInPrompt,
    #[error("no question to explain an answer to yet: ask one first")]
    NoQuestion,
    #[error("the answer tokenizes to nothing; give some text")]
    EmptyTarget,
    #[error("{0}")]
    Plugin(String),
    #[error("probe: {0}")]
    Probe(String),
    #[error("the model is not loaded (this session was opened without it): its answers can be shown and re-explained, not continued")]
    NoModel,
    #[error(transparent)]
    Session(#[from] crate::file::ReadError),
    /// A turn of a session that is not there or cannot be shown.
    #[error("{0}")]
    Turn(String),
}

impl StateError {
    /// A failing strategy or plugin, on one line.
    pub(crate) fn strategy(e: impl std::fmt::Display) -> Self {
        Self::Strategy(dexar_core::one_line(&e.to_string()))
    }

    /// A probe that cannot be scored (a non-finite score), on one line.
    pub(crate) fn probe(e: impl std::fmt::Display) -> Self {
        Self::Probe(dexar_core::one_line(&e.to_string()))
    }
}
