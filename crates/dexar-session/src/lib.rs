//! dexar-session: the state every dexar front end drives.
//!
//! What it is for: the model and how it was named ([`LoadedModel`]), the
//! image being discussed ([`LoadedImage`]), the conversation and the last
//! answer with its step traces over every layer ([`AppState`], [`Answer`]),
//! the settings the user changes, the strategies (built-ins and plugins,
//! [`strategies`]) and the computation of the map a selection of tokens
//! shows ([`Shown`]); plus generation on a worker thread that streams each
//! step as it is known ([`generation`]), and the probe of one heatmap's
//! faithfulness ([`probe`]); and session files: recording a conversation
//! crash-safely as it streams ([`recorder`]), their bytes ([`format`],
//! [`records`], docs/SESSION_FORMAT.md) and reading them back ([`file`])
//! into the same state, with or without the model. The REPL and the
//! full-screen TUI drive it; replays drive the same state.
//!
//! What it is not: no terminal, no drawing, no command syntax. Messages are
//! plain sentences; a front end adds its own hints (a REPL command, a key).

pub mod error;
pub mod file;
pub mod format;
pub mod generation;
pub mod image;
pub mod model;
pub mod probe;
pub mod recorder;
pub mod records;
pub mod selection;
pub mod shown;
pub mod state;
pub mod strategies;

pub use error::StateError;
pub use file::{list_sessions, Outline, ReadError, RecordedTurn, Session};
pub use generation::{generate, Outcome, STEP_DELAY_ENV};
pub use image::{display_view, LoadedImage};
pub use model::{open_model, LoadedModel, ModelIdentity};
pub use probe::{Probe, ProbeRow, Rescored, PROBE_FRACTIONS};
pub use recorder::{default_sessions_dir, Destination, Recorder};
pub use records::TraceDtype;
pub use selection::Selection;
pub use shown::Shown;
pub use state::{Answer, AppState, Ask, Recorded, Settings, TraceLayers};
