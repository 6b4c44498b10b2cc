//! What the end-to-end tests share: the `dexar` binary of this workspace
//! (built once per test process, so it is never stale), the fixture paths,
//! and example plugins built and placed where the host accepts them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
