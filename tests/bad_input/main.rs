//! The bad-input corpus: every class of bad input dexar must turn into a
//! clear one-line error (exit 2), a warning, or a REPL message with the
//! prompt back; never a panic, an abort, a signal or a hang. The inputs are
//! generated here (broken copies of the fixture checkpoint, PNG headers that
//! declare gigapixels, FIFOs, truncated plugins), nothing is committed.
//!
//! Classes: standard output closed or full (`output`), images (`images`),
//! checkpoint files and their values (`model_files`), plugin files and
//! directories (`plugins`), flags and prompts (`flags`), and what is
//! written (`data_safety`).

mod data_safety;
mod flags;
mod images;
mod model_files;
mod output;
mod plugins;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub use dexar_tests::arg as s;
pub use dexar_tests::assert_user_error;

/// Longer than any of these runs takes; reaching it means a hang.
pub const LIMIT: Duration = Duration::from_secs(180);

pub fn tiny_llava() -> PathBuf {
    dexar_tests::fixtures().join("tiny-llava")
}

pub fn square_png() -> PathBuf {
    dexar_tests::fixtures().join("images/square.png")
}

/// `dexar` with no user config, plugin path or graphics setting.
pub fn isolated() -> Command {
    let mut cmd = dexar_tests::dexar();
    cmd.env("DEXAR_CONFIG", "/nonexistent/dexar-config.toml")
        .env_remove("DEXAR_PLUGIN_PATH")
        .env_remove("DEXAR_GRAPHICS")
        .env_remove("DEXAR_LOG");
    cmd
}

/// Runs `dexar ARGS` (isolated) to the end, failing on a hang.
pub fn run(args: &[&str]) -> Output {
    let mut cmd = isolated();
    cmd.args(args);
    dexar_tests::run_within(cmd, b"", LIMIT)
}

/// `dexar explain` of the fixture image with `model`, into `out`, plus `extra`.
pub fn explain_args<'a>(model: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["explain", "--model", s(model), "--out", s(out)];
    if !extra.contains(&"--image") {
        args.extend(["--image", square_png_str()]);
    }
    if !extra
        .iter()
        .any(|a| *a == "--prompt" || *a == "--raw-prompt")
    {
        args.extend(["--prompt", "What is in the image?"]);
    }
    if !extra.contains(&"--max-tokens") {
        args.extend(["--max-tokens", "2"]);
    }
    args.extend(extra);
    args
}

/// Runs explain (see [`explain_args`]) into a fresh output directory.
pub fn explain(model: &Path, extra: &[&str]) -> Output {
    let out = tempfile::tempdir().unwrap();
    run(&explain_args(model, out.path(), extra))
}

fn square_png_str() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| s(&square_png()).to_string())
}

/// Asserts success with no panic; returns stderr.
pub fn assert_ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "status {:?}; stderr: {err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    err
}
