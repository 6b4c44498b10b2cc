//! [`AppState`]: the model, the image, the conversation, the last answer
//! with its traces over every layer, the settings and the strategies; and
//! the operations a front end performs on them. Maps are computed on demand
//! from the kept traces, so changing the layers or the strategy re-explains
//! the answer without regenerating it. The model is optional: a state
//! opened from a session file without its model shows and re-explains the
//! recorded answers (see [`files`]). A [`Recorder`] given to the state
//! appends every turn to a session file as it streams.

mod files;

use dexar_core::{HeadScores, LayerSelection, RegionView, StepTrace, Strategy};
use dexar_model::{
    GenerationSettings, LoadOptions, Mode, ModelSpec, PreparedPrompt, StopReason, Turn,
};
use dexar_plugin::host::PluginRegistry;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::StateError;
use crate::generation::{self, Outcome};
use crate::image::LoadedImage;
use crate::model::{open_model, LoadedModel, ModelIdentity};
use crate::recorder::Recorder;
use crate::records::{EndRecord, TurnRecord, TurnSettings};
use crate::selection::Selection;
use crate::shown::Shown;

/// Which decoder layers an answer traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceLayers {
    /// Every layer for models of at most [`TraceLayers::AUTO_ALL_MAX`]
    /// layer-heads (layers x heads), the maps' layers for larger ones.
    #[default]
    Auto,
    /// The layers the maps use: cheaper, but maps of other layers need the
    /// answer traced again.
    Range,
    /// Every layer: `/layers` changes the maps without tracing again.
    All,
}

impl TraceLayers {
    /// Up to this many layer-heads, `auto` traces every layer. Each traced
    /// layer-head costs 8 bytes per position per token (gradients and
    /// probabilities in f32) and one local backward per layer: a 8x1024
    /// model (128 layer-heads) traces all its layers for about 0.6 MB per
    /// token at 600 positions; LLaVA-1.5-7B (32 x 32 = 1024) would need
    /// about 5 MB per token and 1.75x the time of a plain step instead of
    /// about 1.2x for its last ten layers (docs/bench.md).
    pub const AUTO_ALL_MAX: usize = 256;

    /// Whether every layer of a model of `layers` x `heads` is traced.
    pub fn traces_all(self, layers: usize, heads: usize) -> bool {
        match self {
            Self::All => true,
            Self::Range => false,
            Self::Auto => layers * heads <= Self::AUTO_ALL_MAX,
        }
    }
}

impl std::str::FromStr for TraceLayers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "range" => Ok(Self::Range),
            "all" => Ok(Self::All),
            other => Err(format!("`{other}`: expected auto, range or all")),
        }
    }
}

/// Decoding and explanation settings a user changes while exploring.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// The layers the maps use (among the traced ones, see `trace_layers`).
    pub layers: LayerSelection,
    /// k of DEX-AR's top-k head scores.
    pub topk: usize,
    /// Which maps an image split into regions shows (SmolVLM): the tiles
    /// composed, the global view, or both side by side.
    pub region: RegionView,
    /// Which layers answers trace.
    pub trace_layers: TraceLayers,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            layers: LayerSelection::default(),
            topk: 1,
            region: RegionView::All,
            trace_layers: TraceLayers::default(),
        }
    }
}

/// The last answer, kept with the traces of every layer.
pub struct Answer {
    /// What was asked, as a session file records it.
    pub turn: TurnRecord,
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

/// A question ready to be answered: the prepared prompt, how to generate,
/// and what to remember afterwards.
pub struct Ask {
    pub question: String,
    /// `Some` when a given answer is explained by teacher forcing; it then
    /// replaces the last turn.
    pub target: Option<String>,
    pub prompt: PreparedPrompt,
    pub mode: Mode,
    pub settings: GenerationSettings,
}

/// What [`AppState::record`] kept of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub tokens: usize,
    pub stop: Option<StopReason>,
    /// Why generation failed, also when some tokens came before.
    pub failure: Option<String>,
}

/// The heatmap grid of an image just encoded for a model.
fn encoded_grid(image: &LoadedImage) -> dexar_core::Grid {
    image.grid.unwrap_or(dexar_core::Grid::new(0, 0))
}

