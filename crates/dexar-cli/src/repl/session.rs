//! The REPL's state: model, image, conversation, last answer (its step
//! traces over all layers), settings, strategies and plugins; and the maps
//! `/show` and `/compare` draw, computed on demand from the kept traces so
//! `/layers` or `/strategy` re-explain without regenerating.

use candle_core::Tensor;
use dexar_core::{
    builtin_strategy, layer_range, minmax, Grid, StepTrace, Strategy, TokenMap, BUILTIN_NAMES,
};
use dexar_model::{Checkpoint, LoadOptions, StopReason, IMAGE_MARKER};
use dexar_plugin::host::PluginRegistry;
use image::{DynamicImage, RgbImage};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::commands::Selection;
use crate::explain::display_view;

/// Decoding and explanation settings the commands change.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// DEXAR.md's layer_index: first layer used, negative from the end.
    pub layer_index: i64,
    /// k of DEX-AR's top-k head scores.
    pub topk: usize,
}

/// The image being discussed.
pub struct LoadedImage {
    pub label: String,
    pub image: DynamicImage,
    /// What the model saw (resized, cropped), enlarged for display.
    pub view: RgbImage,
    pub features: Tensor,
}

/// One finished exchange of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

/// The last answer, kept with the traces of every layer.
pub struct Answer {
    pub steps: Vec<StepTrace>,
    /// How generation ended; `None` when it failed half-way.
    pub stop: Option<StopReason>,
    pub teacher_forced: bool,
    pub elapsed: Duration,
}

impl Answer {
    pub fn text(&self) -> String {
        self.steps.iter().map(|s| s.token_text.as_str()).collect()
    }
}

pub struct Session {
    pub ckpt: Checkpoint,
    pub model_label: String,
    pub opts: LoadOptions,
    pub image: LoadedImage,
    /// Finished turns; the last one is the one `answer` belongs to.
    pub turns: Vec<Turn>,
    pub answer: Option<Answer>,
    pub settings: Settings,
    /// The strategy `/show` uses.
    pub strategy: String,
    pub plugins: PluginRegistry,
}

/// What `/show` draws: a map in [0, 1] with what it was made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub strategy: String,
    /// E.g. `token 2 " circle" δ=0.31` or `tokens 0-6 (sentence)`.
    pub title: String,
    pub map01: Vec<f32>,
    pub grid: Grid,
    /// Range of the map before min-max normalisation.
    pub raw_min: f32,
    pub raw_max: f32,
    /// Constant map: no visual evidence.
    pub degenerate: bool,
}

/// LLaVA-1.5's conversation format: the image once, in the first user turn;
/// each earlier answer closed by `</s>`.
pub fn conversation_text(turns: &[Turn], prompt: &str) -> String {
    let mut text = String::new();
    for (i, t) in turns.iter().enumerate() {
        text.push_str("USER: ");
        if i == 0 {
            text.push_str(IMAGE_MARKER);
            text.push('\n');
        }
        text.push_str(&format!("{} ASSISTANT: {}</s>", t.user, t.assistant.trim()));
    }
    text.push_str("USER: ");
    if turns.is_empty() {
        text.push_str(IMAGE_MARKER);
        text.push('\n');
    }
    text.push_str(&format!("{prompt} ASSISTANT:"));
    text
}

/// Decodes an image file and encodes it for `ckpt`, with a one-line error.
pub fn load_image(ckpt: &Checkpoint, path: &Path) -> Result<LoadedImage, String> {
    if path.is_dir() {
        return Err(format!(
            "image {}: is a directory, not an image file",
            path.display()
        ));
    }
    let image = dexar_model::load_image(path).map_err(|e| e.to_string())?;
    encode(ckpt, path.display().to_string(), image)
}

