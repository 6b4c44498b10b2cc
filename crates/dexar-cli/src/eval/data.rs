//! Evaluation data: the synthetic shapes world (`toy:N[:seed]`) or a directory
//! of images, optional masks and a JSONL of prompts (see docs/eval.md).

use image::DynamicImage;
use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

/// A ground-truth mask, `true` inside, at the image's own resolution.
#[derive(Debug, Clone)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub inside: Vec<bool>,
}

/// One answer word linked to the object it names.
#[derive(Debug, Clone)]
pub struct LinkedWord {
    /// Index of the word in the answer (whitespace-separated).
    pub word: usize,
    pub mask: Mask,
}

/// One (image, prompt, answer) to score.
#[derive(Debug, Clone)]
pub struct EvalItem {
    pub id: String,
    pub image: DynamicImage,
    /// The user prompt (wrapped in the chat template).
    pub prompt: String,
    /// Reference answer; generated greedily when absent.
    pub answer: Option<String>,
    pub words: Vec<LinkedWord>,
}

/// Where items come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    Toy { n: u64, seed: u64 },
    Dir(PathBuf),
}

impl DataSource {
    pub fn parse(spec: &str) -> CliResult<Self> {
        if let Some(rest) = spec.strip_prefix("toy:") {
            let mut parts = rest.split(':');
            let bad = || {
                CliError::usage(format!(
                    "--data {spec}: expected toy:N or toy:N:SEED with integers"
                ))
            };
            let n = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            let seed = match parts.next() {
                Some(s) => s.parse().map_err(|_| bad())?,
                None => dexar_toy::HELD_OUT_SEED,
            };
            if parts.next().is_some() || n == 0 {
                return Err(bad());
            }
            if n > MAX_TOY_ITEMS {
                return Err(CliError::usage(format!(
                    "--data {spec}: at most {MAX_TOY_ITEMS} toy scenes (each takes seconds to score)"
                )));
            }
            return Ok(Self::Toy { n, seed });
        }
        let dir = PathBuf::from(spec);
        if !dir.is_dir() {
            return Err(CliError::usage(format!(
                "--data {spec}: no such directory (give a data directory or toy:N[:seed])"
            )));
        }
        if !dir.join(DATA_FILE).is_file() {
            return Err(CliError::usage(format!(
                "--data {spec}: no {DATA_FILE} in that directory"
            )));
        }
        Ok(Self::Dir(dir))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Toy { n, seed } => format!("toy:{n}:{seed}"),
            Self::Dir(d) => d.display().to_string(),
        }
    }
}

/// The most scenes of `toy:N` (and of `dexar toy accuracy` / `toy data`).
pub const MAX_TOY_ITEMS: u64 = dexar_toy::MAX_SCENES;

/// The JSONL file of a data directory.
pub const DATA_FILE: &str = "data.jsonl";

#[derive(Debug, Deserialize)]
struct Line {
    image: String,
    prompt: String,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    objects: Vec<LineObject>,
}

#[derive(Debug, Deserialize)]
struct LineObject {
    word: usize,
    // Other fields (shape, color, role, object) are informative only.
    mask: String,
}

/// The items of a source, produced one at a time (a data set need not fit
/// in memory), and the problems met while listing them (each one line,
/// `file:line: ...`).
pub struct Items {
    /// How many items [`Items::iter`] will try to produce.
    pub len: usize,
    pub skipped: Vec<String>,
    source: ItemSource,
}

enum ItemSource {
    Toy {
        n: u64,
        seed: u64,
    },
    Dir {
        dir: PathBuf,
        lines: Vec<(String, String)>,
    },
}

impl Items {
    /// Each item, or why it was skipped (`id: reason`).
    pub fn iter(&self) -> Box<dyn Iterator<Item = Result<EvalItem, String>> + '_> {
        match &self.source {
            ItemSource::Toy { n, seed } => Box::new((0..*n).map(|i| Ok(toy_item(*seed, i)))),
            ItemSource::Dir { dir, lines } => Box::new(lines.iter().map(|(at, raw)| {
                dir_item(dir, raw)
                    .map(|item| EvalItem {
                        id: at.clone(),
                        ..item
                    })
                    .map_err(|msg| format!("{at}: {msg}"))
            })),
        }
    }
}

pub fn load(source: &DataSource) -> CliResult<Items> {
    match source {
        DataSource::Toy { n, seed } => Ok(Items {
            len: *n as usize,
            skipped: Vec::new(),
            source: ItemSource::Toy { n: *n, seed: *seed },
        }),
        DataSource::Dir(dir) => dir_items(dir),
    }
}

