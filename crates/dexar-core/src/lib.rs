//! dexar-core: the DEX-AR method as plain data and arithmetic.
//!
//! What it is for: the [`StepTrace`] a traced generation step produces, the
//! DEX-AR head scores and maps computed from it (see `shared/DEXAR.md`), the
//! built-in attribution strategies and the map helpers shared by every front end.
//!
//! What it is not: it knows nothing of candle, model files, terminals or
//! plugins. Models produce traces; everything else consumes them.

pub mod maps;
pub mod metrics;
pub mod strategy;
pub mod trace;

pub use maps::{minmax, Grid, TokenMap};
pub use strategy::{
    builtin_strategies, builtin_strategy, layer_range, DexarStrategy, GradXAttnStrategy,
    HeadScores, RawAttentionStrategy, Strategy, StrategyError, BUILTIN_NAMES,
};
pub use trace::{PositionKind, StepTrace, TraceError};