/// Encodes a decoded image for `ckpt`.
pub fn encode(
    ckpt: &Checkpoint,
    label: String,
    image: DynamicImage,
) -> Result<LoadedImage, String> {
    let features = dexar_model::encode_image(ckpt, &image)
        .map_err(|e| format!("image {label}: cannot encode it ({e})"))?;
    Ok(LoadedImage {
        view: display_view(ckpt, &image),
        label,
        image,
        features,
    })
}

impl Session {
    /// Built-ins first, then the loaded plugins.
    pub fn strategy_names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN_NAMES.iter().map(|s| s.to_string()).collect();
        names.extend(self.plugins.list().into_iter().map(|p| p.name));
        names
    }

    pub fn strategy_by_name(&self, name: &str) -> Result<Arc<dyn Strategy>, String> {
        builtin_strategy(name, self.settings.topk)
            .map(Arc::from)
            .or_else(|| self.plugins.strategy(name))
            .ok_or_else(|| {
                let names = self.strategy_names();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let hint = crate::strategies::nearest(name, &refs)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                format!("unknown strategy {name}{hint}; /strategy list shows them")
            })
    }

    /// The absolute layers `/layers` currently selects.
    pub fn layers(&self) -> Range<usize> {
        layer_range(
            self.settings.layer_index,
            self.ckpt.config.text.num_hidden_layers,
        )
    }

    /// A trace restricted to the layers `/layers` selects.
    pub fn restricted(&self, trace: &StepTrace) -> StepTrace {
        trace.restricted_to_layers_from(self.layers().start)
    }

    /// DEX-AR's token weight δ_t of a trace under the current layers.
    pub fn token_weight(&self, trace: &StepTrace) -> f32 {
        dexar_core::HeadScores::compute(&self.restricted(trace), self.settings.topk).token_weight()
    }

    fn steps(&self) -> Result<&[StepTrace], String> {
        match &self.answer {
            Some(a) if !a.steps.is_empty() => Ok(&a.steps),
            Some(_) => Err("the last answer has no tokens to show; ask another question".into()),
            None => Err("nothing to show yet: type a question about the image first".into()),
        }
    }

    /// The token indices a selection covers.
    pub fn resolve(&self, what: &Selection) -> Result<Range<usize>, String> {
        let steps = self.steps()?;
        let n = steps.len();
        let last = n - 1;
        let out_of_range = |i: usize| format!("no token {i}: the answer has tokens 0-{last}");
        match what {
            Selection::Token(i) if *i < n => Ok(*i..*i + 1),
            Selection::Token(i) => Err(out_of_range(*i)),
            Selection::Range(a, b) if *b < n => Ok(*a..*b + 1),
            Selection::Range(_, b) => Err(out_of_range(*b)),
            Selection::All => Ok(0..n),
            Selection::Word(w) => {
                let texts: Vec<&str> = steps.iter().map(|s| s.token_text.as_str()).collect();
                find_word(&texts, w)
                    .ok_or_else(|| format!("no \"{w}\" in the answer; /tokens lists its tokens"))
            }
        }
    }

    /// The map of a selection under a strategy: one token's map, or the
    /// strategy's aggregate (weighted by token weight) over several.
    pub fn shown(&self, strategy_name: &str, what: &Selection) -> Result<Shown, String> {
        let strategy = self.strategy_by_name(strategy_name)?;
        let range = self.resolve(what)?;
        let steps = &self.steps()?[range.clone()];
        let maps = steps
            .iter()
            .map(|s| strategy.token_map(&self.restricted(s)))
            .collect::<Result<Vec<TokenMap>, _>>()
            .map_err(|e| crate::error::one_line(&e.to_string()))?;
        let Some(first) = maps.first() else {
            return Err("nothing selected".into());
        };
        let grid = first.grid;
        let (raw, map01, title) = if let [map] = maps.as_slice() {
            let step = &steps[0];
            let title = format!(
                "token {} {:?} δ={:.3}",
                step.step,
                step.token_text,
                self.token_weight(step)
            );
            (map.raw.clone(), map.normalized(), title)
        } else {
            let mut raw = vec![0f32; first.raw.len()];
            for m in &maps {
                for (acc, v) in raw.iter_mut().zip(&m.raw) {
                    *acc += m.weight * v;
                }
            }
            let map01 = strategy
                .sentence_map(&maps)
                .map_err(|e| crate::error::one_line(&e.to_string()))?;
            let text: String = steps.iter().map(|s| s.token_text.as_str()).collect();
            let title = if matches!(what, Selection::All) {
                format!(
                    "whole answer (tokens 0-{}, weighted by token weight)",
                    range.end - 1
                )
            } else {
                format!("tokens {}-{} {:?}", range.start, range.end - 1, text.trim())
            };
            (raw, map01, title)
        };
        if map01.len() != grid.len() {
            return Err(format!(
                "strategy {strategy_name} returned {} values for a {}x{} grid",
                map01.len(),
                grid.height,
                grid.width
            ));
        }
        let (lo, hi) = raw
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let degenerate = minmax(&map01).1 || minmax(&raw).1;
        Ok(Shown {
            strategy: strategy.name().to_string(),
            title,
            map01,
            grid,
            raw_min: lo,
            raw_max: hi,
            degenerate,
        })
    }
}

