//! Text about a scene: the description, question/answer pairs, and the links
//! from object words in each answer to the object masks they name.
//!
//! All text is lower case, words separated by single spaces, no punctuation
//! except `?` as a word of its own, and drawn from a closed word list
//! ([`emitted_words`]) so a word-level tokenizer covers it exactly.

use serde::{Deserialize, Serialize};

use crate::shapes::{Color, SceneObject, Shape, MAX_OBJECTS};

/// The prompt whose answer is the scene description.
pub const DESCRIBE_PROMPT: &str = "describe the image";

/// Why a word is linked to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordRole {
    /// A colour word naming the object (`red`).
    Color,
    /// A shape word naming the object (`circle`).
    Shape,
    /// A location word answering where the object is (`top`, `left`).
    Location,
}

/// Word `word` (0-based, counting space-separated words of the text) refers
/// to `object` (index into [`crate::Scene::objects`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WordLink {
    pub word: usize,
    pub object: usize,
    pub role: WordRole,
}

/// A piece of generated text with its word-to-object links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedText {
    pub text: String,
    pub links: Vec<WordLink>,
}

impl LinkedText {
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.text.split(' ')
    }
}

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaPair {
    pub prompt: String,
    pub answer: LinkedText,
}

/// One cell of the 3x3 partition of the image, named as a person would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    TopLeft,
    Top,
    TopRight,
    Left,
    Center,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Region {
    /// The cell holding the point `(x, y)` of a `size` x `size` image.
    pub fn of(center: (f32, f32), size: u32) -> Self {
        let third = |t: f32| ((t * 3.0 / size as f32) as usize).min(2);
        const CELLS: [[Region; 3]; 3] = [
            [Region::TopLeft, Region::Top, Region::TopRight],
            [Region::Left, Region::Center, Region::Right],
            [Region::BottomLeft, Region::Bottom, Region::BottomRight],
        ];
        CELLS[third(center.1)][third(center.0)]
    }

    pub fn words(self) -> &'static [&'static str] {
        match self {
            Region::TopLeft => &["top", "left"],
            Region::Top => &["top"],
            Region::TopRight => &["top", "right"],
            Region::Left => &["left"],
            Region::Center => &["center"],
            Region::Right => &["right"],
            Region::BottomLeft => &["bottom", "left"],
            Region::Bottom => &["bottom"],
            Region::BottomRight => &["bottom", "right"],
        }
    }
}

/// Where object `a` is relative to object `b`, along the axis on which their
/// centres differ most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    Above,
    Below,
    LeftOf,
    RightOf,
}

impl Relation {
    pub fn between(a: &SceneObject, b: &SceneObject) -> Self {
        let dx = a.center.0 - b.center.0;
        let dy = a.center.1 - b.center.1;
        match (dy.abs() > dx.abs(), dy < 0.0, dx < 0.0) {
            (true, true, _) => Relation::Above,
            (true, false, _) => Relation::Below,
            (false, _, true) => Relation::LeftOf,
            (false, _, false) => Relation::RightOf,
        }
    }

    pub fn words(self) -> &'static [&'static str] {
        match self {
            Relation::Above => &["above"],
            Relation::Below => &["below"],
            Relation::LeftOf => &["left", "of"],
            Relation::RightOf => &["right", "of"],
        }
    }
}

const NUMBER_WORDS: [&str; MAX_OBJECTS as usize] = ["one", "two", "three", "four"];

/// The word for a count of objects, `None` beyond [`MAX_OBJECTS`].
pub fn number_word(count: usize) -> Option<&'static str> {
    count
        .checked_sub(1)
        .and_then(|i| NUMBER_WORDS.get(i))
        .copied()
}

/// Words of prompts and answers other than colour and shape names.
const FIXED_WORDS: &[&str] = &[
    "?", "a", "above", "an", "and", "below", "bottom", "center", "color", "describe", "how",
    "image", "is", "left", "many", "of", "right", "shape", "shapes", "the", "top", "what", "where",
];

/// Every word the generator can emit, unsorted, possibly repeated.
pub fn emitted_words() -> Vec<&'static str> {
    let mut words = FIXED_WORDS.to_vec();
    words.extend(NUMBER_WORDS);
    words.extend(Shape::ALL.iter().map(|s| s.name()));
    words.extend(Color::ALL.iter().map(|c| c.name()));
    words
}

/// `an` before a vowel, else `a`.
fn article(color: Color) -> &'static str {
    if color.name().starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Accumulates words and links, keeping word indices right by construction.
#[derive(Default)]
struct TextBuilder {
    words: Vec<&'static str>,
    links: Vec<WordLink>,
}

