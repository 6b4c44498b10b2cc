//! The model and images compiled into the binary, so `dexar` works from any
//! directory with no network: for now the tiny random LLaVA of the test
//! fixtures (exact maps, meaningless answers) until the trained demo model lands.

use dexar_model::{Checkpoint, LoadOptions, Result};
use std::path::Path;

macro_rules! fixture {
    ($rel:literal) => {
        include_bytes!(concat!("../../dexar-model/tests/fixtures/", $rel))
    };
}

/// The label shown for the bundled model (it has no directory).
pub const MODEL_LABEL: &str = "bundled:tiny-llava";

/// Sample images shipped in the binary: (name, PNG bytes).
pub const SAMPLE_IMAGES: [(&str, &[u8]); 2] = [
    ("square.png", fixture!("images/square.png")),
    ("wide.png", fixture!("images/wide.png")),
];

/// Loads the bundled checkpoint.
pub fn checkpoint(opts: &LoadOptions) -> Result<Checkpoint> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Checkpoint::from_bytes(
        Path::new(MODEL_LABEL),
        &text(fixture!("tiny-llava/config.json")),
        fixture!("tiny-llava/tokenizer.json"),
        &text(fixture!("tiny-llava/preprocessor_config.json")),
        fixture!("tiny-llava/model.safetensors").to_vec(),
        opts,
    )
}

/// Writes the bundled checkpoint as a llava-hf directory.
pub fn export(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let files: [(&str, &[u8]); 4] = [
        ("config.json", fixture!("tiny-llava/config.json")),
        ("tokenizer.json", fixture!("tiny-llava/tokenizer.json")),
        (
            "preprocessor_config.json",
            fixture!("tiny-llava/preprocessor_config.json"),
        ),
        (
            "model.safetensors",
            fixture!("tiny-llava/model.safetensors"),
        ),
    ];
    for (name, bytes) in files {
        crate::output::write_atomic(&dir.join(name), bytes)?;
    }
    Ok(())
}

/// The default image `dexar` opens on.
pub fn default_image() -> (&'static str, image::DynamicImage) {
    let (name, bytes) = SAMPLE_IMAGES[0];
    // The bytes are a PNG checked by the tests; decoding cannot fail.
    let img =
        dexar_model::decode_image(bytes).unwrap_or_else(|_| image::DynamicImage::new_rgb8(1, 1));
    (name, img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_model_and_images_load() {
        let ckpt = checkpoint(&LoadOptions::default()).unwrap();
        assert_eq!(ckpt.config.text.model_type, "llama");
        for (name, bytes) in SAMPLE_IMAGES {
            assert!(dexar_model::decode_image(bytes).is_ok(), "{name}");
        }
        let (_, img) = default_image();
        assert!(img.width() > 1);
    }
}
