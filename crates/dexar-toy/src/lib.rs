//! dexar-toy: the synthetic shapes world behind dexar's bundled demo model.
//!
//! What it is for: scenes of coloured shapes whose ground truth is known to
//! the pixel ([`generate`]), text about them whose object words are linked to
//! those pixels ([`LinkedText`]), the closed word-level vocabulary and
//! Hugging Face `tokenizer.json` the toy VLM uses ([`vocab`]), and a data set
//! writer ([`write_dataset`]) so attribution quality can be scored exactly.
//!
//! What it is not: no model, no training loop, no attribution. It depends on
//! `image` and `serde` only; everything is deterministic from a seed with a
//! self-contained PRNG, so data sets never change with a dependency upgrade.

mod dataset;
mod rng;
pub mod shapes;
mod text;
pub mod vocab;

use std::path::PathBuf;

pub use dataset::{
    write_dataset, write_dataset_with, DatasetRecord, DatasetSummary, LinkedObject, DATA_FILE,
};
pub use shapes::{
    generate, BBox, Color, Scene, SceneConfig, SceneObject, Shape, BACKGROUND, MAX_OBJECTS,
};
pub use text::{
    number_word, LinkedText, QaPair, Region, Relation, WordLink, WordRole, DESCRIBE_PROMPT,
};
pub use vocab::{chat_prompt, tokenizer_json, vocabulary};

/// Errors from writing data sets.
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
    #[error("cannot serialise a data set record: {0}")]
    Json(#[from] serde_json::Error),
}
