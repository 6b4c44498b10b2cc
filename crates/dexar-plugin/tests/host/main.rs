//! End-to-end tests of the plugin host: real shared libraries, built from the
//! example plugins, a Rust fixture and C fixtures, loaded through the C ABI.
//! See `support.rs` for how the libraries are built and found.
#![cfg(unix)]

mod containment;
mod examples;
mod header;
mod refusals;
mod support;
