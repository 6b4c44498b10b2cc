//! dexar-toy: the synthetic shapes world behind dexar's bundled demo model.
//!
//! What it is for: scenes of coloured shapes whose ground truth is known to
//! the pixel ([`generate`]), text about them whose object words are linked to
//! those pixels ([`LinkedText`]), the closed word-level vocabulary and
//! Hugging Face `tokenizer.json` the toy VLM uses ([`vocab`]), and a data set
//! writer ([`write_dataset`]) so attribution quality can be scored exactly;
//! and the demo VLM itself: its llava-hf configuration ([`ToyModelConfig`]),
//! its training in candle through `dexar-model`'s own model definition
//! ([`train`]), a held-out check of its answers ([`answer_accuracy`]), and
//! the trained checkpoint and sample images compiled in ([`bundled`],
//! [`load_bundled`], [`SAMPLE_IMAGES`]).
//!
//! What it is not: no model code of its own (the model is `dexar-model`'s
//! `LlavaModel`, trained as loaded) and no attribution method (that is
//! `dexar-core`). The scenes are deterministic from a seed with a
//! self-contained PRNG, so data sets never change with a dependency upgrade.

mod bundled;
mod dataset;
mod eval;
pub mod model_config;
mod rng;
pub mod shapes;
mod text;
mod train;
pub mod vocab;

use std::path::PathBuf;

pub use bundled::{
    bundled, default_image, export_bundled, load_bundled, BUNDLED_LABEL, SAMPLE_IMAGES,
};
pub use dataset::{
    write_dataset, write_dataset_with, DatasetRecord, DatasetSummary, LinkedObject, DATA_FILE,
};
pub use eval::{answer_accuracy, answer_accuracy_with, AnswerAccuracy, Tally, HELD_OUT_SEED};
pub use model_config::{preprocessor_json, ToyModelConfig};
pub use shapes::{
    generate, BBox, Color, Scene, SceneConfig, SceneObject, Shape, BACKGROUND, MAX_OBJECTS,
};
pub use text::{
    number_word, LinkedText, QaPair, Region, Relation, WordLink, WordRole, DESCRIBE_PROMPT,
};
pub use train::{
    train, PatchLabels, ProbeReadout, ProbeShaping, TrainOptions, TrainProgress, TrainReport,
    TrainStage, CHECKPOINT_FILES, TRAIN_SEED,
};
pub use vocab::{chat_prompt, tokenizer_json, vocabulary};

/// The most scenes one command takes (`dexar toy accuracy --n`, `toy data
/// --n`, `eval --data toy:N`): more would run for days.
pub const MAX_SCENES: u64 = 100_000;

/// Errors from writing data sets, training and evaluating the toy model.
#[derive(Debug, thiserror::Error)]
pub enum ToyError {
    #[error("cannot write {}: {source} (is the directory writable and the disk not full?)", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("cannot serialise JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid training options: {0}")]
    Options(String),
    #[error("training diverged at step {step} (loss {loss}); lower the learning rate")]
    Diverged { step: usize, loss: f32 },
    #[error(transparent)]
    Model(#[from] dexar_model::ModelError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
