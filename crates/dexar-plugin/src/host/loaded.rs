//! One loaded plugin library, exposed as a [`dexar_core::Strategy`].

use super::copies::new_copy;
use super::library_file::check_library_bytes;
use super::security::check_permissions;
use super::{HostOptions, PluginError};
use crate::abi::{
    DexarAbiVersionFn, DexarEntryFn, DexarRegion, DexarSentenceMapFn, DexarSentenceView,
    DexarTensor3, DexarTokenMapFn, DexarTraceView, ABI_MINOR_SYMBOL, ABI_VERSION_SYMBOL,
    DEXAR_PLUGIN_ABI_MINOR, DEXAR_PLUGIN_ABI_VERSION, DEXAR_REGION_GLOBAL, DEXAR_REGION_TILE,
    DEXAR_STATUS_ERROR, DEXAR_STATUS_OK, DEXAR_STATUS_PANIC, ENTRY_SYMBOL,
};
use dexar_core::strategy::weighted_sentence_map;
use dexar_core::{minmax, RegionKind, StepTrace, Strategy, StrategyError, TokenMap};
use libloading::Library;
use std::ffi::{c_char, CStr};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest plugin library file the host reads.
const MAX_LIBRARY_FILE: u64 = 1 << 30;

/// Size of the buffer a plugin writes its error message into.
const ERROR_CAPACITY: usize = 1024;

