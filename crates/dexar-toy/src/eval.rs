//! How well a toy checkpoint answers on held-out scenes, and a quick DEX-AR
//! pointing game on the object words of its descriptions: the numbers the
//! trainer is tuned against. (The full attribution benchmark, with
//! perturbation curves and every strategy, is `dexar eval`.)

use std::sync::atomic::AtomicBool;

use dexar_core::{DexarStrategy, RawAttentionStrategy, Strategy, TokenMap};
use dexar_model::{generate_traced, Checkpoint, GenerationSettings, Mode, TracedStep};
use image::GrayImage;

use crate::shapes::{generate, Color, Scene, SceneConfig, SceneObject, Shape};
use crate::text::describe;
use crate::vocab::vocabulary;
use crate::ToyError;

/// Seed of the held-out scenes: a stream training never draws from.
pub const HELD_OUT_SEED: u64 = 0x0e7a_15ee;

/// Right answers out of asked questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.correct += usize::from(ok);
        self.total += 1;
    }

    /// `correct / total`, 0 when nothing was asked.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% ({}/{})",
            100.0 * self.rate(),
            self.correct,
            self.total
        )
    }
}

/// Greedy answers of a checkpoint on held-out scenes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerAccuracy {
    pub scenes: usize,
    /// The description names exactly the scene's objects (colour and shape
    /// words right, in whatever order the model chose).
    pub description_objects: Tally,
    /// The description is word for word one the generator could have
    /// written for the scene (any order of the objects; relations right).
    pub description_valid: Tally,
    /// Word for word the reference description (same object order).
    pub description_exact: Tally,
    pub color_questions: Tally,
    pub shape_questions: Tally,
    pub where_questions: Tally,
    pub count_questions: Tally,
    /// Colour and shape words of generated descriptions naming a present
    /// object whose DEX-AR map peaks inside that object's mask.
    pub pointing_dexar: Tally,
    /// The same with raw attention.
    pub pointing_raw_attention: Tally,
}

impl std::fmt::Display for AnswerAccuracy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "held-out scenes:            {}", self.scenes)?;
        writeln!(
            f,
            "description objects right:  {}",
            self.description_objects
        )?;
        writeln!(f, "description valid:          {}", self.description_valid)?;
        writeln!(f, "description exact:          {}", self.description_exact)?;
        writeln!(f, "what color questions:       {}", self.color_questions)?;
        writeln!(f, "what shape questions:       {}", self.shape_questions)?;
        writeln!(f, "where questions:            {}", self.where_questions)?;
        writeln!(f, "how many questions:         {}", self.count_questions)?;
        writeln!(f, "pointing game, dexar:       {}", self.pointing_dexar)?;
        write!(
            f,
            "pointing game, raw attn:    {}",
            self.pointing_raw_attention
        )
    }
}

/// Asks `ckpt` every question of held-out scenes `0..n` of stream `seed`
/// (greedy decoding, all decoder layers traced) and scores the answers.
pub fn answer_accuracy(ckpt: &Checkpoint, n: u64, seed: u64) -> Result<AnswerAccuracy, ToyError> {
    answer_accuracy_with(ckpt, n, seed, &SceneConfig::default())
}

/// [`answer_accuracy`] on scenes drawn with `scene_config`.
pub fn answer_accuracy_with(
    ckpt: &Checkpoint,
    n: u64,
    seed: u64,
    scene_config: &SceneConfig,
) -> Result<AnswerAccuracy, ToyError> {
    let settings = GenerationSettings {
        max_tokens: 24,
        layers: 0..ckpt.text_config().num_hidden_layers,
        ..GenerationSettings::default()
    };
    let cancel = AtomicBool::new(false);
    let dexar = DexarStrategy {
        filtered: true,
        topk: 1,
    };
    let vocab = vocabulary();
    let mut acc = AnswerAccuracy::default();
    for index in 0..n {
        let scene = generate(scene_config, seed, index);
        let img = image::DynamicImage::ImageRgb8(scene.image.clone());
        let features = ckpt.encode_image(&img)?;
        for (prompt, answer) in scene.qa_pairs() {
            let prepared = ckpt.prepare_chat(&[], prompt, &features)?;
            let mut steps: Vec<TracedStep> = Vec::new();
            let generation = generate_traced(
                ckpt,
                &prepared,
                &features,
                &settings,
                &Mode::Generate,
                &cancel,
                &mut |step| {
                    steps.push(step);
                    true
                },
            )?;
            let said = generation.text.trim();
            let right = said == answer.text;
            match prompt.split(' ').take(2).collect::<Vec<_>>()[..] {
                ["describe", ..] => {
                    acc.description_exact.add(right);
                    acc.description_objects
                        .add(named_objects(said) == named_objects(&answer.text));
                    acc.description_valid
                        .add(is_valid_description(&scene, said));
                    for step in &steps {
                        let word = vocab.get(step.trace.token_id as usize).map(String::as_str);
                        let Some(object) = word.and_then(|w| object_named_by(&scene, w)) else {
                            continue;
                        };
                        let hit = |map: TokenMap| points_inside(&map, &object.mask);
                        acc.pointing_dexar
                            .add(dexar.token_map(&step.trace).is_ok_and(hit));
                        acc.pointing_raw_attention
                            .add(RawAttentionStrategy.token_map(&step.trace).is_ok_and(hit));
                    }
                }
                ["what", "color"] => acc.color_questions.add(right),
                ["what", "shape"] => acc.shape_questions.add(right),
                ["where", ..] => acc.where_questions.add(right),
                _ => acc.count_questions.add(right),
            }
        }
        acc.scenes += 1;
    }
    Ok(acc)
}

