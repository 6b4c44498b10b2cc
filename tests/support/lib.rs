//! What the end-to-end tests share: the `dexar` binary of this workspace
//! (built once per test process, so it is never stale), the fixture paths,
//! and example plugins built and placed where the host accepts them.

#[cfg(unix)]
pub mod pty;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf()
}

/// The fixture checkpoints and images of dexar-model's parity tests.
pub fn fixtures() -> PathBuf {
    workspace().join("crates/dexar-model/tests/fixtures")
}

/// The target directory and the profile directory this test runs from.
fn target_dirs() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable under target/<profile>/deps")
        .to_path_buf();
    let target = profile_dir
        .parent()
        .expect("profile directory under the target directory")
        .to_path_buf();
    (target, profile_dir)
}

/// Builds `package` of this workspace with cargo into this test's target
/// directory and profile; panics with cargo's exit status if that fails.
fn cargo_build(args: &[&str]) {
    let (target, profile_dir) = target_dirs();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace().join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "--manifest-path",
        s(&manifest),
        "--target-dir",
        s(&target),
    ]);
    cmd.args(args);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "cargo build {args:?}: {status}");
}

/// The `dexar` binary: `DEXAR_BIN` if set, else this workspace's, built
/// (or found up to date) by cargo the first time a test asks for it.
pub fn dexar_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("DEXAR_BIN") {
            return PathBuf::from(bin);
        }
        cargo_build(&["-p", "dexar-cli", "--bin", "dexar"]);
        target_dirs()
            .1
            .join(format!("dexar{}", std::env::consts::EXE_SUFFIX))
    })
}

/// A `dexar` command.
pub fn dexar() -> Command {
    Command::new(dexar_bin())
}

/// Runs `dexar ARGS` to the end.
pub fn run(args: &[&str]) -> std::process::Output {
    dexar().args(args).output().expect("dexar runs")
}

/// `dexar explain` arguments that run the LeGrad example plugin `plugin` on
/// every layer, without overlays.
pub fn legrad_args(plugin: &Path) -> [&str; 7] {
    [
        "--plugin",
        s(plugin),
        "--strategy",
        "legrad",
        "--no-png",
        "--layer-index",
        "0",
    ]
}

/// In an explain.json of [`legrad_args`], LeGrad's maps equal the unfiltered
/// DEX-AR maps: its mean over heads and layers of ReLU(g) on the grid is the
/// unfiltered sum divided by a constant, which normalisation removes.
pub fn assert_legrad_is_unfiltered(doc: &serde_json::Value) {
    let legrad = doc["strategies"]["legrad"]["per_token"].as_array().unwrap();
    let unfiltered = doc["strategies"]["dexar-unfiltered"]["per_token"]
        .as_array()
        .unwrap();
    assert_eq!(legrad.len(), unfiltered.len());
    for (a, b) in legrad.iter().zip(unfiltered) {
        for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5);
        }
    }
}

/// A two-token, one-repetition `dexar bench` with `args` (the model, the
/// prompt, ...), its JSON report written under `dir`: stdout and the report.
pub fn bench_quick(args: &[&str], dir: &Path) -> (String, serde_json::Value) {
    let json = dir.join("bench.json");
    let mut all = vec!["bench"];
    all.extend(args);
    all.extend(["--tokens", "2", "--repeat", "1", "--json", s(&json)]);
    let o = run(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), doc)
}