fn toy_item(seed: u64, i: u64) -> EvalItem {
    let cfg = dexar_toy::SceneConfig::default();
    let scene = dexar_toy::generate(&cfg, seed, i);
    let (w, h) = scene.image.dimensions();
    let words = scene
        .description
        .links
        .iter()
        .filter(|l| {
            matches!(
                l.role,
                dexar_toy::WordRole::Color | dexar_toy::WordRole::Shape
            )
        })
        .map(|l| LinkedWord {
            word: l.word,
            mask: Mask {
                width: w,
                height: h,
                inside: scene.objects[l.object]
                    .mask
                    .pixels()
                    .map(|p| p[0] > 127)
                    .collect(),
            },
        })
        .collect();
    EvalItem {
        id: format!("toy:{seed}:{i}"),
        image: DynamicImage::ImageRgb8(scene.image),
        prompt: dexar_toy::DESCRIBE_PROMPT.to_string(),
        answer: Some(scene.description.text),
        words,
    }
}

fn dir_items(dir: &Path) -> CliResult<Items> {
    let path = dir.join(DATA_FILE);
    let text = dexar_core::read_regular_to_string(&path, dexar_core::files::MAX_TEXT_FILE)
        .map_err(|e| CliError::usage(format!("--data: cannot read {} ({e})", path.display())))?;
    let lines: Vec<(String, String)> = text
        .lines()
        .enumerate()
        .filter(|(_, raw)| !raw.trim().is_empty())
        .map(|(i, raw)| (format!("{}:{}", path.display(), i + 1), raw.to_string()))
        .collect();
    Ok(Items {
        len: lines.len(),
        skipped: Vec::new(),
        source: ItemSource::Dir {
            dir: dir.to_path_buf(),
            lines,
        },
    })
}

fn dir_item(dir: &Path, raw: &str) -> Result<EvalItem, String> {
    let line: Line = serde_json::from_str(raw).map_err(|e| format!("malformed line ({e})"))?;
    let image_path = dir.join(&line.image);
    let image = dexar_model::load_image(&image_path).map_err(|e| e.to_string())?;
    let answer_words = line
        .answer
        .as_deref()
        .map_or(0, |a| a.split_whitespace().count());
    let mut words = Vec::new();
    for o in &line.objects {
        if line.answer.is_none() {
            return Err("objects need a reference answer (their `word` indexes it)".into());
        }
        if o.word >= answer_words {
            return Err(format!(
                "object word {} is beyond the answer's {answer_words} words",
                o.word
            ));
        }
        let mask_path = dir.join(&o.mask);
        let m = dexar_model::load_image(&mask_path)
            .map_err(|e| format!("mask: {e}"))?
            .to_luma8();
        if m.dimensions() != (image.width(), image.height()) {
            return Err(format!(
                "mask {} is {}x{} but its image is {}x{}",
                o.mask,
                m.width(),
                m.height(),
                image.width(),
                image.height()
            ));
        }
        words.push(LinkedWord {
            word: o.word,
            mask: Mask {
                width: m.width(),
                height: m.height(),
                inside: m.pixels().map(|p| p[0] > 127).collect(),
            },
        });
    }
    Ok(EvalItem {
        id: String::new(),
        image,
        prompt: line.prompt,
        answer: line.answer,
        words,
    })
}

/// The mask as the model sees its image: resized and cropped like the pixels.
pub fn mask_in_model_view(
    mask: &Mask,
    processor: &dexar_model::ImageProcessing,
) -> dexar_model::Result<Mask> {
    let gray = image::GrayImage::from_fn(mask.width, mask.height, |x, y| {
        image::Luma([if mask.inside[(y * mask.width + x) as usize] {
            255
        } else {
            0
        }])
    });
    let view = processor.model_view(&DynamicImage::ImageLuma8(gray))?;
    Ok(Mask {
        width: view.width(),
        height: view.height(),
        inside: view.pixels().map(|p| p[0] > 127).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_data_specs() {
        assert_eq!(
            DataSource::parse("toy:5:7").unwrap(),
            DataSource::Toy { n: 5, seed: 7 }
        );
        assert_eq!(
            DataSource::parse("toy:3").unwrap(),
            DataSource::Toy {
                n: 3,
                seed: dexar_toy::HELD_OUT_SEED
            }
        );
        for bad in [
            "toy:",
            "toy:x",
            "toy:0",
            "toy:1:2:3",
            "toy:100000000",
            "toy:18446744073709551615",
            "/nonexistent/data",
        ] {
            let e = DataSource::parse(bad).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
            assert!(e.message.contains("--data"), "{}", e.message);
        }
    }

    #[test]
    fn toy_items_link_object_words_to_masks() {
        let items = load(&DataSource::Toy { n: 3, seed: 1 }).unwrap();
        assert_eq!(items.len, 3);
        let items: Vec<EvalItem> = items.iter().map(Result::unwrap).collect();
        assert_eq!(items.len(), 3);
        for item in &items {
            let answer = item.answer.as_deref().unwrap();
            let n = answer.split_whitespace().count();
            assert!(!item.words.is_empty());
            for w in &item.words {
                assert!(w.word < n);
                assert!(w.mask.inside.iter().any(|&b| b));
            }
        }
    }
}
