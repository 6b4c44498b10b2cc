//! Test support: building plugins, compiling C fixtures, fixture traces.
//!
//! Where the plugins come from: the example plugins are workspace members; the
//! first test that needs them runs `cargo build -p legrad -p entropy-filter
//! -p dexar-top3 -p c-image-mass` once per test binary, with the target dir and
//! profile of this very test executable (`<target>/<profile>/deps/host-*`), so
//! it works from a clean checkout under `cargo test --workspace` or `-p
//! dexar-plugin`, with or without `CARGO_TARGET_DIR`. The artifacts are then
//! `<target>/<profile>/lib<crate>.so`. The misbehaving Rust fixture is built
//! the same way from a scratch crate; C fixtures are compiled with `$CC` (or
//! `cc`) straight into shared libraries.

use dexar_core::{Grid, ImageRegion, PositionKind, RegionKind, StepTrace};
use dexar_plugin::host::{HostOptions, PluginRegistry};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const EXAMPLES: [&str; 4] = ["legrad", "entropy-filter", "dexar-top3", "c-image-mass"];

/// Where cargo put this test executable.
struct Layout {
    workspace: PathBuf,
    target_dir: PathBuf,
    profile_dir: PathBuf,
    profile: String,
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/host-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable under <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let profile = profile_dir
            .file_name()
            .expect("profile dir name")
            .to_string_lossy()
            .into_owned();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Layout {
            workspace,
            target_dir,
            profile_dir,
            profile,
        }
    })
}

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

/// `cargo build` with this executable's profile, failing the test loudly.
fn cargo_build(manifest: &Path, packages: &[&str], target_dir: &Path) {
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match layout().profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build {packages:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lib_file(dir: &Path, crate_name: &str) -> PathBuf {
    dir.join(format!(
        "{}{}.{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    ))
}

/// The built library of an example plugin (built once per test binary).
pub fn example_artifact(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let l = layout();
        cargo_build(&l.workspace.join("Cargo.toml"), &EXAMPLES, &l.target_dir);
    });
    let path = lib_file(&layout().profile_dir, name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The misbehaving Rust fixture plugin (tests/host/fixtures/misbehave.rs),
/// built once per test binary in a scratch crate.
pub fn misbehave_artifact() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let l = layout();
            let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            let scratch = l.target_dir.join("dexar-plugin-fixtures");
            let krate = scratch.join("misbehave");
            std::fs::create_dir_all(krate.join("src")).unwrap();
            let manifest = format!(
                "[package]\nname = \"dexar-test-misbehave\"\nversion = \"0.0.0\"\n\
                 edition = \"2021\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\ndexar-plugin = {{ path = {:?}, default-features = false }}\n\n\
                 [workspace]\n",
                manifest_dir.display().to_string()
            );
            let source =
                std::fs::read(manifest_dir.join("tests/host/fixtures/misbehave.rs")).unwrap();
            write_if_changed(&krate.join("Cargo.toml"), manifest.as_bytes());
            write_if_changed(&krate.join("src/lib.rs"), &source);
            // Start from the workspace's lock file so nothing new is resolved.
            if !krate.join("Cargo.lock").exists() {
                if let Ok(lock) = std::fs::read(l.workspace.join("Cargo.lock")) {
                    write_if_changed(&krate.join("Cargo.lock"), &lock);
                }
            }
            let target = scratch.join("target");
            cargo_build(
                &krate.join("Cargo.toml"),
                &["dexar-test-misbehave"],
                &target,
            );
            lib_file(&target.join(&l.profile), "dexar-test-misbehave")
        })
        .clone()
}

/// Atomic and idempotent, for test runners that run tests in parallel
/// processes (nextest): a concurrent cargo never sees a half-written file.
fn write_if_changed(path: &Path, contents: &[u8]) {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Compiles `source` into a shared library at `out` with `-D` definitions.
pub fn compile_c_library(source: &Path, out: &Path, defines: &[&str]) {
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.args(["-shared", "-fPIC", "-O1", "-std=c99", "-Wall", "-Werror"])
        .arg("-D_POSIX_C_SOURCE=200809L")
        .arg("-I")
        .arg(include_dir());
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let out_status = cmd.arg(source).arg("-o").arg(out).output().expect("run cc");
    assert!(
        out_status.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out_status.stderr)
    );
}

/// Compiles tests/host/fixtures/fixture.c with the given definitions.
pub fn compile_c_fixture(out: &Path, defines: &[&str]) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/fixtures/fixture.c");
    compile_c_library(&source, out, defines);
}

