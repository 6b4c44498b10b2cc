//! A plugin file is checked before `dlopen` sees it. The loader maps an ELF
//! library's segments as the program headers describe them; a segment past
//! the end of a truncated file is mapped all the same, and the first touch
//! of it kills the process with SIGBUS, before any error can be returned.
//! So the header and the program headers are read here (with the `object`
//! crate) and every segment must lie within the file.

/// Why `bytes` cannot be a shared library, or `Ok` if `dlopen` may try it.
/// On platforms whose libraries are not ELF, nothing is checked here.
pub fn check_library_bytes(bytes: &[u8]) -> Result<(), String> {
    #[cfg(all(unix, not(target_vendor = "apple")))]
    {
        elf::check(bytes)
    }
    #[cfg(not(all(unix, not(target_vendor = "apple"))))]
    {
        let _ = bytes;
        Ok(())
    }
}

#[cfg(all(unix, not(target_vendor = "apple")))]
mod elf {
    use object::elf::{FileHeader32, FileHeader64, ET_DYN};
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::{Endianness, FileKind};

    pub(super) fn check(bytes: &[u8]) -> Result<(), String> {
        match FileKind::parse(bytes) {
            Ok(FileKind::Elf64) => segments_within::<FileHeader64<Endianness>>(bytes),
            Ok(FileKind::Elf32) => segments_within::<FileHeader32<Endianness>>(bytes),
            Ok(other) => Err(format!("not an ELF shared library (a {other:?} file)")),
            Err(_) => Err("not an ELF shared library (unknown file format)".into()),
        }
    }

    fn segments_within<H: FileHeader<Endian = Endianness>>(bytes: &[u8]) -> Result<(), String> {
        let header = H::parse(bytes).map_err(|e| format!("corrupt ELF header ({e})"))?;
        let endian = header
            .endian()
            .map_err(|e| format!("corrupt ELF header ({e})"))?;
        if header.e_type(endian) != ET_DYN {
            return Err("an ELF file but not a shared library (build it as a cdylib)".into());
        }
        let segments = header
            .program_headers(endian, bytes)
            .map_err(|e| format!("truncated or corrupt ELF file ({e})"))?;
        if segments.is_empty() {
            return Err("an ELF file without segments".into());
        }
        // Section headers usually come last: a cut file loses them first.
        header
            .section_headers(endian, bytes)
            .map_err(|e| format!("truncated or corrupt ELF file ({e})"))?;
        let len = bytes.len() as u64;
        for segment in segments {
            let (offset, size) = segment.file_range(endian);
            match offset.checked_add(size) {
                Some(end) if end <= len => {}
                _ => {
                    return Err(format!(
                        "truncated ELF file: a segment needs bytes {offset} to {} but the file has {len}",
                        offset.saturating_add(size)
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This test binary itself: an ELF file, though an executable one.
    fn some_elf() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    /// Where the file's last segment ends.
    fn segments_end(bytes: &[u8]) -> u64 {
        use object::read::elf::{FileHeader, ProgramHeader};
        let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes).unwrap();
        let endian = header.endian().unwrap();
        let segments = header.program_headers(endian, bytes).unwrap();
        segments
            .iter()
            .map(|s| {
                let (offset, size) = s.file_range(endian);
                offset + size
            })
            .max()
            .unwrap()
    }

    #[test]
    fn refuses_what_dlopen_would_crash_or_fail_on() {
        let e = check_library_bytes(b"just some text\n").unwrap_err();
        assert!(e.contains("not an ELF"), "{e}");
        assert!(check_library_bytes(b"").is_err());
        let exe = some_elf();
        let e = check_library_bytes(&exe[..10]).unwrap_err();
        assert!(e.contains("ELF"), "{e}");
        // A truncated shared library: take the test binary, mark it ET_DYN
        // (offset 16, little-endian), cut it inside its last segment.
        let mut lib = exe.clone();
        lib[16] = 3;
        lib[17] = 0;
        assert_eq!(check_library_bytes(&lib), Ok(()));
        let e = check_library_bytes(&lib[..lib.len() - 1]).unwrap_err();
        assert!(e.contains("truncated or corrupt"), "{e}");
        // Even with intact section headers, a segment past the end is refused.
        let end = segments_end(&lib) as usize;
        let mut cut = lib[..end - 1].to_vec();
        cut[0x28..0x30].copy_from_slice(&0u64.to_le_bytes()); // e_shoff: none
        cut[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes()); // e_shnum
        let e = check_library_bytes(&cut).unwrap_err();
        assert!(e.contains("truncated ELF file"), "{e}");
        let e = check_library_bytes(&lib[..100]).unwrap_err();
        assert!(e.contains("truncated or corrupt"), "{e}");
    }
}
