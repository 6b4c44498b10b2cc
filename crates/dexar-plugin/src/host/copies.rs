//! The private copies of plugin libraries the host loads (see
//! [`super::LoadedPlugin`]): named `dexar-plugin-<pid>-<random>.so` in the
//! copy directory, deleted when the plugin is dropped. A process that dies
//! without dropping them (a crash, SIGKILL) leaves them behind; the next
//! host removes those of dead processes that belong to the same user.

use std::ffi::OsStr;
use std::path::Path;

const PREFIX: &str = "dexar-plugin-";

/// A new private file for a copy, in `dir`.
pub(crate) fn new_copy(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .suffix(&format!(".{}", std::env::consts::DLL_EXTENSION))
        .tempfile_in(dir)
}

/// Removes copies left in `dir` by processes of this user that no longer
/// run; returns how many. Errors are ignored: this is housekeeping.
pub fn remove_stale_copies(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| is_stale(&e.path()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn is_stale(path: &Path) -> bool {
    let Some(pid) = owner_pid(path.file_name().unwrap_or_default()) else {
        return false;
    };
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file() && owned_by_me(&meta) && !process_runs(pid)
}

/// The process id in a copy's name, `dexar-plugin-<pid>-<random>.<ext>`.
fn owner_pid(name: &OsStr) -> Option<u32> {
    let name = name.to_str()?;
    let rest = name
        .strip_prefix(PREFIX)?
        .strip_suffix(std::env::consts::DLL_EXTENSION)?
        .strip_suffix('.')?;
    let (pid, random) = rest.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok()
}

#[cfg(unix)]
fn owned_by_me(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    meta.uid() == unsafe { libc::geteuid() }
}

#[cfg(unix)]
fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists but is another user's.
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn owned_by_me(_: &std::fs::Metadata) -> bool {
    false
}

#[cfg(not(unix))]
fn process_runs(_: u32) -> bool {
    true
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn removes_copies_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let ext = std::env::consts::DLL_EXTENSION;
        let live = new_copy(dir.path()).unwrap().into_temp_path();
        // No process has a pid this large (Linux caps pids at 2^22).
        let dead = dir.path().join(format!("{PREFIX}999999999-abc.{ext}"));
        let foreign = dir.path().join(format!("other-999999999-abc.{ext}"));
        for p in [&dead, &foreign] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(owner_pid(dead.file_name().unwrap()), Some(999_999_999));
        assert_eq!(remove_stale_copies(dir.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && foreign.exists());
    }
}