/// A private (0700) scratch directory.
pub fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o700);
    dir
}

#[cfg(unix)]
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies a library into `dir` as `file_name`, mode 0644.
pub fn install(src: &Path, dir: &Path, file_name: &str) -> PathBuf {
    let dest = dir.join(file_name);
    std::fs::copy(src, &dest).unwrap();
    set_mode(&dest, 0o644);
    dest
}

/// A registry with default options.
pub fn registry() -> PluginRegistry {
    PluginRegistry::new(HostOptions::default())
}

/// xorshift64*: small, seeded, good enough for fixture data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A random but seeded trace: 3 layers x 4 heads over 3 BOS/prompt positions,
/// the image span (a 3x4 grid, with a leading CLS token if `cls`), 5 prompt
/// positions and 3 generated ones. Gradients in [-1, 1) with the image part of
/// every other head scaled up, so DEX-AR's head filter keeps some heads and
/// drops others; attention rows are positive and sum to 1.
pub fn fixture_trace(seed: u64, cls: bool) -> StepTrace {
    let grid = Grid::new(3, 4);
    let image_start = 3;
    let image_end = image_start + grid.len() + usize::from(cls);
    let positions = image_end + 5 + 3;
    random_trace(
        seed,
        positions,
        vec![ImageRegion::whole((image_start, image_end), grid)],
    )
}

/// A seeded trace of an image split as SmolVLM splits it: 2x2 tiles of a
/// 2x2 grid each (a text marker before each), then the global view (2x2),
/// then 3 prompt and 3 generated positions.
pub fn multi_region_trace(seed: u64) -> StepTrace {
    let grid = Grid::new(2, 2);
    let mut regions = Vec::new();
    let mut at = 2;
    for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        at += 1; // the tile's <row_r_col_c> marker
        let (x0, y0) = (c as f32 * 0.5, r as f32 * 0.5);
        regions.push(ImageRegion {
            kind: RegionKind::Tile,
            span: (at, at + 4),
            grid,
            bbox: [x0, y0, x0 + 0.5, y0 + 0.5],
        });
        at += 4;
    }
    at += 1; // <global-img>
    regions.push(ImageRegion::whole((at, at + 4), grid));
    at += 4;
    random_trace(seed, at + 3 + 3, regions)
}

/// 3 layers x 4 heads of seeded values over `positions`, the last 3 of them
/// generated. Gradients in [-1, 1) with the image part of every other head
/// scaled up, so DEX-AR's head filter keeps some heads and drops others;
/// attention rows are positive and sum to 1.
fn random_trace(seed: u64, positions: usize, regions: Vec<ImageRegion>) -> StepTrace {
    let mut rng = Rng::new(seed);
    let (layers, heads) = (vec![5, 6, 7], 4);
    let is_image = |j: usize| regions.iter().any(|r| j >= r.span.0 && j < r.span.1);
    let kinds = (0..positions)
        .map(|j| {
            if is_image(j) {
                PositionKind::Image
            } else if j >= positions - 3 {
                PositionKind::Generated
            } else {
                PositionKind::Prompt
            }
        })
        .collect();
    let (mut grads, mut attn) = (Vec::new(), Vec::new());
    for _slot in 0..layers.len() {
        for head in 0..heads {
            let row: Vec<f32> = (0..positions).map(|_| rng.unit() + 1e-3).collect();
            let sum: f32 = row.iter().sum();
            attn.extend(row.iter().map(|a| a / sum));
            for j in 0..positions {
                let g = 2.0 * rng.unit() - 1.0;
                let boost = (head % 2 == 0 && is_image(j)) as u8 as f32;
                grads.push(g * (1.0 + boost));
            }
        }
    }
    let trace = StepTrace {
        step: (seed % 7) as usize,
        token_id: 1000 + seed as u32,
        token_text: format!("tok{seed}"),
        query_position: positions - 1,
        layers,
        num_heads: heads,
        num_positions: positions,
        grads,
        attn,
        kinds,
        regions,
    };
    trace.validate().expect("fixture trace is consistent");
    trace
}

/// A trace whose token text selects a fixture plugin's behaviour.
pub fn trace_with_text(text: &str) -> StepTrace {
    let mut trace = fixture_trace(1, false);
    trace.token_text = text.to_string();
    trace
}

pub fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let tol = 1e-5 * e.abs().max(1.0);
        assert!((a - e).abs() <= tol, "{what}[{i}]: got {a}, expected {e}");
    }
}
