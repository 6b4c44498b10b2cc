//! Writing files so that a reader never sees half of one: the bytes go to a
//! temporary file in the same directory, which is synced and renamed over
//! the destination, and the directory is synced. A failed write leaves any
//! previous file intact and no temporary file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes), |e| e)
}

/// Writes `path` atomically from `fill`, which streams into a buffered
/// temporary file; errors of the file itself are turned into `E` by `io`.
/// Nothing replaces `path` unless `fill` succeeds.
pub fn write_atomic_with<T, E>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
    io: impl Fn(std::io::Error) -> E,
) -> Result<T, E> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".dexar-").suffix(".tmp");
    // Temporary files are private (0600); the result gets the mode of any
    // file the user saves (0666 less the umask).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir).map_err(&io)?;
    // From here on, every early return drops `tmp_path`, which deletes the
    // temporary file: a failed write (a full disk) leaves nothing behind.
    let (file, tmp_path) = tmp.into_parts();
    let mut out = BufWriter::new(file);
    let value = fill(&mut out)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(&io)?;
    drop(file);
    tmp_path.persist(path).map_err(|e| io(e.error))?;
    sync_dir(dir).map_err(&io)?;
    Ok(value)
}

/// Makes a rename in `dir` durable (the new name survives a power cut).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing here; the rename is still atomic.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["out.json"]);
    }

    #[test]
    fn a_failing_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data.jsonl");
        write_atomic(&p, b"old").unwrap();
        let r: Result<(), String> = write_atomic_with(
            &p,
            |out| {
                out.write_all(b"half").map_err(|e| e.to_string())?;
                Err("failed half-way".to_string())
            },
            |e| e.to_string(),
        );
        assert_eq!(r.unwrap_err(), "failed half-way");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["data.jsonl"]);
        let e = write_atomic(&dir.path().join("no/such/dir/x"), b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_failing_rename_or_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The destination is a non-empty directory: the final rename fails.
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("inside"), b"x").unwrap();
        assert!(write_atomic(&taken, b"new").is_err());
        assert_eq!(names(dir.path()), ["taken"]);
        // The write itself fails half-way (as on a full disk).
        let p = dir.path().join("out.bin");
        let r: std::io::Result<()> = write_atomic_with(
            &p,
            |out| {
                out.write_all(&[0; 100_000])?;
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left",
                ))
            },
            |e| e,
        );
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(names(dir.path()), ["taken"]);
    }
}