/// A plugin library, loaded from a private copy of its file.
///
/// Calls go straight into native code: the host validates inputs, checks
/// status codes, rejects non-finite outputs and results that took longer than
/// the time budget, but it cannot pre-empt a call that never returns, and a
/// crash inside a C plugin (or a Rust plugin built with `panic = "abort"`)
/// ends the process.
pub struct LoadedPlugin {
    name: String,
    version: String,
    help: String,
    path: PathBuf,
    /// The ABI minor version it was built for (0: no image regions).
    abi_minor: u32,
    token_map_fn: DexarTokenMapFn,
    sentence_map_fn: Option<DexarSentenceMapFn>,
    time_budget: Duration,
    // Field order matters: the library is closed before its copy is deleted.
    _library: Library,
    _copy: tempfile::TempPath,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Copies `path` to a private temporary file, loads the copy, performs the
    /// ABI handshake and reads the descriptor. Name clashes are the registry's
    /// business; everything about the file itself is checked here.
    pub(crate) fn open(path: &Path, options: &HostOptions) -> Result<Self, PluginError> {
        let io = |source| PluginError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Opened non-blocking and refused unless a regular file: a FIFO would
        // block here forever.
        let file =
            dexar_core::open_regular(path).map_err(|source| match std::fs::metadata(path) {
                Ok(meta) if !meta.is_file() => PluginError::NotAFile {
                    path: path.to_path_buf(),
                    what: dexar_core::files::kind_of(&meta),
                },
                _ => io(source),
            })?;
        let meta = file.metadata().map_err(io)?;
        if !options.allow_insecure {
            let real = std::fs::canonicalize(path).map_err(io)?;
            check_permissions(&real, &meta)?;
        }
        let mut bytes = Vec::new();
        file.take(MAX_LIBRARY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_LIBRARY_FILE {
            return Err(PluginError::NotLibrary {
                path: path.to_path_buf(),
                reason: format!("larger than {} MiB", MAX_LIBRARY_FILE >> 20),
            });
        }
        // dlopen of a truncated library dies of SIGBUS: check it first.
        check_library_bytes(&bytes).map_err(|reason| PluginError::NotLibrary {
            path: path.to_path_buf(),
            reason,
        })?;
        // A private copy of the bytes just checked: dlopen caches libraries by
        // path, so loading a fresh copy is what makes `reload` pick up a
        // rebuilt file, and a build that rewrites the original in place cannot
        // corrupt the mapped code.
        let dir = options.copy_dir.clone().unwrap_or_else(std::env::temp_dir);
        let copy_failed = |source| PluginError::Copy {
            path: path.to_path_buf(),
            dir: dir.clone(),
            source,
        };
        let mut copy = new_copy(&dir).map_err(copy_failed)?;
        copy.as_file_mut()
            .write_all(&bytes)
            .and_then(|()| copy.as_file_mut().flush())
            .map_err(copy_failed)?;
        let copy = copy.into_temp_path();

        let library = open_library(&copy).map_err(|e| PluginError::NotLibrary {
            path: path.to_path_buf(),
            reason: describe(&e).replace(&*copy.to_string_lossy(), &path.to_string_lossy()),
        })?;
        let missing = |symbol| PluginError::MissingSymbol {
            path: path.to_path_buf(),
            symbol,
        };
        // SAFETY: the symbol is declared by the ABI with exactly this signature.
        let abi_version = unsafe { library.get::<DexarAbiVersionFn>(ABI_VERSION_SYMBOL) }
            .map_err(|_| missing(ABI_VERSION_SYMBOL))?;
        // SAFETY: a plain function without arguments, per the ABI.
        let found = unsafe { abi_version() };
        if found != DEXAR_PLUGIN_ABI_VERSION {
            return Err(PluginError::AbiMismatch {
                path: path.to_path_buf(),
                found,
                expected: DEXAR_PLUGIN_ABI_VERSION,
            });
        }
        // SAFETY: the optional symbol is declared by the ABI with this signature.
        let abi_minor = match unsafe { library.get::<DexarAbiVersionFn>(ABI_MINOR_SYMBOL) } {
            // SAFETY: a plain function without arguments, per the ABI.
            Ok(minor) => unsafe { minor() },
            Err(_) => 0,
        };
        // SAFETY: as above; only called once the versions agree.
        let entry = unsafe { library.get::<DexarEntryFn>(ENTRY_SYMBOL) }
            .map_err(|_| missing(ENTRY_SYMBOL))?;
        // SAFETY: a plain function without arguments, per the ABI.
        let descriptor = unsafe { entry() };
        let invalid = |reason: String| PluginError::InvalidDescriptor {
            path: path.to_path_buf(),
            reason,
        };
        if descriptor.is_null() {
            return Err(invalid(format!("{ENTRY_SYMBOL} returned null")));
        }
        // SAFETY: non-null, and the ABI requires it to point to a descriptor
        // that lives as long as the library; we copy it out at once.
        let descriptor = unsafe { *descriptor };
        if descriptor.abi_version != DEXAR_PLUGIN_ABI_VERSION {
            return Err(PluginError::AbiMismatch {
                path: path.to_path_buf(),
                found: descriptor.abi_version,
                expected: DEXAR_PLUGIN_ABI_VERSION,
            });
        }
        // SAFETY: descriptor strings are NUL-terminated and live with the library.
        let (name, version, help) = unsafe {
            (
                c_string(descriptor.name, "name").map_err(invalid)?,
                c_string(descriptor.version, "version").map_err(invalid)?,
                c_string(descriptor.help, "help").map_err(invalid)?,
            )
        };
        if !crate::sdk::is_valid_name(&name) {
            return Err(invalid(format!(
                "name {name:?} must be a plain file name: 1-64 bytes, no whitespace, control characters, `/` or `\\`, not starting with `.`"
            )));
        }
        let token_map_fn = descriptor
            .token_map
            .ok_or_else(|| invalid("no token_map function".into()))?;
        Ok(Self {
            name,
            version,
            help: help.lines().next().unwrap_or_default().to_string(),
            path: path.to_path_buf(),
            abi_minor,
            token_map_fn,
            sentence_map_fn: descriptor.sentence_map,
            time_budget: options.time_budget,
            _library: library,
            _copy: copy,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn help(&self) -> &str {
        &self.help
    }

    /// The ABI version it was built for, `1.0` or `1.1`.
    pub fn abi(&self) -> String {
        format!("{DEXAR_PLUGIN_ABI_VERSION}.{}", self.abi_minor)
    }

    /// Whether it can be given an image of several regions (ABI 1.1 and later).
    pub fn sees_regions(&self) -> bool {
        self.abi_minor >= 1
    }

    /// Why it cannot explain an image of `regions` regions, if it cannot: an
    /// ABI 1.0 plugin sees one region, and its map would cover that one only.
    pub fn cannot_see(&self, regions: usize) -> Option<String> {
        (regions > 1 && !self.sees_regions()).then(|| {
            format!(
                "plugin ABI {} sees one image region, but this image has {regions} (tiles and a global view); \
                 rebuild the plugin against ABI {DEXAR_PLUGIN_ABI_VERSION}.{DEXAR_PLUGIN_ABI_MINOR} \
                 (export dexar_plugin_abi_minor, or rebuild with the dexar-plugin SDK) to explain it",
                self.abi()
            )
        })
    }

    /// The file it was loaded from (absolute; `reload` reads it again).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the plugin brings its own sentence aggregate.
    pub fn has_sentence_map(&self) -> bool {
        self.sentence_map_fn.is_some()
    }

    pub fn time_budget(&self) -> Duration {
        self.time_budget
    }

    fn failed(&self, message: String) -> StrategyError {
        StrategyError::Failed {
            strategy: self.name.clone(),
            message,
        }
    }

    /// Turns a call's status, error message and duration into a result.
    fn check_call(
        &self,
        status: i32,
        err: &[c_char],
        elapsed: Duration,
    ) -> Result<(), StrategyError> {
        if status != DEXAR_STATUS_OK {
            let bytes: Vec<u8> = err
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            // One line, whatever the plugin wrote.
            let mut message = String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if message.is_empty() {
                message = "(no message)".into();
            }
            return Err(self.failed(match status {
                DEXAR_STATUS_ERROR => format!("plugin error: {message}"),
                DEXAR_STATUS_PANIC => format!("plugin panicked: {message}"),
                other => format!("plugin returned status {other}: {message}"),
            }));
        }
        if elapsed > self.time_budget {
            return Err(self.failed(format!(
                "plugin took {:.3} s, over its time budget of {:.3} s; the result was discarded \
                 (native code cannot be interrupted, only timed)",
                elapsed.as_secs_f64(),
                self.time_budget.as_secs_f64()
            )));
        }
        Ok(())
    }
}

impl Strategy for LoadedPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn help(&self) -> &str {
        &self.help
    }

    fn token_map(&self, trace: &StepTrace) -> Result<TokenMap, StrategyError> {
        // Validation is what makes the view's pointers and shapes truthful.
        trace.validate()?;
        if let Some(why) = self.cannot_see(trace.regions.len()) {
            return Err(self.failed(why));
        }
        let regions: Vec<DexarRegion> = trace
            .regions
            .iter()
            .map(|r| DexarRegion {
                start: r.span.0,
                end: r.span.1,
                grid_height: r.grid.height,
                grid_width: r.grid.width,
                bbox: r.bbox,
                kind: match r.kind {
                    RegionKind::Global => DEXAR_REGION_GLOBAL,
                    RegionKind::Tile => DEXAR_REGION_TILE,
                },
            })
            .collect();
        let first = regions[0];
        let kinds: Vec<u8> = trace.kinds.iter().map(|&k| k as u8).collect();
        let mut text = Vec::with_capacity(trace.token_text.len() + 1);
        text.extend_from_slice(trace.token_text.as_bytes());
        text.push(0);
        let (heads, positions) = (trace.num_heads, trace.num_positions);
        let tensor = |data: &[f32]| DexarTensor3 {
            data: data.as_ptr(),
            shape: [trace.layers.len(), heads, positions],
            strides: [heads * positions, positions, 1],
        };
        let view = DexarTraceView {
            grads: tensor(&trace.grads),
            attn: tensor(&trace.attn),
            layers: trace.layers.as_ptr(),
            kinds: kinds.as_ptr(),
            image_start: first.start,
            image_end: first.end,
            grid_height: first.grid_height,
            grid_width: first.grid_width,
            token_id: trace.token_id,
            token_text: text.as_ptr().cast(),
            token_text_len: trace.token_text.len(),
            step: trace.step,
            query_position: trace.query_position,
            regions: regions.as_ptr(),
            num_regions: regions.len(),
        };
        let mut map = vec![0f32; trace.num_cells()];
        let mut weight = 1f32;
        let mut err = vec![0 as c_char; ERROR_CAPACITY];
        let started = Instant::now();
        // SAFETY: every pointer in `view` refers to a buffer borrowed from
        // `trace` (validated above, so shapes match lengths) or to `kinds` /
        // `text` / `regions`, all alive until after the call; the output and error buffers
        // are ours, of the lengths passed.
        let status = unsafe {
            (self.token_map_fn)(
                &view,
                map.as_mut_ptr(),
                map.len(),
                &mut weight,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        self.check_call(status, &err, started.elapsed())?;
        if !weight.is_finite() || map.iter().any(|v| !v.is_finite()) {
            return Err(StrategyError::NonFinite {
                strategy: self.name.clone(),
            });
        }
        Ok(TokenMap::from_cells(&trace.regions, map, weight))
    }

    fn sentence_map(&self, maps: &[TokenMap]) -> Result<Vec<f32>, StrategyError> {
        let Some(sentence_map_fn) = self.sentence_map_fn else {
            return Ok(weighted_sentence_map(maps));
        };
        let Some(first) = maps.first() else {
            return Ok(Vec::new());
        };
        let grid = first.grid;
        if let Some(bad) = maps
            .iter()
            .find(|m| m.grid != grid || m.raw.len() != grid.len())
        {
            return Err(self.failed(format!(
                "token maps disagree on the grid: {}x{} with {} values vs {}x{}",
                bad.grid.height,
                bad.grid.width,
                bad.raw.len(),
                grid.height,
                grid.width
            )));
        }
        let flat: Vec<f32> = maps.iter().flat_map(|m| m.raw.iter().copied()).collect();
        let weights: Vec<f32> = maps.iter().map(|m| m.weight).collect();
        let view = DexarSentenceView {
            maps: flat.as_ptr(),
            weights: weights.as_ptr(),
            num_tokens: maps.len(),
            grid_height: grid.height,
            grid_width: grid.width,
        };
        let mut out = vec![0f32; grid.len()];
        let mut err = vec![0 as c_char; ERROR_CAPACITY];
        let started = Instant::now();
        // SAFETY: `flat` holds num_tokens * grid.len() floats and `weights`
        // num_tokens (checked above); both outlive the call, as do our output
        // and error buffers of the lengths passed.
        let status = unsafe {
            sentence_map_fn(
                &view,
                out.as_mut_ptr(),
                out.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        self.check_call(status, &err, started.elapsed())?;
        if out.iter().any(|v| !v.is_finite()) {
            return Err(StrategyError::NonFinite {
                strategy: self.name.clone(),
            });
        }
        Ok(minmax(&out).0)
    }
}

/// dlopen with RTLD_NOW, so unresolved symbols fail at load time, not mid-call.
#[cfg(unix)]
fn open_library(path: &Path) -> Result<Library, libloading::Error> {
    use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers: that is the trust the
    // user grants by asking for the plugin (and why permissions are checked).
    unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Library::from)
}

#[cfg(not(unix))]
fn open_library(path: &Path) -> Result<Library, libloading::Error> {
    // SAFETY: as above.
    unsafe { Library::new(path) }
}

fn describe(e: &libloading::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// # Safety
/// `ptr` must be null or point to a NUL-terminated string.
unsafe fn c_string(ptr: *const c_char, what: &str) -> Result<String, String> {
    if ptr.is_null() {
        return Err(format!("{what} is null"));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(str::to_string)
        .map_err(|_| format!("{what} is not UTF-8"))
}
