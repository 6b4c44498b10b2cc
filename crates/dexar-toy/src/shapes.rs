//! The shapes world: small RGB scenes of coloured shapes on a light background,
//! each with exact per-object pixel masks and linked text.
//!
//! Everything is a pure function of `(SceneConfig, seed, index)`: the same
//! triple gives the same bytes on every machine and with every dependency
//! version (own PRNG, no trigonometry, plain f32 arithmetic).

use image::{GrayImage, Luma, Rgb, RgbImage};

use crate::rng::SplitMix64;
use crate::text::{self, LinkedText, QaPair};

/// Background colour before noise: a light warm grey every shape colour
/// stands out against.
pub const BACKGROUND: Rgb<u8> = Rgb([235, 235, 228]);

/// Most objects a scene can hold: one per shape fits the closed vocabulary
/// of number words (`one` ..= `four`) and keeps every question unambiguous.
pub const MAX_OBJECTS: u32 = 4;

/// Smallest image side [`generate`] accepts; smaller configs are raised to it.
pub const MIN_SIZE: u32 = 32;

/// Gap in pixels kept between object boxes, so masks never touch.
const GAP: u32 = 2;

/// The shapes a scene can contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Cross,
    Star,
    Diamond,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Cross,
        Shape::Star,
        Shape::Diamond,
    ];

    /// The word naming this shape in descriptions and questions.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
            Shape::Star => "star",
            Shape::Diamond => "diamond",
        }
    }

    /// Whether the point `(u, v)`, in units of the half side of the shape's
    /// box and relative to its centre (v grows downwards), is inside.
    fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            // Slightly inset so a square does not look much bigger than a circle.
            Shape::Square => u.abs() <= 0.85 && v.abs() <= 0.85,
            // Apex up, base along the bottom edge.
            Shape::Triangle => v <= 1.0 && u.abs() <= (v + 1.0) * 0.5,
            Shape::Cross => {
                (u.abs() <= 0.34 && v.abs() <= 1.0) || (v.abs() <= 0.34 && u.abs() <= 1.0)
            }
            Shape::Star => inside_polygon(&STAR, u, v),
            Shape::Diamond => u.abs() + v.abs() <= 1.0,
        }
    }
}

/// A five-pointed star (inner radius 0.5), point up, shifted down by 0.0955
/// so its extent is centred; vertices precomputed so no platform's `sin`
/// can move a pixel.
const STAR: [(f32, f32); 10] = [
    (0.0, -0.9045),
    (0.293893, -0.309008),
    (0.951057, -0.213517),
    (0.475528, 0.250000),
    (0.587785, 0.904517),
    (0.0, 0.5955),
    (-0.587785, 0.904517),
    (-0.475528, 0.250000),
    (-0.951057, -0.213517),
    (-0.293893, -0.309008),
];

/// Even-odd ray casting.
fn inside_polygon(vertices: &[(f32, f32)], u: f32, v: f32) -> bool {
    let mut inside = false;
    let mut j = vertices.len() - 1;
    for i in 0..vertices.len() {
        let (ui, vi) = vertices[i];
        let (uj, vj) = vertices[j];
        if (vi > v) != (vj > v) && u < (uj - ui) * (v - vi) / (vj - vi) + ui {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// The colours a shape can have; all far from [`BACKGROUND`] and each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    Red,
    Orange,
    Yellow,
    Green,
    Cyan,
    Blue,
    Purple,
    Black,
}

impl Color {
    /// Also the order in which descriptions name objects.
    pub const ALL: [Color; 8] = [
        Color::Red,
        Color::Orange,
        Color::Yellow,
        Color::Green,
        Color::Cyan,
        Color::Blue,
        Color::Purple,
        Color::Black,
    ];

    /// The word naming this colour.
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Orange => "orange",
            Color::Yellow => "yellow",
            Color::Green => "green",
            Color::Cyan => "cyan",
            Color::Blue => "blue",
            Color::Purple => "purple",
            Color::Black => "black",
        }
    }

    /// The exact fill colour before noise.
    pub fn rgb(self) -> Rgb<u8> {
        Rgb(match self {
            Color::Red => [200, 20, 30],
            Color::Orange => [245, 120, 0],
            Color::Yellow => [240, 215, 10],
            Color::Green => [30, 150, 50],
            Color::Cyan => [0, 185, 205],
            Color::Blue => [35, 70, 215],
            Color::Purple => [135, 55, 175],
            Color::Black => [25, 25, 25],
        })
    }
}

