//! The demo model and sample images compiled into dexar, so `dexar` works
//! from any directory with no network: the checkpoint in `model/` (made by
//! `dexar toy train`, llava-hf layout) and scenes of the shapes world in
//! `samples/`.

use std::path::Path;

use dexar_model::{Checkpoint, LoadOptions, MemoryCheckpoint};

/// How the bundled model is labelled where a directory would be shown.
pub const BUNDLED_LABEL: &str = "bundled:toy";

const CONFIG: &[u8] = include_bytes!("../model/config.json");
const TOKENIZER: &[u8] = include_bytes!("../model/tokenizer.json");
const PREPROCESSOR: &[u8] = include_bytes!("../model/preprocessor_config.json");
const WEIGHTS: &[u8] = include_bytes!("../model/model.safetensors");

/// Sample images shipped in the binary: (file name, PNG bytes). The first is
/// the image dexar opens on.
pub const SAMPLE_IMAGES: [(&str, &[u8]); 4] = [
    (
        "three-shapes.png",
        include_bytes!("../samples/three-shapes.png"),
    ),
    (
        "two-shapes.png",
        include_bytes!("../samples/two-shapes.png"),
    ),
    (
        "three-shapes-2.png",
        include_bytes!("../samples/three-shapes-2.png"),
    ),
    ("one-shape.png", include_bytes!("../samples/one-shape.png")),
];

/// The bundled checkpoint's files.
pub fn bundled() -> MemoryCheckpoint<'static> {
    MemoryCheckpoint {
        label: BUNDLED_LABEL,
        config_json: CONFIG,
        tokenizer_json: TOKENIZER,
        preprocessor_json: PREPROCESSOR,
        weights: WEIGHTS,
    }
}

/// Loads the bundled checkpoint.
pub fn load_bundled(opts: &LoadOptions) -> dexar_model::Result<Checkpoint> {
    Checkpoint::from_memory(&bundled(), opts)
}

/// Writes the bundled checkpoint as a llava-hf directory (created if missing).
pub fn export_bundled(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in [
        ("config.json", CONFIG),
        ("tokenizer.json", TOKENIZER),
        ("preprocessor_config.json", PREPROCESSOR),
        ("model.safetensors", WEIGHTS),
    ] {
        dexar_core::write_atomic(&dir.join(name), bytes)?;
    }
    Ok(())
}

/// The image dexar opens on: (file name, decoded image).
pub fn default_image() -> (&'static str, image::DynamicImage) {
    let (name, bytes) = SAMPLE_IMAGES[0];
    // A PNG of this crate, decoded by its tests; never fails in practice.
    let img =
        dexar_model::decode_image(bytes).unwrap_or_else(|_| image::DynamicImage::new_rgb8(1, 1));
    (name, img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_model_and_images_load() {
        let ckpt = load_bundled(&LoadOptions::default()).unwrap();
        assert_eq!(ckpt.text_config().model_type, "llama");
        assert_eq!(ckpt.dir, Path::new(BUNDLED_LABEL));
        for (name, bytes) in SAMPLE_IMAGES {
            assert!(dexar_model::decode_image(bytes).is_ok(), "{name}");
        }
        let (_, img) = default_image();
        assert!(img.width() > 1);
    }

    #[test]
    fn the_bundled_spec_loads_the_bundled_model_and_export_round_trips() {
        let spec: dexar_model::ModelSpec = "bundled".parse().unwrap();
        let ckpt = spec.load(&LoadOptions::default(), bundled).unwrap();
        assert_eq!(ckpt.dir, Path::new(BUNDLED_LABEL));
        let dir = tempfile::tempdir().unwrap();
        export_bundled(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("model.safetensors")).unwrap(),
            WEIGHTS
        );
        let spec = dexar_model::ModelSpec::Dir(dir.path().to_path_buf());
        let exported = spec
            .load(&LoadOptions::default(), || unreachable!("not bundled"))
            .unwrap();
        assert_eq!(exported.llava_config(), ckpt.llava_config());
    }
}
