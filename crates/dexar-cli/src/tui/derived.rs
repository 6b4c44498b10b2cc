//! What the screen shows that takes work to compute (token weights, maps,
//! head scores, encoded pictures), kept until its inputs change so that a
//! redraw costs nothing.

use std::collections::HashMap;

use dexar_core::{HeadScores, LayerSelection, StepTrace};
use dexar_render::term::{CellPixels, CellSize, TermImage, Terminal};
use dexar_render::{overlay_beside, Colormap};
use dexar_session::{AppState, Selection, Shown};

use super::app::App;

/// Which map: one token's, the whole answer's, or one head's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum What {
    Token(usize),
    Sentence,
    /// (token, layer slot within the selected layers, head).
    Head(usize, usize, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapKey {
    pub what: What,
    pub strategy: String,
    pub layers: LayerSelection,
    /// Which maps of an image split into tiles (SmolVLM).
    pub region: dexar_core::RegionView,
    /// Tokens so far (the sentence map grows while an answer streams).
    pub steps: usize,
}

/// Opacity of the heatmap over the image.
const ALPHA: f32 = 0.6;
/// Most entries kept per cache before it starts over.
const KEEP: usize = 64;

pub struct Derived {
    pub terminal: Terminal,
    /// Which answer the caches belong to.
    answer: u64,
    weights_for: Option<(LayerSelection, usize)>,
    weights: Vec<f32>,
    maps: HashMap<MapKey, Result<Shown, String>>,
    heads: HashMap<(usize, LayerSelection), HeadScores>,
    pictures: HashMap<(MapKey, CellSize), TermImage>,
}

impl Derived {
    pub fn new(terminal: Terminal) -> Self {
        Self {
            terminal,
            answer: 0,
            weights_for: None,
            weights: Vec::new(),
            maps: HashMap::new(),
            heads: HashMap::new(),
            pictures: HashMap::new(),
        }
    }

    /// Forgets everything computed for an earlier answer (or earlier plugins).
    pub fn sync(&mut self, answer: u64) {
        if answer != self.answer {
            self.answer = answer;
            self.weights_for = None;
            self.weights.clear();
            self.maps.clear();
            self.heads.clear();
            self.pictures.clear();
        }
    }

    /// The cell size pictures are encoded for.
    pub fn cell(&self) -> CellPixels {
        self.terminal
            .cell
            .unwrap_or_else(crate::repl::window_cell_pixels)
    }

    /// DEX-AR's token weight δ of every step, under the app's layers.
    pub fn weights(&mut self, state: &AppState, app: &App, steps: &[StepTrace]) -> &[f32] {
        let key = (app.layers, state.settings.topk);
        if self.weights_for != Some(key) {
            self.weights_for = Some(key);
            self.weights.clear();
        }
        self.weights.truncate(steps.len());
        let n = state.num_layers();
        for step in &steps[self.weights.len()..] {
            // A malformed trace (its map says why) counts as no evidence.
            let w = match step.validate() {
                Ok(()) => {
                    let restricted = app.layers.restrict(step, n);
                    HeadScores::compute(&restricted, state.settings.topk).token_weight()
                }
                Err(_) => 0.0,
            };
            self.weights.push(w);
        }
        &self.weights
    }

    /// The head scores of token `t` under the app's layers.
    pub fn heads(
        &mut self,
        state: &AppState,
        app: &App,
        steps: &[StepTrace],
        t: usize,
    ) -> Option<&HeadScores> {
        let step = steps.get(t).filter(|s| s.validate().is_ok())?;
        let key = (t, app.layers);
        if !self.heads.contains_key(&key) {
            if self.heads.len() > KEEP {
                self.heads.clear();
            }
            let restricted = app.layers.restrict(step, state.num_layers());
            let scores = HeadScores::compute(&restricted, state.settings.topk);
            self.heads.insert(key, scores);
        }
        self.heads.get(&key)
    }

    /// The map `key` names, or why there is none (a failing plugin says so
    /// here, for this token only).
    pub fn map(
        &mut self,
        state: &AppState,
        steps: &[StepTrace],
        key: &MapKey,
    ) -> Result<Shown, String> {
        if let Some(found) = self.maps.get(key) {
            return found.clone();
        }
        let shown = compute(state, steps, key);
        if self.maps.len() > KEEP {
            self.maps.clear();
        }
        self.maps.insert(key.clone(), shown.clone());
        shown
    }

    /// The picture of `shown` over the image, encoded for `cells`.
    pub fn picture(
        &mut self,
        view: &image::RgbImage,
        key: &MapKey,
        shown: &Shown,
        cells: CellSize,
    ) -> Option<&TermImage> {
        let cache_key = (key.clone(), cells);
        if !self.pictures.contains_key(&cache_key) {
            let alpha = if self.terminal.graphics == dexar_render::term::Graphics::Ascii {
                1.0
            } else {
                ALPHA
            };
            let beside = shown.beside.as_ref().map(|(g, m)| (*g, m.as_slice()));
            let img = overlay_beside(
                view,
                &shown.map01,
                shown.grid,
                beside,
                Colormap::Inferno,
                alpha,
            )
            .ok()?;
            if self.pictures.len() > KEEP / 4 {
                self.pictures.clear();
            }
            let t = &self.terminal;
            let picture = TermImage::new(&img, t.graphics, cells, self.cell(), t.tmux);
            self.pictures.insert(cache_key.clone(), picture);
        }
        self.pictures.get(&cache_key)
    }
}

fn compute(state: &AppState, steps: &[StepTrace], key: &MapKey) -> Result<Shown, String> {
    let what = match &key.what {
        What::Token(t) => Selection::Token(*t),
        What::Sentence => Selection::All,
        What::Head(t, slot, head) => {
            let step = steps
                .get(*t)
                .ok_or_else(|| format!("no token {t} in this answer"))?;
            step.validate().map_err(|e| e.to_string())?;
            let restricted = key.layers.restrict(step, state.num_layers());
            return Shown::head(&restricted, *slot, *head, state.settings.topk)
                .map_err(|e| e.to_string());
        }
    };
    state
        .shown_in(steps, &key.strategy, &what, key.layers, key.region)
        .map_err(|e| e.to_string())
}
