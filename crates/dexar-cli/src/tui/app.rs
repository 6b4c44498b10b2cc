//! The TUI's own state: what the user is looking at and how (selected
//! token, strategy, layers, compare, heads, input), kept apart from the
//! conversation itself, which is dexar-session's [`AppState`]. Everything
//! here is plain data; [`super::update`] changes it, [`super::draw`] reads it.

use std::time::{Duration, Instant};

use dexar_core::{LayerSelection, StepTrace};
use dexar_model::StopReason;
use dexar_session::{AppState, Probe};

/// Where keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Tokens, layers, strategies: the default.
    Answer,
    /// The layers x heads grid: arrows move between heads.
    Heads,
    /// Typing a question.
    Input,
}

/// An answer being generated: its question and the steps so far.
pub struct Live {
    pub question: String,
    pub steps: Vec<StepTrace>,
    pub started: Instant,
    /// Ctrl-C was pressed: the answer stops after the token in flight.
    pub stopping: bool,
}

/// How the last answer went, for the status line.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub tokens: usize,
    pub elapsed: Duration,
    pub stop: Option<StopReason>,
}

/// Something only the event loop can do (it owns the terminal, the model
/// and the worker thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer this question.
    Ask(String),
    /// Stop the answer being generated.
    Stop,
    /// Probe the token shown with the map shown.
    Probe,
    Quit,
}

/// Where the last frame put the answer's tokens, for the mouse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Screen {
    /// (token, x, y, width) of every token piece on screen.
    pub tokens: Vec<(usize, u16, u16, u16)>,
}

impl Screen {
    /// The token drawn at cell (x, y), if any.
    pub fn token_at(&self, x: u16, y: u16) -> Option<usize> {
        self.tokens
            .iter()
            .find(|(_, tx, ty, w)| *ty == y && x >= *tx && x < tx + w)
            .map(|(t, ..)| *t)
    }
}

pub struct App {
    /// The layers the maps use; written back to the state when idle.
    pub layers: LayerSelection,
    /// The strategy maps are shown with; written back likewise.
    pub strategy: String,
    /// Which maps of an image split into tiles are shown; written back likewise.
    pub region: dexar_core::RegionView,
    /// Every strategy name, built-ins first (Tab cycles through them).
    pub strategies: Vec<String>,
    /// The token picked by the user; `None` follows the newest token.
    pub selected: Option<usize>,
    /// Show the sentence map (the whole answer) instead of one token's.
    pub sentence: bool,
    /// The second strategy shown side by side.
    pub compare: Option<String>,
    pub focus: Focus,
    /// The head under the cursor of the heads panel: (layer slot, head).
    pub head: (usize, usize),
    pub input: String,
    pub help: bool,
    /// The last probe's result, or why it failed.
    pub probe: Option<Result<Probe, String>>,
    /// A one-line message (a mistake, an error, a note).
    pub message: Option<String>,
    pub live: Option<Live>,
    pub finished: Option<Finished>,
    pub screen: Screen,
    /// Counts answers, so what was computed for one is not shown for another.
    pub answer_id: u64,
    /// The model's decoder layers and heads (to move in the heads grid).
    pub num_layers: usize,
    pub num_heads: usize,
}

impl App {
    /// Looking at `state` as the REPL left it: its strategy, layers and
    /// last answer.
    pub fn new(state: &AppState) -> Self {
        let id = &state.identity;
        Self {
            layers: state.settings.layers,
            strategy: state.strategy.clone(),
            region: state.settings.region,
            strategies: state.strategy_names(),
            selected: None,
            sentence: false,
            compare: None,
            focus: Focus::Answer,
            head: (0, 0),
            input: String::new(),
            help: false,
            probe: None,
            message: None,
            live: None,
            finished: state.answer.as_ref().map(|a| Finished {
                tokens: a.steps.len(),
                elapsed: a.elapsed,
                stop: a.stop,
            }),
            screen: Screen::default(),
            answer_id: 0,
            num_layers: id.num_layers,
            num_heads: id.num_heads,
        }
    }

    /// The steps on screen: the answer streaming now, else the last one.
    pub fn steps<'a>(&'a self, state: &'a AppState) -> &'a [StepTrace] {
        match (&self.live, &state.answer) {
            (Some(live), _) => &live.steps,
            (None, Some(a)) => &a.steps,
            (None, None) => &[],
        }
    }

    /// The token shown: the selected one, else the newest.
    pub fn token(&self, steps: usize) -> Option<usize> {
        let last = steps.checked_sub(1)?;
        Some(self.selected.map_or(last, |s| s.min(last)))
    }

    /// The layers of the maps, absolute.
    pub fn layer_range(&self) -> std::ops::Range<usize> {
        self.layers.layers(self.num_layers)
    }

    /// Whether the map shown is one head's (the heads panel has focus).
    pub fn showing_head(&self) -> bool {
        self.focus == Focus::Heads && !self.sentence
    }

    /// The strategy after `name` in the list, wrapping around.
    pub fn next_strategy(&self, name: &str) -> String {
        let i = self.strategies.iter().position(|s| s == name);
        let next = i.map_or(0, |i| (i + 1) % self.strategies.len().max(1));
        self.strategies
            .get(next)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}
