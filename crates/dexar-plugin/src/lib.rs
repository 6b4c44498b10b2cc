//! dexar-plugin: attribution strategies as native plugins, behind a stable C ABI.
//!
//! What it is for:
//! - [`abi`]: the versioned C ABI (`#[repr(C)]` types mirrored by
//!   `include/dexar_plugin.h`): a handshake symbol, a descriptor, a read-only
//!   view of one step trace, host-owned output and error buffers.
//! - [`sdk`]: writing a plugin in Rust: implement [`sdk::PluginStrategy`] and
//!   call [`export_plugin!`]. Plugin crates depend on this crate with
//!   `default-features = false`, which pulls in no dependencies.
//! - `host` (feature `host`, on by default): [`host::PluginRegistry`] loads
//!   libraries, refuses bad ones with one-line errors and exposes each plugin
//!   as a `dexar_core::Strategy`.
//!
//! What it is not: a sandbox. A plugin is native code running in the host
//! process. The host contains what it can (errors, Rust panics, NaN output,
//! over-budget calls become strategy errors) but a crash in C code, or a call
//! that never returns, cannot be contained.
//!
//! See `plugins/` at the workspace root for example plugins meant as templates.

pub mod abi;
#[cfg(feature = "host")]
pub mod host;
pub mod sdk;
