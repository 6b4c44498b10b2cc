//! Helpers shared by the end-to-end tests of the `dexar` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// Builds an example plugin of this workspace into the test's target dir and
/// copies it into a private directory (the host refuses group/world-writable places).
#[cfg(target_os = "linux")]
pub fn build_plugin(package: &str, lib: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        package,
        "--manifest-path",
        s(&manifest),
        "--target-dir",
        s(target),
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building plugin {package}");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let copy = dir.join(format!("lib{lib}.so"));
    std::fs::copy(profile_dir.join(format!("lib{lib}.so")), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    copy
}