impl TextBuilder {
    fn push(&mut self, words: &[&'static str]) -> &mut Self {
        self.words.extend_from_slice(words);
        self
    }

    fn linked(&mut self, word: &'static str, object: usize, role: WordRole) -> &mut Self {
        self.links.push(WordLink {
            word: self.words.len(),
            object,
            role,
        });
        self.words.push(word);
        self
    }

    /// `a red circle` / `an orange star`, colour and shape linked to `object`.
    fn name(&mut self, objects: &[SceneObject], object: usize) -> &mut Self {
        let o = &objects[object];
        self.push(&[article(o.color)])
            .linked(o.color.name(), object, WordRole::Color)
            .linked(o.shape.name(), object, WordRole::Shape)
    }

    fn finish(&mut self) -> LinkedText {
        LinkedText {
            text: self.words.join(" "),
            links: std::mem::take(&mut self.links),
        }
    }
}

/// Objects are named in the order given (the generator's: that of
/// [`Color::ALL`]).
///
/// `a red circle`, `a red circle above a blue square`, and for more objects
/// the first one related to each other one: `a red circle left of a blue
/// square and a green cross` when the relation is shared, else `a red circle
/// above a blue square and left of a green cross`.
pub(crate) fn describe(objects: &[SceneObject]) -> LinkedText {
    let mut text = TextBuilder::default();
    let Some((anchor, others)) = objects.split_first() else {
        return text.finish();
    };
    text.name(objects, 0);
    let relations: Vec<Relation> = others
        .iter()
        .map(|o| Relation::between(anchor, o))
        .collect();
    let shared = relations.windows(2).all(|w| w[0] == w[1]);
    for (i, relation) in relations.iter().enumerate() {
        if i > 0 {
            text.push(&["and"]);
        }
        if i == 0 || !shared {
            text.push(relation.words());
        }
        text.name(objects, i + 1);
    }
    text.finish()
}

/// Per object: its colour by shape, its shape by colour, where it is; then the
/// object count.
pub(crate) fn questions(objects: &[SceneObject], size: u32) -> Vec<QaPair> {
    let mut pairs = Vec::with_capacity(objects.len() * 3 + 1);
    for (i, o) in objects.iter().enumerate() {
        let (shape, color) = (o.shape.name(), o.color.name());
        pairs.push(QaPair {
            prompt: format!("what color is the {shape} ?"),
            answer: TextBuilder::default()
                .linked(color, i, WordRole::Color)
                .finish(),
        });
        pairs.push(QaPair {
            prompt: format!("what shape is {color} ?"),
            answer: TextBuilder::default()
                .linked(shape, i, WordRole::Shape)
                .finish(),
        });
        let mut where_answer = TextBuilder::default();
        for &word in Region::of(o.center, size).words() {
            where_answer.linked(word, i, WordRole::Location);
        }
        pairs.push(QaPair {
            prompt: format!("where is the {color} {shape} ?"),
            answer: where_answer.finish(),
        });
    }
    if let Some(count) = number_word(objects.len()) {
        pairs.push(QaPair {
            prompt: "how many shapes ?".to_string(),
            answer: TextBuilder::default().push(&[count]).finish(),
        });
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{generate, Scene, SceneConfig};

    fn sample_scenes() -> impl Iterator<Item = Scene> {
        let config = SceneConfig {
            max_objects: MAX_OBJECTS,
            ..SceneConfig::default()
        };
        (0..300).map(move |i| generate(&config, 21, i))
    }

    /// Relation recomputed from scratch, independently of [`Relation::between`].
    fn expected_relation(a: &SceneObject, b: &SceneObject) -> &'static str {
        let (dx, dy) = (a.center.0 - b.center.0, a.center.1 - b.center.1);
        if dy.abs() > dx.abs() {
            if dy < 0.0 {
                "above"
            } else {
                "below"
            }
        } else if dx < 0.0 {
            "left of"
        } else {
            "right of"
        }
    }

    fn object_named<'a>(scene: &'a Scene, color: &str, shape: &str) -> Option<&'a SceneObject> {
        scene
            .objects
            .iter()
            .find(|o| o.color.name() == color && o.shape.name() == shape)
    }

    #[test]
    fn text_is_lower_case_single_spaced_words() {
        for scene in sample_scenes() {
            for (prompt, answer) in scene.qa_pairs() {
                for text in [prompt, answer.text.as_str()] {
                    assert!(!text.is_empty());
                    for word in text.split(' ') {
                        assert!(
                            word == "?"
                                || (!word.is_empty()
                                    && word.bytes().all(|b| b.is_ascii_lowercase())),
                            "bad word {word:?} in {text:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn description_names_every_object_with_correct_links() {
        for scene in sample_scenes() {
            let d = &scene.description;
            let words: Vec<&str> = d.words().collect();
            for (i, o) in scene.objects.iter().enumerate() {
                let links: Vec<&WordLink> = d.links.iter().filter(|l| l.object == i).collect();
                assert_eq!(links.len(), 2, "{}", d.text);
                let color = links.iter().find(|l| l.role == WordRole::Color).unwrap();
                let shape = links.iter().find(|l| l.role == WordRole::Shape).unwrap();
                assert_eq!(words[color.word], o.color.name());
                assert_eq!(words[shape.word], o.shape.name());
                assert_eq!(shape.word, color.word + 1);
                let article = if o.color == Color::Orange { "an" } else { "a" };
                assert_eq!(words[color.word - 1], article);
            }
            // Unlinked words never name a colour or shape.
            for (w, word) in words.iter().enumerate() {
                let named = Color::ALL.iter().any(|c| c.name() == *word)
                    || Shape::ALL.iter().any(|s| s.name() == *word);
                assert_eq!(named, d.links.iter().any(|l| l.word == w), "{}", d.text);
            }
        }
    }

    #[test]
    fn description_relations_match_the_geometry() {
        let mut seen = std::collections::HashSet::new();
        for scene in sample_scenes() {
            let text = &scene.description.text;
            let name = |o: &SceneObject| {
                let article = if o.color.name() == "orange" {
                    "an"
                } else {
                    "a"
                };
                format!("{article} {} {}", o.color.name(), o.shape.name())
            };
            let Some((anchor, others)) = scene.objects.split_first() else {
                panic!("empty scene");
            };
            if others.is_empty() {
                assert_eq!(*text, name(anchor));
                continue;
            }
            let relations: Vec<&str> = others
                .iter()
                .map(|o| expected_relation(anchor, o))
                .collect();
            let shared = relations.iter().all(|r| *r == relations[0]);
            let mut expected = format!("{} {} {}", name(anchor), relations[0], name(&others[0]));
            for (o, r) in others.iter().zip(&relations).skip(1) {
                if shared {
                    expected += &format!(" and {}", name(o));
                } else {
                    expected += &format!(" and {r} {}", name(o));
                }
            }
            assert_eq!(*text, expected);
            seen.extend(relations);
        }
        assert_eq!(seen.len(), 4, "all four relations occur: {seen:?}");
    }

    #[test]
    fn answers_are_correct_for_generated_scenes() {
        let mut asked = [0usize; 4];
        for scene in sample_scenes() {
            let size = scene.image.width() as f32;
            for qa in &scene.questions {
                let q: Vec<&str> = qa.prompt.split(' ').collect();
                let answer = qa.answer.text.as_str();
                let link_targets: Vec<usize> = qa.answer.links.iter().map(|l| l.object).collect();
                match q.as_slice() {
                    ["what", "color", "is", "the", shape, "?"] => {
                        let matching: Vec<usize> = (0..scene.objects.len())
                            .filter(|&i| scene.objects[i].shape.name() == *shape)
                            .collect();
                        assert_eq!(matching.len(), 1, "unambiguous");
                        assert_eq!(answer, scene.objects[matching[0]].color.name());
                        assert_eq!(link_targets, matching);
                        asked[0] += 1;
                    }
                    ["what", "shape", "is", color, "?"] => {
                        let matching: Vec<usize> = (0..scene.objects.len())
                            .filter(|&i| scene.objects[i].color.name() == *color)
                            .collect();
                        assert_eq!(matching.len(), 1, "unambiguous");
                        assert_eq!(answer, scene.objects[matching[0]].shape.name());
                        assert_eq!(link_targets, matching);
                        asked[1] += 1;
                    }
                    ["where", "is", "the", color, shape, "?"] => {
                        let o = object_named(&scene, color, shape)
                            .expect("asked about a present object");
                        let row =
                            ["top", "", "bottom"][((o.center.1 * 3.0 / size) as usize).min(2)];
                        let col =
                            ["left", "", "right"][((o.center.0 * 3.0 / size) as usize).min(2)];
                        let expected = match (row, col) {
                            ("", "") => "center".to_string(),
                            (r, "") => r.to_string(),
                            ("", c) => c.to_string(),
                            (r, c) => format!("{r} {c}"),
                        };
                        assert_eq!(answer, expected);
                        assert!(qa.answer.links.iter().all(|l| l.role == WordRole::Location));
                        assert_eq!(qa.answer.links.len(), qa.answer.words().count());
                        asked[2] += 1;
                    }
                    ["how", "many", "shapes", "?"] => {
                        let n = ["one", "two", "three", "four"];
                        assert_eq!(answer, n[scene.objects.len() - 1]);
                        assert!(qa.answer.links.is_empty());
                        asked[3] += 1;
                    }
                    other => panic!("unexpected question {other:?}"),
                }
            }
        }
        assert!(asked.iter().all(|&n| n > 0), "{asked:?}");
    }

    #[test]
    fn regions_partition_the_image_in_thirds() {
        assert_eq!(Region::of((0.0, 0.0), 60), Region::TopLeft);
        assert_eq!(Region::of((30.0, 30.0), 60), Region::Center);
        assert_eq!(Region::of((59.9, 10.0), 60), Region::TopRight);
        assert_eq!(Region::of((19.9, 40.0), 60), Region::BottomLeft);
        assert_eq!(Region::of((20.0, 40.0), 60), Region::Bottom);
        assert_eq!(Region::of((60.0, 60.0), 60), Region::BottomRight);
        assert_eq!(number_word(0), None);
        assert_eq!(number_word(3), Some("three"));
        assert_eq!(number_word(MAX_OBJECTS as usize + 1), None);
    }
}