/// The tokens covering the first occurrence of `word` in the concatenated
/// token texts (ASCII case ignored), preferring whole-word matches.
pub fn find_word(texts: &[&str], word: &str) -> Option<Range<usize>> {
    let answer: String = texts.concat().to_ascii_lowercase();
    let needle = word.trim().to_ascii_lowercase();
    if needle.is_empty() {
        return None;
    }
    let is_word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let occurrences: Vec<usize> = answer.match_indices(&needle).map(|(i, _)| i).collect();
    let whole = occurrences.iter().copied().find(|&i| {
        !is_word_char(answer[..i].chars().next_back())
            && !is_word_char(answer[i + needle.len()..].chars().next())
    });
    let start = whole.or_else(|| occurrences.first().copied())?;
    let end = start + needle.len();
    let mut offset = 0;
    let mut first = None;
    let mut last = None;
    for (t, text) in texts.iter().enumerate() {
        let (a, b) = (offset, offset + text.len());
        if a < end && b > start {
            first.get_or_insert(t);
            last = Some(t);
        }
        offset = b;
    }
    Some(first?..last? + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_follows_llava_template() {
        assert_eq!(
            conversation_text(&[], "What is it?"),
            "USER: <image>\nWhat is it? ASSISTANT:"
        );
        let turns = vec![
            Turn {
                user: "p1".into(),
                assistant: " a1 ".into(),
            },
            Turn {
                user: "p2".into(),
                assistant: "a2".into(),
            },
        ];
        assert_eq!(
            conversation_text(&turns, "p3"),
            "USER: <image>\np1 ASSISTANT: a1</s>USER: p2 ASSISTANT: a2</s>USER: p3 ASSISTANT:"
        );
        assert_eq!(
            conversation_text(&turns, "p3").matches("<image>").count(),
            1
        );
    }

    #[test]
    fn words_map_to_the_tokens_covering_them() {
        let texts = ["A", " red", " suit", "case", " and", " a", " case", "."];
        assert_eq!(find_word(&texts, "red"), Some(1..2));
        assert_eq!(find_word(&texts, "SUITCASE"), Some(2..4));
        // "case" alone is a whole word later on; prefer it to the inner match.
        assert_eq!(find_word(&texts, "case"), Some(6..7));
        assert_eq!(find_word(&texts, "red suit"), Some(1..3));
        assert_eq!(find_word(&texts, "a"), Some(0..1));
        assert_eq!(find_word(&texts, "uitc"), Some(2..4));
        assert_eq!(find_word(&texts, "blue"), None);
        assert_eq!(find_word(&texts, " "), None);
    }
}
