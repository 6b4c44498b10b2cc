//! The model and images compiled into the binary, so `dexar` works from any
//! directory with no network: the demo VLM trained on the synthetic shapes
//! world (`crates/dexar-toy/model`, a llava-hf checkpoint made by
//! `dexar toy train`) and sample scenes of that world.

use dexar_model::{Checkpoint, LoadOptions, Result};
use std::path::Path;

macro_rules! toy {
    ($rel:literal) => {
        include_bytes!(concat!("../../dexar-toy/", $rel))
    };
}

/// The label shown for the bundled model (it has no directory).
pub const MODEL_LABEL: &str = "bundled:toy";

/// Sample images shipped in the binary: (name, PNG bytes).
pub const SAMPLE_IMAGES: [(&str, &[u8]); 4] = [
    ("three-shapes.png", toy!("samples/three-shapes.png")),
    ("two-shapes.png", toy!("samples/two-shapes.png")),
    ("three-shapes-2.png", toy!("samples/three-shapes-2.png")),
    ("one-shape.png", toy!("samples/one-shape.png")),
];

/// Loads the bundled checkpoint.
pub fn checkpoint(opts: &LoadOptions) -> Result<Checkpoint> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Checkpoint::from_bytes(
        Path::new(MODEL_LABEL),
        &text(toy!("model/config.json")),
        toy!("model/tokenizer.json"),
        &text(toy!("model/preprocessor_config.json")),
        toy!("model/model.safetensors").to_vec(),
        opts,
    )
}

/// Writes the bundled checkpoint as a llava-hf directory.
pub fn export(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let files: [(&str, &[u8]); 4] = [
        ("config.json", toy!("model/config.json")),
        ("tokenizer.json", toy!("model/tokenizer.json")),
        (
            "preprocessor_config.json",
            toy!("model/preprocessor_config.json"),
        ),
        ("model.safetensors", toy!("model/model.safetensors")),
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