/// How scenes are drawn. Out-of-range values are clamped by [`generate`]:
/// `size >= MIN_SIZE`, `1 <= min_objects <= max_objects <= MAX_OBJECTS`,
/// `0 <= noise <= 0.25`.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// Image side in pixels (square images).
    pub size: u32,
    pub min_objects: u32,
    pub max_objects: u32,
    /// Per-pixel, per-channel uniform noise amplitude as a fraction of 255,
    /// applied to every pixel (objects too). `0.0` gives exact colours.
    pub noise: f32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            size: 64,
            min_objects: 1,
            max_objects: 3,
            noise: 0.03,
        }
    }
}

impl SceneConfig {
    /// The same config with noise switched off: colours are exact.
    pub fn noise_free(self) -> Self {
        Self { noise: 0.0, ..self }
    }

    fn clamped(&self) -> Self {
        let max_objects = self.max_objects.clamp(1, MAX_OBJECTS);
        Self {
            size: self.size.max(MIN_SIZE),
            min_objects: self.min_objects.clamp(1, max_objects),
            max_objects,
            noise: if self.noise.is_finite() {
                self.noise.clamp(0.0, 0.25)
            } else {
                0.0
            },
        }
    }
}

/// An axis-aligned pixel box, `x0..x1` by `y0..y1` (ends exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl BBox {
    fn separated_from(&self, other: &BBox, gap: u32) -> bool {
        self.x1 + gap <= other.x0
            || other.x1 + gap <= self.x0
            || self.y1 + gap <= other.y0
            || other.y1 + gap <= self.y0
    }
}

/// One shape in a scene, with its exact ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneObject {
    pub shape: Shape,
    pub color: Color,
    /// Centre of the shape's placement box, in pixels (x right, y down).
    pub center: (f32, f32),
    /// Tight box around the visible pixels.
    pub bbox: BBox,
    /// Visible pixels: 255 inside, 0 outside; same size as the image.
    pub mask: GrayImage,
}

impl SceneObject {
    /// Number of visible pixels.
    pub fn area(&self) -> usize {
        self.mask.pixels().filter(|p| p.0[0] != 0).count()
    }

    /// Whether pixel `(x, y)` belongs to this object.
    pub fn covers(&self, x: u32, y: u32) -> bool {
        self.mask.get_pixel(x, y).0[0] != 0
    }
}

/// A generated scene: the image, its objects and its linked text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub image: RgbImage,
    /// In the order of [`Color::ALL`] (also the drawing order);
    /// [`crate::WordLink::object`] indexes this.
    pub objects: Vec<SceneObject>,
    /// The answer to [`crate::DESCRIBE_PROMPT`], e.g. `a red circle above a blue square`.
    pub description: LinkedText,
    /// Questions about single attributes, the count last.
    pub questions: Vec<QaPair>,
}

impl Scene {
    /// Every `(prompt, answer)` pair of this scene, the description first.
    pub fn qa_pairs(&self) -> impl Iterator<Item = (&str, &LinkedText)> {
        std::iter::once((text::DESCRIBE_PROMPT, &self.description)).chain(
            self.questions
                .iter()
                .map(|q| (q.prompt.as_str(), &q.answer)),
        )
    }
}

/// Where an object goes before drawing.
struct Placement {
    shape: Shape,
    color: Color,
    /// Placement box: a `side` x `side` square.
    x0: u32,
    y0: u32,
    side: u32,
}

/// Generates scene `index` of the stream `seed`. Deterministic; scenes of one
/// seed are independent of each other (scene 5 does not depend on 0..5).
pub fn generate(config: &SceneConfig, seed: u64, index: u64) -> Scene {
    let config = config.clamped();
    let mut rng = SplitMix64::for_scene(seed, index);
    let count = rng.range(config.min_objects, config.max_objects) as usize;

    // Distinct shapes and distinct colours, so every question has one answer.
    let mut shapes = Shape::ALL;
    let mut colors = Color::ALL;
    rng.shuffle(&mut shapes);
    rng.shuffle(&mut colors);

    let mut placements = place(&mut rng, config.size, &shapes[..count], &colors[..count]);
    // Objects, and so descriptions, go in the fixed order of `Color::ALL`:
    // every scene has exactly one right description. (Boxes never overlap,
    // so the drawing order does not change a pixel.)
    placements.sort_by_key(|p| p.color as usize);
    let (image, objects) = draw(&mut rng, &config, &placements);
    let description = text::describe(&objects);
    let questions = text::questions(&objects, config.size);
    Scene {
        image,
        objects,
        description,
        questions,
    }
}