/// The state every front end drives.
pub struct AppState {
    /// `None` when a session was opened without its model.
    pub model: Option<LoadedModel>,
    /// The model the traces come from (loaded or not).
    pub identity: ModelIdentity,
    /// How models are loaded (`switch_model`).
    pub load_options: LoadOptions,
    pub image: LoadedImage,
    /// Finished turns; the last one is the one `answer` belongs to.
    pub turns: Vec<Turn>,
    pub answer: Option<Answer>,
    pub settings: Settings,
    /// The strategy maps are shown with.
    pub strategy: String,
    pub plugins: PluginRegistry,
    recorder: Mutex<Option<Recorder>>,
    /// The current answer is in the recorder's file.
    answer_recorded: bool,
}

impl AppState {
    /// A new conversation about `image` with `model`.
    pub fn new(
        model: LoadedModel,
        image: LoadedImage,
        settings: Settings,
        plugins: PluginRegistry,
    ) -> Self {
        Self {
            identity: model.identity(encoded_grid(&image)),
            load_options: model.opts.clone(),
            model: Some(model),
            image,
            turns: Vec::new(),
            answer: None,
            settings,
            strategy: "dexar".into(),
            plugins,
            recorder: Mutex::new(None),
            answer_recorded: false,
        }
    }

    /// The loaded model, or why there is none.
    pub fn model(&self) -> Result<&LoadedModel, StateError> {
        self.model.as_ref().ok_or(StateError::NoModel)
    }

    /// Decoder layers of the model the traces come from.
    pub fn num_layers(&self) -> usize {
        self.identity.num_layers
    }

    fn recorder(&self) -> MutexGuard<'_, Option<Recorder>> {
        // A panic while recording cannot leave the recorder half-updated in
        // a way that matters: it only appends whole records.
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records every turn from now on with `recorder` (`None`: stop).
    pub fn set_recorder(&mut self, recorder: Option<Recorder>) {
        *self.recorder() = recorder;
    }

    /// The session file being recorded, if any.
    pub fn recording_path(&self) -> Option<std::path::PathBuf> {
        self.recorder()
            .as_ref()
            .filter(|r| r.is_recording())
            .map(|r| r.path().to_path_buf())
    }

    /// Recording warnings not yet shown (one line each).
    pub fn take_warnings(&self) -> Vec<String> {
        self.recorder()
            .as_mut()
            .map(Recorder::take_warnings)
            .unwrap_or_default()
    }

    /// Built-ins first, then the loaded plugins.
    pub fn strategy_names(&self) -> Vec<String> {
        crate::strategies::names(&self.plugins)
    }

    pub fn strategy_by_name(&self, name: &str) -> Result<Arc<dyn Strategy>, StateError> {
        crate::strategies::find(name, self.settings.topk, &self.plugins)
    }

    /// Makes `name` the strategy maps are shown with.
    pub fn use_strategy(&mut self, name: &str) -> Result<String, StateError> {
        let s = self.strategy_by_name(name)?;
        self.strategy = s.name().to_string();
        Ok(self.strategy.clone())
    }

    /// The absolute layers the maps use.
    pub fn layers(&self) -> Range<usize> {
        self.settings.layers.layers(self.num_layers())
    }

    /// The layers the next answer traces: every layer, or the maps' layers
    /// (see [`TraceLayers`]).
    pub fn layers_to_trace(&self) -> Range<usize> {
        let n = self.num_layers();
        match self
            .settings
            .trace_layers
            .traces_all(n, self.identity.num_heads)
        {
            true => LayerSelection::all().layers(n),
            false => self.layers(),
        }
    }

    /// When the last answer's traces lack some of the layers the maps use:
    /// the layers it traced.
    pub fn untraced_layers_note(&self) -> Option<Range<usize>> {
        let [start, end] = self.answer.as_ref()?.turn.settings.traced_layers;
        let want = self.layers();
        (want.start < start || want.end > end).then_some(start..end)
    }

    /// A trace restricted to the layers the maps use.
    pub fn restricted(&self, trace: &StepTrace) -> StepTrace {
        self.settings.layers.restrict(trace, self.num_layers())
    }

    /// DEX-AR's token weight δ_t of a trace under the current layers.
    pub fn token_weight(&self, trace: &StepTrace) -> f32 {
        HeadScores::compute(&self.restricted(trace), self.settings.topk).token_weight()
    }

    fn steps(&self) -> Result<&[StepTrace], StateError> {
        match &self.answer {
            Some(a) if !a.steps.is_empty() => Ok(&a.steps),
            Some(_) => Err(StateError::EmptyAnswer),
            None => Err(StateError::NothingToShow),
        }
    }

    /// The token indices a selection covers in the last answer.
    pub fn resolve(&self, what: &Selection) -> Result<Range<usize>, StateError> {
        what.resolve(self.steps()?)
    }

