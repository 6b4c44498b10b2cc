//! Writes a shapes data set to disk: images, per-object masks and a JSONL
//! file with one record per (image, prompt).
//!
//! Layout under the data set directory:
//! `images/{i:05}.png` (RGB), `masks/{i:05}_{obj}.png` (L8, 255 inside the
//! object's visible pixels) and [`DATA_FILE`]. The JSONL file is written to a
//! temporary name and renamed, so a reader never sees half of it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shapes::{generate, Scene, SceneConfig};
use crate::text::WordRole;
use crate::ToyError;

/// Name of the record file inside a data set directory.
pub const DATA_FILE: &str = "data.jsonl";

/// One line of [`DATA_FILE`]. Paths are relative to the data set directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub image: String,
    pub prompt: String,
    pub answer: String,
    /// One entry per answer word linked to an object.
    pub objects: Vec<LinkedObject>,
}

/// An answer word and the object it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedObject {
    /// Index of the word in the space-separated answer.
    pub word: usize,
    /// Index of the object in its scene (the `{obj}` of the mask name).
    pub object: usize,
    pub role: WordRole,
    pub mask: String,
    pub shape: String,
    pub color: String,
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetSummary {
    pub images: u64,
    pub masks: u64,
    pub records: u64,
}

/// Writes scenes `0..n` of stream `seed` with the default [`SceneConfig`].
pub fn write_dataset(dir: &Path, n: u64, seed: u64) -> Result<DatasetSummary, ToyError> {
    write_dataset_with(dir, n, seed, &SceneConfig::default())
}

/// Writes scenes `0..n` of stream `seed` drawn with `config`.
pub fn write_dataset_with(
    dir: &Path,
    n: u64,
    seed: u64,
    config: &SceneConfig,
) -> Result<DatasetSummary, ToyError> {
    for sub in ["images", "masks"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|source| ToyError::Io { path, source })?;
    }
    let path = dir.join(DATA_FILE);
    let io_err = |source| ToyError::Io {
        path: path.clone(),
        source,
    };
    dexar_core::atomic::write_atomic_with(
        &path,
        |out| {
            let mut summary = DatasetSummary {
                images: 0,
                masks: 0,
                records: 0,
            };
            for index in 0..n {
                let scene = generate(config, seed, index);
                summary.masks += write_images(dir, index, &scene)?;
                summary.images += 1;
                for record in records(index, &scene) {
                    serde_json::to_writer(&mut *out, &record)?;
                    out.write_all(b"\n").map_err(io_err)?;
                    summary.records += 1;
                }
            }
            Ok(summary)
        },
        io_err,
    )
}

fn image_name(index: u64) -> String {
    format!("images/{index:05}.png")
}

fn mask_name(index: u64, object: usize) -> String {
    format!("masks/{index:05}_{object}.png")
}

/// Writes the image and every object mask; returns the number of masks.
fn write_images(dir: &Path, index: u64, scene: &Scene) -> Result<u64, ToyError> {
    let save = |path: PathBuf, result: Result<(), image::ImageError>| {
        result.map_err(|source| ToyError::Image { path, source })
    };
    let path = dir.join(image_name(index));
    save(path.clone(), scene.image.save(&path))?;
    for (object, o) in scene.objects.iter().enumerate() {
        let path = dir.join(mask_name(index, object));
        save(path.clone(), o.mask.save(&path))?;
    }
    Ok(scene.objects.len() as u64)
}

/// The records of one scene, the description first.
fn records(index: u64, scene: &Scene) -> Vec<DatasetRecord> {
    scene
        .qa_pairs()
        .map(|(prompt, answer)| DatasetRecord {
            image: image_name(index),
            prompt: prompt.to_string(),
            answer: answer.text.clone(),
            objects: answer
                .links
                .iter()
                .map(|link| {
                    let o = &scene.objects[link.object];
                    LinkedObject {
                        word: link.word,
                        object: link.object,
                        role: link.role,
                        mask: mask_name(index, link.object),
                        shape: o.shape.name().to_string(),
                        color: o.color.name().to_string(),
                    }
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_three_readable_samples() {
        let dir = tempfile::tempdir().expect("temp dir");
        let summary = write_dataset(dir.path(), 3, 2024).expect("write data set");
        assert_eq!(summary.images, 3);
        assert!(!dir.path().join(format!("{DATA_FILE}.tmp")).exists());

        let text = fs::read_to_string(dir.path().join(DATA_FILE)).expect("read jsonl");
        let records: Vec<DatasetRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid record"))
            .collect();
        assert_eq!(records.len() as u64, summary.records);

        let mut masks = 0;
        for index in 0..3 {
            let scene = generate(&SceneConfig::default(), 2024, index);
            let image = image::open(dir.path().join(image_name(index)))
                .expect("open image")
                .to_rgb8();
            assert_eq!(image, scene.image, "PNG is lossless");
            for (obj, o) in scene.objects.iter().enumerate() {
                let mask = image::open(dir.path().join(mask_name(index, obj))).expect("open mask");
                assert_eq!(mask.color(), image::ColorType::L8);
                assert_eq!(mask.to_luma8(), o.mask);
                masks += 1;
            }
            let mine: Vec<&DatasetRecord> = records
                .iter()
                .filter(|r| r.image == image_name(index))
                .collect();
            assert_eq!(mine.len(), scene.qa_pairs().count());
            assert_eq!(mine[0].prompt, crate::DESCRIBE_PROMPT);
            assert_eq!(mine[0].answer, scene.description.text);
            for record in mine {
                let words: Vec<&str> = record.answer.split(' ').collect();
                for link in &record.objects {
                    let o = &scene.objects[link.object];
                    assert_eq!(link.mask, mask_name(index, link.object));
                    assert_eq!(
                        (link.shape.as_str(), link.color.as_str()),
                        (o.shape.name(), o.color.name())
                    );
                    match link.role {
                        WordRole::Color => assert_eq!(words[link.word], link.color),
                        WordRole::Shape => assert_eq!(words[link.word], link.shape),
                        WordRole::Location => assert!(record.prompt.starts_with("where")),
                    }
                }
            }
        }
        assert_eq!(masks, summary.masks);
        let first = records.first().expect("records");
        let line = text.lines().next().expect("line");
        assert!(line
            .starts_with(r#"{"image":"images/00000.png","prompt":"describe the image","answer":"#));
        assert!(first.objects.len() >= 2);

        // Rewriting over an existing data set gives identical files.
        write_dataset(dir.path(), 3, 2024).expect("rewrite");
        assert_eq!(
            fs::read_to_string(dir.path().join(DATA_FILE)).expect("reread"),
            text
        );
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"x").expect("write file");
        let err = write_dataset(&blocker, 1, 0).expect_err("a file is not a directory");
        assert!(matches!(err, ToyError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