/// `(colour, shape)` pairs a description names, sorted.
fn named_objects(text: &str) -> Vec<(String, String)> {
    let words: Vec<&str> = text.split(' ').collect();
    let mut pairs: Vec<(String, String)> = words
        .windows(2)
        .filter(|w| {
            Color::ALL.iter().any(|c| c.name() == w[0])
                && Shape::ALL.iter().any(|s| s.name() == w[1])
        })
        .map(|w| (w[0].to_string(), w[1].to_string()))
        .collect();
    pairs.sort();
    pairs
}

/// Whether `text` is the description of some ordering of the scene's objects.
fn is_valid_description(scene: &Scene, text: &str) -> bool {
    let mut order: Vec<usize> = (0..scene.objects.len()).collect();
    permutations(&mut order, 0, &mut |perm| {
        let objects: Vec<SceneObject> = perm.iter().map(|&i| scene.objects[i].clone()).collect();
        describe(&objects).text == text
    })
}

/// Calls `f` on every permutation of `items[k..]` until it returns true.
fn permutations(items: &mut [usize], k: usize, f: &mut dyn FnMut(&[usize]) -> bool) -> bool {
    if k == items.len() {
        return f(items);
    }
    for i in k..items.len() {
        items.swap(k, i);
        let found = permutations(items, k + 1, f);
        items.swap(k, i);
        if found {
            return true;
        }
    }
    false
}

/// The object a colour or shape word names in this scene (each colour and
/// shape occurs at most once per scene).
fn object_named_by<'a>(scene: &'a Scene, word: &str) -> Option<&'a SceneObject> {
    scene
        .objects
        .iter()
        .find(|o| o.color.name() == word || o.shape.name() == word)
}

/// Pointing game: the peak of the map, bilinearly upsampled to the image
/// (PyTorch `align_corners=False`), falls inside `mask`. A constant map
/// (no visual evidence) never hits.
fn points_inside(map: &TokenMap, mask: &GrayImage) -> bool {
    if map.is_degenerate() {
        return false;
    }
    let (w, h) = mask.dimensions();
    let up = upsample_bilinear(
        &map.raw,
        map.grid.height,
        map.grid.width,
        h as usize,
        w as usize,
    );
    let mut best = 0;
    for (i, &v) in up.iter().enumerate() {
        if v > up[best] {
            best = i;
        }
    }
    let (x, y) = ((best % w as usize) as u32, (best / w as usize) as u32);
    mask.get_pixel(x, y).0[0] != 0
}

/// Bilinear resize of a row-major `gh x gw` grid to `h x w`, as PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)`.
fn upsample_bilinear(grid: &[f32], gh: usize, gw: usize, h: usize, w: usize) -> Vec<f32> {
    let source = |dst: usize, scale: f32, len: usize| -> (usize, usize, f32) {
        let s = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, s - i0 as f32)
    };
    let (sy, sx) = (gh as f32 / h as f32, gw as f32 / w as f32);
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        let (y0, y1, fy) = source(y, sy, gh);
        for x in 0..w {
            let (x0, x1, fx) = source(x, sx, gw);
            let top = grid[y0 * gw + x0] * (1.0 - fx) + grid[y0 * gw + x1] * fx;
            let bottom = grid[y1 * gw + x0] * (1.0 - fx) + grid[y1 * gw + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_core::Grid;

    #[test]
    fn bilinear_upsampling_matches_pytorch_corners_and_peaks() {
        // torch.nn.functional.interpolate([[1, 2], [3, 4]], size=4, mode="bilinear")
        let up = upsample_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4);
        let expected = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        for (a, b) in up.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{up:?}");
        }
        let mut mask = GrayImage::new(64, 64);
        for y in 40..56 {
            for x in 8..24 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        let mut raw = vec![0.0; 64];
        raw[5 * 8 + 1] = 1.0; // cell (row 5, col 1) covers pixels x 8..16, y 40..48
        let map = TokenMap::single(Grid::new(8, 8), raw, 1.0);
        assert!(points_inside(&map, &mask));
        let flat = TokenMap {
            raw: vec![0.5; 64],
            ..map
        };
        assert!(!points_inside(&flat, &mask), "a constant map never points");
    }

    #[test]
    fn descriptions_are_judged_up_to_object_order() {
        let scene = (0..50)
            .map(|i| generate(&SceneConfig::default(), 3, i))
            .find(|s| s.objects.len() == 3)
            .expect("a three-object scene");
        let reference = scene.description.text.clone();
        assert!(is_valid_description(&scene, &reference));
        let reordered: Vec<SceneObject> = [2, 0, 1]
            .iter()
            .map(|&i| scene.objects[i].clone())
            .collect();
        let other = describe(&reordered).text;
        assert!(is_valid_description(&scene, &other));
        assert_eq!(named_objects(&other), named_objects(&reference));
        assert!(!is_valid_description(&scene, "a red circle"));
        assert_eq!(named_objects("a red circle above an orange star").len(), 2);
    }
}
