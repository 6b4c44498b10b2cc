//! Permission checks before loading native code, in the spirit of ssh's
//! StrictModes: a library that another user could have replaced is refused.
//!
//! Only mode bits count (tests and CI run as root, where `access()` says yes
//! to everything): the file and its directory must not be writable by group or
//! others.

use super::PluginError;
use std::fs::Metadata;
use std::path::Path;

/// Checks the opened plugin file's metadata (taken from the open handle, so
/// the bytes we copy are the bytes we checked) and its directory.
pub(crate) fn check_permissions(path: &Path, file_meta: &Metadata) -> Result<(), PluginError> {
    check_mode(path, "file", path, file_meta)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let dir_meta = std::fs::metadata(dir).map_err(|source| PluginError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_mode(path, "directory", dir, &dir_meta)
}

#[cfg(unix)]
fn check_mode(
    path: &Path,
    what: &'static str,
    target: &Path,
    meta: &Metadata,
) -> Result<(), PluginError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PluginError::Insecure {
            path: path.to_path_buf(),
            what,
            target: target.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &'static str, _: &Path, _: &Metadata) -> Result<(), PluginError> {
    // No group/other mode bits to inspect on this platform.
    Ok(())
}