/// Random, well separated boxes; sides 14-26 px at size 64, scaled with size.
/// A crowded attempt is restarted with a smaller largest side, so the
/// requested count is placed whenever it fits at all.
fn place(rng: &mut SplitMix64, size: u32, shapes: &[Shape], colors: &[Color]) -> Vec<Placement> {
    const ROUNDS: u32 = 8;
    const ATTEMPTS: u32 = 100;
    let min_side = (size * 14 / 64).max(7);
    let max_side = (size * 26 / 64).max(min_side);
    let margin = 1;
    let mut best: Vec<Placement> = Vec::new();
    for round in 0..ROUNDS {
        let top_side = max_side - (max_side - min_side) * round / (ROUNDS - 1);
        let mut placed: Vec<Placement> = Vec::with_capacity(shapes.len());
        for (&shape, &color) in shapes.iter().zip(colors) {
            let found = (0..ATTEMPTS).find_map(|_| {
                let side = rng.range(min_side, top_side);
                let x0 = rng.range(margin, size - side - margin);
                let y0 = rng.range(margin, size - side - margin);
                let candidate = Placement {
                    shape,
                    color,
                    x0,
                    y0,
                    side,
                };
                let clear = placed
                    .iter()
                    .all(|p| placement_box(&candidate).separated_from(&placement_box(p), GAP));
                clear.then_some(candidate)
            });
            match found {
                Some(p) => placed.push(p),
                None => break,
            }
        }
        if placed.len() == shapes.len() {
            return placed;
        }
        if placed.len() > best.len() {
            best = placed;
        }
    }
    best
}

fn placement_box(p: &Placement) -> BBox {
    BBox {
        x0: p.x0,
        y0: p.y0,
        x1: p.x0 + p.side,
        y1: p.y0 + p.side,
    }
}

/// Rasterises the placements in order (no anti-aliasing, so masks are exact)
/// and adds noise. A later object drawn over an earlier one removes those
/// pixels from the earlier mask.
fn draw(
    rng: &mut SplitMix64,
    config: &SceneConfig,
    placements: &[Placement],
) -> (RgbImage, Vec<SceneObject>) {
    let size = config.size;
    let mut image = RgbImage::from_pixel(size, size, BACKGROUND);
    let mut masks: Vec<GrayImage> = Vec::with_capacity(placements.len());
    for p in placements {
        let half = p.side as f32 * 0.5;
        let (cx, cy) = (p.x0 as f32 + half, p.y0 as f32 + half);
        let mut mask = GrayImage::new(size, size);
        for y in p.y0..p.y0 + p.side {
            for x in p.x0..p.x0 + p.side {
                // Sample at the pixel centre.
                let u = (x as f32 + 0.5 - cx) / half;
                let v = (y as f32 + 0.5 - cy) / half;
                if p.shape.contains(u, v) {
                    image.put_pixel(x, y, p.color.rgb());
                    mask.put_pixel(x, y, Luma([255]));
                    for earlier in &mut masks {
                        earlier.put_pixel(x, y, Luma([0]));
                    }
                }
            }
        }
        masks.push(mask);
    }

    if config.noise > 0.0 {
        let amplitude = config.noise * 255.0;
        for pixel in image.pixels_mut() {
            for channel in &mut pixel.0 {
                let delta = (rng.unit_f32() * 2.0 - 1.0) * amplitude;
                *channel = (f32::from(*channel) + delta).round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    let objects = placements
        .iter()
        .zip(masks)
        .map(|(p, mask)| {
            let half = p.side as f32 * 0.5;
            SceneObject {
                shape: p.shape,
                color: p.color,
                center: (p.x0 as f32 + half, p.y0 as f32 + half),
                bbox: tight_bbox(&mask).unwrap_or_else(|| placement_box(p)),
                mask,
            }
        })
        .collect();
    (image, objects)
}

/// Box around the non-zero pixels of `mask`, `None` when it is empty.
fn tight_bbox(mask: &GrayImage) -> Option<BBox> {
    let mut bbox: Option<BBox> = None;
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] == 0 {
            continue;
        }
        let b = bbox.get_or_insert(BBox {
            x0: x,
            y0: y,
            x1: x + 1,
            y1: y + 1,
        });
        b.x0 = b.x0.min(x);
        b.y0 = b.y0.min(y);
        b.x1 = b.x1.max(x + 1);
        b.y1 = b.y1.max(y + 1);
    }
    bbox
}

#[cfg(test)]
mod tests;