    /// The map of a selection under a strategy: one token's map, or the
    /// strategy's aggregate (weighted by token weight) over several.
    pub fn shown(&self, strategy_name: &str, what: &Selection) -> Result<Shown, StateError> {
        let s = &self.settings;
        self.shown_in(self.steps()?, strategy_name, what, s.layers, s.region)
    }

    /// [`AppState::shown`] over `steps` (an answer still streaming, say)
    /// with the maps made of `layers`.
    pub fn shown_in(
        &self,
        steps: &[StepTrace],
        strategy_name: &str,
        what: &Selection,
        layers: LayerSelection,
        region: RegionView,
    ) -> Result<Shown, StateError> {
        let strategy = self.strategy_by_name(strategy_name)?;
        let range = what.resolve(steps)?;
        let num_layers = self.num_layers();
        let steps = steps[range.clone()]
            .iter()
            .map(|s| {
                // Restricting slices the buffers: check them first.
                s.validate().map_err(StateError::strategy)?;
                Ok(layers.restrict(s, num_layers))
            })
            .collect::<Result<Vec<StepTrace>, StateError>>()?;
        Shown::compute(
            strategy.as_ref(),
            &steps,
            range,
            matches!(what, Selection::All),
            self.settings.topk,
            region,
        )
    }

    /// Whether the image is split into regions (SmolVLM's tiles and global
    /// view), as the model encoded it or, without a model, as the last
    /// answer's traces say.
    pub fn image_is_split(&self) -> bool {
        match self.image.features() {
            Ok(f) => f.layout.len() > 1,
            Err(_) => self
                .answer
                .as_ref()
                .and_then(|a| a.steps.first())
                .is_some_and(StepTrace::is_multi_region),
        }
    }

    /// Prepares `question` for answering (or, with `target`, for explaining
    /// that answer to the last question): the conversation so far in the
    /// model's chat template, tokenised with the image expanded. The layers
    /// of [`AppState::layers_to_trace`] are traced; the layer selection
    /// picks among them afterwards.
    pub fn prepare_ask(&self, question: &str, target: Option<&str>) -> Result<Ask, StateError> {
        if question.contains(dexar_model::IMAGE_MARKER) {
            return Err(StateError::ImageInPrompt);
        }
        let earlier = match target {
            Some(_) => &self.turns[..self.turns.len().saturating_sub(1)],
            None => &self.turns[..],
        };
        let ckpt = &self.model()?.ckpt;
        let prompt = ckpt.prepare_chat(earlier, question, self.image.features()?)?;
        let mode = match target {
            None => Mode::Generate,
            Some(t) => match ckpt.tokenizer.encode(t, false)? {
                ids if ids.is_empty() => return Err(StateError::EmptyTarget),
                ids => Mode::TeacherForced(ids),
            },
        };
        let s = &self.settings;
        Ok(Ask {
            question: question.to_string(),
            target: target.map(str::to_string),
            prompt,
            mode,
            settings: GenerationSettings {
                max_tokens: s.max_tokens,
                temperature: s.temperature,
                top_p: s.top_p,
                seed: s.seed,
                layers: self.layers_to_trace(),
            },
        })
    }

    /// The prompt the last answer was the answer to: the conversation
    /// before the last turn, and its question.
    pub fn last_prompt(&self) -> Result<PreparedPrompt, StateError> {
        let (last, earlier) = self.turns.split_last().ok_or(StateError::NoQuestion)?;
        Ok(self
            .model()?
            .ckpt
            .prepare_chat(earlier, &last.user, self.image.features()?)?)
    }

    /// Teacher-forces `answer` as the answer to the last question.
    pub fn prepare_target(&self, answer: &str) -> Result<Ask, StateError> {
        let last = self.turns.last().ok_or(StateError::NoQuestion)?;
        self.prepare_ask(&last.user, Some(answer))
    }

    /// The turn record of `ask` under the current settings.
    fn turn_record(&self, ask: &Ask) -> TurnRecord {
        let s = &self.settings;
        TurnRecord {
            turn: 0,
            question: ask.question.clone(),
            target: ask.target.clone(),
            prompt: ask.prompt.text.clone(),
            input_ids: ask.prompt.input_ids.clone(),
            image_span: [ask.prompt.image_span().0, ask.prompt.image_span().1],
            settings: TurnSettings {
                max_tokens: ask.settings.max_tokens,
                temperature: ask.settings.temperature,
                top_p: ask.settings.top_p,
                seed: ask.settings.seed,
                traced_layers: [ask.settings.layers.start, ask.settings.layers.end],
                layer_index: s.layers.layer_index,
                topk: s.topk,
                strategy: self.strategy.clone(),
            },
        }
    }

