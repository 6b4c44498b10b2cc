//! Errors of the `dexar` binary and the exit codes they map to: 2 for bad
//! input a user can fix (a file, a flag, a prompt), 1 for anything else.

use dexar_model::ModelError;
use dexar_session::StateError;

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    /// Bad input: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// Standard output was closed by its reader: the program ends quietly
    /// with exit code 0 (see [`crate::stdio`]).
    pub fn output_closed() -> Self {
        Self {
            code: 0,
            message: String::new(),
        }
    }

    /// Whether this ends the program without a message.
    pub fn is_quiet(&self) -> bool {
        self.code == 0
    }

    /// Stopped by Ctrl-C after keeping what was done: exit code 130, as a
    /// shell reports a program ended by SIGINT.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self {
            code: 130,
            message: message.into(),
        }
    }

    /// Anything else: exit code 1.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ModelError> for CliError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Candle(_) => Self::internal(e.to_string()),
            _ => Self::usage(e.to_string()),
        }
    }
}

impl From<StateError> for CliError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Model(e) => e.into(),
            StateError::Bundled(_) => Self::internal(e.to_string()),
            other => Self::usage(other.to_string()),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

pub use dexar_core::one_line;
