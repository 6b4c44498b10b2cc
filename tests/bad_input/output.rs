//! Standard output closed by its reader (`| head -1`) or full (`/dev/full`):
//! a closed pipe ends the program quietly, a full device is an error.

use super::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

/// Runs `dexar ARGS` whose stdout reader has gone before it writes.
fn with_closed_stdout(args: &[&str], input: &[u8]) -> Output {
    let mut child = isolated()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "{args:?} hangs");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `dexar ARGS` with stdout on `/dev/full`.
fn into_full_device(args: &[&str], input: &[u8]) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut cmd = isolated();
    cmd.args(args);
    cmd.stdout(full);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// What writes to stdout: explain's summary and its JSON, eval's table,
/// help, the piped REPL.
fn writers(out: &Path) -> Vec<(Vec<String>, &'static [u8])> {
    let model = tiny_llava();
    let explain = |extra: &[&str]| -> Vec<String> {
        explain_args(&model, out, extra)
            .into_iter()
            .map(String::from)
            .collect()
    };
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (explain(&["--no-png"]), b"" as &[u8]),
        (explain(&["--no-png", "--json", "-"]), b""),
        (
            owned(&[
                "eval",
                "--data",
                "toy:1",
                "--no-perturbation",
                "--strategy",
                "dexar",
            ]),
            b"",
        ),
        (owned(&["--help"]), b""),
        (
            owned(&["--model", s(&model), "--graphics", "ascii"]),
            b"what is it?\n/tokens\n/show 0\n",
        ),
    ]
}

#[cfg(target_os = "linux")]
#[test]
fn a_closed_standard_output_ends_the_program_quietly() {
    let out = tempfile::tempdir().unwrap();
    for (args, input) in writers(out.path()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = with_closed_stdout(&args, input);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_standard_output_is_an_error() {
    let out = tempfile::tempdir().unwrap();
    for (args, input) in writers(out.path()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = into_full_device(&args, input);
        assert_user_error(&o, "standard output: cannot write (No space left on device");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_standard_error_changes_no_exit_code() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = tempfile::tempdir().unwrap();
    let model = tiny_llava();
    // A warning that cannot be written, then success.
    let mut cmd = isolated();
    cmd.args(explain_args(
        &model,
        out.path(),
        &["--layer-index", "99", "--no-png"],
    ))
    .stdout(Stdio::null())
    .stderr(full());
    assert_eq!(cmd.status().unwrap().code(), Some(0));
    // An error that cannot be written: still exit code 2, no panic (101).
    let mut cmd = isolated();
    cmd.args(explain_args(&model, out.path(), &["--temperature", "-1"]))
        .stderr(full());
    assert_eq!(cmd.status().unwrap().code(), Some(2));
}