    /// Answers `ask` on a worker thread, calling `on_step` for each token as
    /// it comes; `cancel` stops it after the token in flight. A recorder
    /// gets the turn before the first token and each token as it comes.
    pub fn stream(
        &self,
        ask: &Ask,
        cancel: &AtomicBool,
        on_step: &mut dyn FnMut(&StepTrace),
    ) -> Outcome {
        let (model, features) = match (self.model(), self.image.features()) {
            (Ok(m), Ok(f)) => (m, f),
            (Err(e), _) | (_, Err(e)) => {
                return Outcome {
                    steps: Vec::new(),
                    result: Err(e.to_string()),
                    elapsed: Duration::ZERO,
                }
            }
        };
        self.begin_recorded_turn(ask);
        generation::generate(
            &model.ckpt,
            &ask.prompt,
            features,
            &ask.settings,
            &ask.mode,
            cancel,
            &mut |trace| {
                if let Some(r) = self.recorder().as_mut() {
                    r.token(trace);
                }
                on_step(trace)
            },
        )
    }

    /// Keeps what an answer produced: a new turn (or, for a target, the last
    /// turn replaced) and the answer's traces. An answer with no token
    /// changes nothing, so the previous answer stays current.
    pub fn record(&mut self, ask: Ask, outcome: Outcome) -> Recorded {
        let stop = outcome.result.as_ref().ok().map(|g| g.stop);
        let failure = outcome.result.err();
        let tokens = outcome.steps.len();
        let mut recorded = false;
        if let Some(r) = self.recorder().as_mut() {
            recorded = r.is_recording();
            r.end_turn(EndRecord {
                turn: 0,
                stop: stop.map(|s| s.to_string()),
                failure: failure.clone(),
                tokens,
                elapsed_ms: outcome.elapsed.as_millis() as u64,
            });
        }
        if tokens > 0 {
            let answer = Answer {
                turn: self.turn_record(&ask),
                steps: outcome.steps,
                stop,
                teacher_forced: ask.target.is_some(),
                elapsed: outcome.elapsed,
            };
            if ask.target.is_some() {
                self.turns.pop();
            }
            self.turns.push(Turn {
                user: ask.question,
                assistant: answer.text(),
            });
            self.answer = Some(answer);
            self.answer_recorded = recorded;
        }
        Recorded {
            tokens,
            stop,
            failure,
        }
    }

    /// Forgets the conversation; the image and the settings stay.
    pub fn clear(&mut self) {
        self.turns.clear();
        self.answer = None;
        if let Some(r) = self.recorder().as_mut() {
            r.new_conversation();
        }
    }

    /// Opens another image; a new conversation starts.
    pub fn set_image(&mut self, image: LoadedImage) {
        if let Some(g) = image.grid {
            self.identity.grid = [g.height, g.width];
        }
        self.image = image;
        self.clear();
    }

    /// Loads another model and encodes the image for it; a new conversation
    /// starts. The current model stays if the new one fails.
    pub fn switch_model(&mut self, spec: &ModelSpec) -> Result<(), StateError> {
        let model = open_model(spec, &self.load_options)?;
        let image = self.image.reencode(&model.ckpt)?;
        self.identity = model.identity(encoded_grid(&image));
        self.model = Some(model);
        self.image = image;
        if let Some(r) = self.recorder().as_mut() {
            r.switch_model(&self.identity);
        }
        self.clear();
        Ok(())
    }