/// `dexar eval` of `model` on the data directory `data` with DEX-AR: every
/// item of its data.jsonl must be scored, none skipped.
pub fn eval_scores_every_item(model: &Path, data: &Path) {
    let report = data.join("report.json");
    let o = run(&[
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--strategy",
        "dexar",
        "--out",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let lines = std::fs::read_to_string(data.join("data.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(doc["data"]["items"], lines as u64);
    assert_eq!(doc["data"]["skipped"], 0);
}

/// Runs `cmd` to the end with `input` on its standard input and its output
/// collected.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A command that exits early may close its end; what it read is enough.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("the command ends")
}

/// A `dexar` command whose home, data directory (where sessions are
/// recorded) and config directory are in `home`, unaffected by the
/// caller's environment.
pub fn dexar_at(home: &Path) -> Command {
    let mut cmd = dexar();
    cmd.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("DEXAR_CONFIG")
        .env_remove("DEXAR_GRAPHICS")
        .env_remove("DEXAR_PLUGIN_PATH");
    cmd
}

/// The REPL at `home` on the fixture model and square image, `input` piped
/// in; it must exit 0 without a panic.
pub fn repl_at(home: &Path, args: &[&str], input: &str) -> std::process::Output {
    let mut cmd = dexar_at(home);
    cmd.args(["--model", s(&fixtures().join("tiny-llava"))])
        .args(["--image", s(&fixtures().join("images/square.png"))])
        .args(["--graphics", "ascii", "--size", "16x8"])
        .args(args);
    let o = run_with_input(&mut cmd, input.as_bytes());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("panicked"), "{err}");
    o
}

/// A session of one four-token answer of the fixture model, recorded by
/// the REPL to `home/NAME`.
pub fn record_session(home: &Path, name: &str) -> PathBuf {
    let session = home.join(name);
    repl_at(
        home,
        &["--session", s(&session), "--max-tokens", "4"],
        "What is in the image?\n",
    );
    session
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    s(p)
}

/// Builds an example plugin of this workspace and copies it into `dir`, a
/// private directory (the host refuses group/world-writable places).
#[cfg(target_os = "linux")]
pub fn build_plugin(package: &str, lib: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    cargo_build(&["-p", package]);
    let profile_dir = target_dirs().1;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let copy = dir.join(format!("lib{lib}.so"));
    std::fs::copy(profile_dir.join(format!("lib{lib}.so")), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    copy
}

/// `dexar eval` of `model` on a toy data set of two scenes written to a new
/// directory (returned): every item scored, none skipped.
pub fn eval_on_toy_data(model: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    dexar_toy::write_dataset(dir.path(), 2, 3).expect("toy data set");
    let report = dir.path().join("r.json");
    let o = run(&[
        "eval",
        "--model",
        s(model),
        "--data",
        s(dir.path()),
        "--strategy",
        "dexar",
        "--out",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("eval report"))
            .expect("JSON report");
    let lines = std::fs::read_to_string(dir.path().join("data.jsonl"))
        .expect("data.jsonl")
        .lines()
        .count();
    assert_eq!(doc["data"]["items"], lines as u64);
    assert_eq!(doc["data"]["skipped"], 0);
    dir
}

/// Asserts exit code 2 and a single `error:` line on stderr mentioning `needle`.
pub fn assert_user_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit code for {needle}; stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line for {needle}: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A temporary copy of the files of the checkpoint directory `dir`, changed by `edit`.
pub fn copy_checkpoint(dir: &Path, edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("temporary directory");
    for e in std::fs::read_dir(dir).expect("checkpoint directory") {
        let p = e.expect("directory entry").path();
        std::fs::copy(&p, copy.path().join(p.file_name().expect("file name"))).expect("copy");
    }
    edit(copy.path());
    copy
}

/// A copy of the fixture checkpoint `tiny-llava`, changed by `edit`.
pub fn model_copy(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    copy_checkpoint(&fixtures().join("tiny-llava"), edit)
}

/// Runs `cmd` with `input` on stdin; panics if it is still running after
/// `limit` (a hang is a failure, not a stuck test run).
pub fn run_within(mut cmd: Command, input: &[u8], limit: Duration) -> Output {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dexar runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A PNG file whose header declares `width` x `height` pixels (its pixel
/// data is that of a 1x1 image): a decompression bomb in a few bytes.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encode");
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, ..., CRC at 29.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Makes a FIFO (named pipe) at `path`.
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).expect("path without NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}
