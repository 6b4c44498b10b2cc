//! Opening the files a user names (configs, weights, images, plugins,
//! histories): only regular files. A FIFO blocks an `open` until a writer
//! comes (forever, deaf to Ctrl-C), a device or `/dev/zero` streams without
//! end, so anything that is not a regular file is refused with an error
//! saying what it is. Every opener of a user-named file goes through here.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symbolic links
/// followed). Never blocks on a FIFO: it is opened non-blocking and refused.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Without O_NONBLOCK, opening a FIFO waits for a writer; for a
        // regular file the flag changes nothing.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    require_regular(&file.metadata()?)?;
    Ok(file)
}

/// The metadata of `path` if it is a regular file, for files another
/// library opens itself (memory-mapped weights, the line editor's history).
pub fn check_regular(path: &Path) -> io::Result<Metadata> {
    let meta = std::fs::metadata(path)?;
    require_regular(&meta)?;
    Ok(meta)
}

/// Reads a whole regular file of at most `max_len` bytes.
pub fn read_regular(path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max_len {
        return Err(too_large(len, max_len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` bounds a file that grows while it is read.
    file.take(max_len + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_len {
        return Err(too_large(bytes.len() as u64, max_len));
    }
    Ok(bytes)
}

/// Reads a whole regular UTF-8 text file of at most `max_len` bytes.
pub fn read_regular_to_string(path: &Path, max_len: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max_len)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The usual cap of a text file dexar reads whole (configs, tokenizers, data lists).
pub const MAX_TEXT_FILE: u64 = 256 << 20;

fn too_large(len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("is {len} bytes, more than the {max} bytes such a file may have"),
    )
}

/// Refuses anything but a regular file, saying what it is.
fn require_regular(meta: &Metadata) -> io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", kind_of(meta)),
    ))
}

/// What a file that is not a regular file is, for messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, "{}").unwrap();
        assert_eq!(read_regular_to_string(&p, 10).unwrap(), "{}");
        let e = read_regular(&p, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{e}");
        let e = read_regular(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = check_regular(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = read_regular(&dir.path().join("missing"), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without the non-blocking open this test would hang.
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = check_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
    }
}