    /// Unloads a plugin; if maps were shown with it, DEX-AR takes over
    /// (`true` then).
    pub fn unload_plugin(&mut self, name: &str) -> Result<bool, StateError> {
        self.plugins
            .unload(name)
            .map_err(|e| StateError::Plugin(e.to_string()))?;
        let reset = self.strategy == name;
        if reset {
            self.strategy = "dexar".into();
        }
        Ok(reset)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dexar_model::LoadOptions;

    pub(crate) fn state() -> AppState {
        let model = open_model(&ModelSpec::Bundled, &LoadOptions::default()).unwrap();
        let image = LoadedImage::bundled_default(&model.ckpt).unwrap();
        let settings = Settings {
            max_tokens: 6,
            ..Settings::default()
        };
        AppState::new(model, image, settings, PluginRegistry::default())
    }

    pub(crate) fn answer(s: &mut AppState, question: &str, target: Option<&str>) -> Recorded {
        let ask = match target {
            Some(t) => s.prepare_target(t).unwrap(),
            None => s.prepare_ask(question, None).unwrap(),
        };
        let mut streamed = 0;
        let outcome = s.stream(&ask, &AtomicBool::new(false), &mut |_| streamed += 1);
        assert_eq!(streamed, outcome.steps.len());
        s.record(ask, outcome)
    }

    #[test]
    fn turns_accumulate_and_a_target_replaces_the_last() {
        let mut s = state();
        assert!(matches!(s.prepare_target("x"), Err(StateError::NoQuestion)));
        let r = answer(&mut s, "describe the image", None);
        assert!(r.tokens > 0 && r.failure.is_none(), "{r:?}");
        assert_eq!(s.turns.len(), 1);
        assert_eq!(s.turns[0].assistant, s.answer.as_ref().unwrap().text());
        answer(&mut s, "how many shapes ?", None);
        assert_eq!(s.turns.len(), 2);
        // The second prompt carries the first exchange.
        let ask = s.prepare_ask("what color is the circle ?", None).unwrap();
        assert!(
            ask.prompt.text.contains("describe the image"),
            "{}",
            ask.prompt.text
        );
        let r = answer(&mut s, "", Some("a red circle"));
        assert_eq!(r.stop, Some(StopReason::TargetEnd));
        assert_eq!(s.turns.len(), 2);
        assert_eq!(s.turns[1].user, "how many shapes ?");
        assert_eq!(s.turns[1].assistant, "a red circle");
        assert!(s.answer.as_ref().unwrap().teacher_forced);
        s.clear();
        assert!(s.turns.is_empty() && s.answer.is_none());
    }

    #[test]
    fn traced_layers_follow_the_setting() {
        assert_eq!("range".parse(), Ok(TraceLayers::Range));
        assert!("some"
            .parse::<TraceLayers>()
            .unwrap_err()
            .contains("auto, range or all"));
        // 32 x 32 layer-heads (LLaVA-1.5-7B) trace the maps' range under auto.
        assert!(!TraceLayers::Auto.traces_all(32, 32));
        assert!(TraceLayers::Auto.traces_all(8, 16));
        let mut s = state();
        s.settings.layers = LayerSelection::new(-1);
        // The bundled model (3 layers x 4 heads): auto traces every layer.
        assert_eq!(s.layers_to_trace(), 0..3);
        s.settings.trace_layers = TraceLayers::Range;
        assert_eq!(s.layers_to_trace(), 2..3);
        answer(&mut s, "describe the image", None);
        let steps = &s.answer.as_ref().unwrap().steps;
        assert!(steps.iter().all(|t| t.layers == [2]));
        assert_eq!(s.untraced_layers_note(), None);
        s.settings.layers = LayerSelection::new(0);
        assert_eq!(s.untraced_layers_note(), Some(2..3));
        // The maps use the traced layers among those asked for.
        assert!(s.shown("dexar", &Selection::Token(0)).is_ok());
        s.settings.trace_layers = TraceLayers::All;
        answer(&mut s, "describe the image", None);
        assert_eq!(s.untraced_layers_note(), None);
    }

    #[test]
    fn maps_follow_the_layers_and_strategy_without_regenerating() {
        let mut s = state();
        assert!(matches!(
            s.shown("dexar", &Selection::All),
            Err(StateError::NothingToShow)
        ));
        answer(&mut s, "describe the image", None);
        let n = s.answer.as_ref().unwrap().steps.len();
        let all = s.shown("dexar", &Selection::Token(1)).unwrap();
        assert_eq!(all.map01.len(), s.image.features().unwrap().grid.len());
        s.settings.layers = LayerSelection::new(-1);
        assert_eq!(s.layers(), 2..3);
        let last = s.shown("dexar", &Selection::Token(1)).unwrap();
        assert_ne!(all.map01, last.map01);
        assert_eq!(s.answer.as_ref().unwrap().steps.len(), n);
        let whole = s.shown("raw-attention", &Selection::All).unwrap();
        assert!(whole.title.starts_with("whole answer"), "{}", whole.title);
        assert!(matches!(
            s.shown("dexar", &Selection::Token(n)),
            Err(StateError::NoToken { .. })
        ));
        assert!(matches!(
            s.shown("nope", &Selection::All),
            Err(StateError::UnknownStrategy { .. })
        ));
        assert_eq!(s.use_strategy("grad-x-attn").unwrap(), "grad-x-attn");
        assert!(matches!(
            s.prepare_ask("where is the <image>", None),
            Err(StateError::ImageInPrompt)
        ));
    }
}
