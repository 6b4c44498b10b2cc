//! Plugin files: a truncated library (once SIGBUS at dlopen, at every start
//! when it sat in a plugin directory), a FIFO, an unusable temporary
//! directory, and private copies that crashed runs left behind.
#![cfg(target_os = "linux")]

use super::*;

/// A private directory holding the `legrad` example plugin and a copy of it
/// cut inside its code.
fn plugin_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let whole = dexar_tests::build_plugin("legrad", "legrad", dir.path());
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("libcut.so");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    (dir, whole, cut)
}

#[test]
fn a_truncated_plugin_is_refused_not_a_crash() {
    let (_dir, _, cut) = plugin_dir();
    let o = explain(&tiny_llava(), &["--plugin", s(&cut), "--no-png"]);
    assert_user_error(&o, "--plugin: plugin");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("libcut.so") && err.contains("ELF"), "{err}");
}

#[test]
fn a_bad_file_in_a_plugin_directory_is_a_warning_labelled_by_its_source() {
    let (dir, _, _) = plugin_dir();
    let out = tempfile::tempdir().unwrap();
    let model = tiny_llava();
    let args = explain_args(&model, out.path(), &["--strategy", "legrad", "--no-png"]);
    let mut cmd = isolated();
    cmd.args(&args).env("DEXAR_PLUGIN_PATH", dir.path());
    let o = dexar_tests::run_within(cmd, b"", LIMIT);
    let err = assert_ok(&o);
    assert!(
        err.starts_with("warning: DEXAR_PLUGIN_PATH: plugin ") && err.contains("libcut.so"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The same directory, and a missing one, in the config file.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "plugin_dirs = [{:?}, \"/nonexistent/plugins\"]\n",
            s(dir.path())
        ),
    )
    .unwrap();
    let mut cmd = isolated();
    cmd.args(&args).env("DEXAR_CONFIG", &file);
    let o = dexar_tests::run_within(cmd, b"", LIMIT);
    let err = assert_ok(&o);
    let label = format!("warning: config {} plugin_dirs: ", s(&file));
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.lines().all(|l| l.starts_with(&label)), "{err}");
    assert!(
        err.contains("libcut.so") && err.contains("/nonexistent/plugins"),
        "{err}"
    );
    assert!(!err.contains("DEXAR_PLUGIN_PATH"), "{err}");
}

#[test]
fn a_fifo_plugin_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libfifo.so");
    dexar_tests::mkfifo(&fifo);
    let o = explain(&tiny_llava(), &["--plugin", s(&fifo)]);
    assert_user_error(&o, "is a FIFO (named pipe), not a regular file");
}

#[test]
fn a_missing_temporary_directory_is_blamed_not_the_plugin() {
    let (_dir, whole, _) = plugin_dir();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = isolated();
    cmd.args(explain_args(
        &tiny_llava(),
        out.path(),
        &["--plugin", s(&whole)],
    ))
    .env("TMPDIR", "/nonexistent/tmp");
    let o = dexar_tests::run_within(cmd, b"", LIMIT);
    assert_user_error(&o, "into the temporary directory /nonexistent/tmp");
}

#[test]
fn private_copies_left_by_dead_runs_are_removed_at_start() {
    let (_dir, whole, _) = plugin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let stale = tmp.path().join("dexar-plugin-999999999-abc123.so");
    let unrelated = tmp.path().join("dexar-plugin-notes.txt");
    std::fs::write(&stale, b"left by a crash").unwrap();
    std::fs::write(&unrelated, b"not ours").unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = isolated();
    cmd.args(explain_args(
        &tiny_llava(),
        out.path(),
        &["--plugin", s(&whole), "--no-png"],
    ))
    .env("TMPDIR", tmp.path());
    assert_ok(&dexar_tests::run_within(cmd, b"", LIMIT));
    assert!(!stale.exists(), "the stale copy is gone");
    assert!(unrelated.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "and this run's own copy too: {left:?}");
}
