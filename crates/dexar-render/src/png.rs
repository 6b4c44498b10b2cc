//! PNG encoding, in memory and as an atomic file write.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::RenderError;

/// Encodes `img` as an 8-bit RGB PNG in memory.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>, RenderError> {
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(RenderError::Encode)?;
    Ok(bytes)
}

/// Writes `img` as a PNG to `path` atomically ([`dexar_core::write_atomic`]):
/// a reader never sees a half-written file and a failed write leaves any
/// previous file intact. Errors name `path`.
pub fn save_png_atomic(path: &Path, img: &RgbImage) -> Result<(), RenderError> {
    let bytes = png_bytes(img)?;
    dexar_core::write_atomic(path, &bytes).map_err(|source| RenderError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn sample() -> RgbImage {
        RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 50, y as u8 * 100, 7]))
    }

    #[test]
    fn png_round_trips() {
        let bytes = png_bytes(&sample()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(back, sample());
    }

    #[test]
    fn save_replaces_atomically_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.png");
        std::fs::write(&path, b"old").unwrap();
        save_png_atomic(&path, &sample()).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, sample());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("map.png")]);
    }

    #[test]
    fn save_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("map.png");
        let err = save_png_atomic(&path, &sample()).unwrap_err();
        assert!(matches!(err, RenderError::Write { .. }));
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
