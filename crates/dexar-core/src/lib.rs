//! dexar-core: the DEX-AR method as plain data and arithmetic.
//!
//! What it is for: the [`StepTrace`] a traced generation step produces, the
//! DEX-AR head scores and maps computed from it (see `shared/DEXAR.md`), the
//! layer selection, the built-in attribution strategies, the map helpers
//! shared by every front end, the quality metrics of `dexar eval`, the
//! mapping of answer words to tokens, atomic file writes and the opening of
//! user-named files (regular files only).
//!
//! What it is not: it knows nothing of candle, model files, terminals or
//! plugins. Models produce traces; everything else consumes them.

pub mod atomic;
pub mod files;
pub mod layers;
pub mod maps;
pub mod metrics;
pub mod regions;
pub mod strategy;
pub mod trace;
pub mod words;

pub use atomic::write_atomic;
pub use files::{check_regular, open_regular, read_regular, read_regular_to_string};
pub use layers::LayerSelection;
pub use maps::{minmax, upsample_bilinear, weighted_sum, Grid, MapError, TokenMap};
pub use regions::{compose_tiles, ImageRegion, RegionKind, RegionMap, RegionView, WHOLE_IMAGE};
pub use strategy::{
    builtin_strategy, weighted_sentence_map, DexarStrategy, GradXAttnStrategy, HeadScores,
    RawAttentionStrategy, Strategy, StrategyError, BUILTIN_NAMES,
};
pub use trace::{PositionKind, StepTrace, TraceError};
pub use words::one_line;
