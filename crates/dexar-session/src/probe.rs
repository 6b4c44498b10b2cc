//! The probe: the faithfulness check of one heatmap, interactively. The
//! patches a token's map ranks highest are removed from the image (set to
//! the image mean, as `dexar eval`'s perturbation test does) and the answer
//! is scored again by teacher forcing: if the map shows what the model used,
//! the token's probability falls and the answer's perplexity rises, more
//! than when as many random patches are removed.

use dexar_core::metrics::{self, Order};
use dexar_model::{answer_logprobs, masked_answer_logprobs};

use crate::error::StateError;
use crate::state::AppState;

/// The fractions of the map's patches a probe removes.
pub const PROBE_FRACTIONS: [f32; 3] = [0.1, 0.2, 0.5];

/// The answer scored by teacher forcing under one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescored {
    /// Probability of the probed token.
    pub token_prob: f64,
    /// Perplexity of the whole answer.
    pub perplexity: f64,
}

/// One removal fraction: the map's top patches, and as many random ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeRow {
    pub fraction: f32,
    /// Patches removed (both ways).
    pub cells: usize,
    pub by_map: Rescored,
    pub random: Rescored,
}

/// What removing a map's top patches does to one token and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub token: usize,
    pub token_text: String,
    /// What the map was (a strategy, or one head).
    pub map_label: String,
    /// The untouched image.
    pub original: Rescored,
    pub rows: Vec<ProbeRow>,
    /// Seed of the random removal order.
    pub seed: u64,
}

impl AppState {
    /// Probes `token` of the last answer with its map under `strategy`
    /// (the current layers).
    pub fn probe(&self, token: usize, strategy: &str) -> Result<Probe, StateError> {
        let shown = self.shown(strategy, &crate::Selection::Token(token))?;
        self.probe_map(token, &shown.map01, &shown.strategy)
    }

    /// Probes `token` of the last answer with any map over the patch grid
    /// (`map_label` names it). Costs two forward passes and an image
    /// encoding per fraction, plus one pass for the untouched image.
    pub fn probe_map(
        &self,
        token: usize,
        map: &[f32],
        map_label: &str,
    ) -> Result<Probe, StateError> {
        let answer = self.answer.as_ref().ok_or(StateError::NothingToShow)?;
        let step = crate::Selection::Token(token)
            .resolve(&answer.steps)
            .map(|r| &answer.steps[r.start])?;
        let ckpt = &self.model()?.ckpt;
        let features = self.image.features()?;
        let grid = features.grid;
        if map.len() != grid.len() {
            return Err(StateError::Probe(format!(
                "the map has {} values for a {}x{} patch grid",
                map.len(),
                grid.height,
                grid.width
            )));
        }
        let prompt = self.last_prompt()?;
        let ids: Vec<u32> = answer.steps.iter().map(|s| s.token_id).collect();
        let pixels = ckpt.processor.preprocess(&self.image.image)?;
        let rescore = |lp: Vec<f64>| -> Result<Rescored, StateError> {
            let perplexity = metrics::perplexity(&lp).map_err(StateError::probe)?;
            Ok(Rescored {
                token_prob: lp[token].exp(),
                perplexity,
            })
        };
        let original = rescore(answer_logprobs(ckpt, &prompt, features, &ids)?)?;
        let seed = self.settings.seed ^ token as u64;
        let most = metrics::perturbation_order(map, Order::MostFirst).map_err(StateError::probe)?;
        let random = metrics::perturbation_order(&vec![0.0; grid.len()], Order::Random(seed))
            .map_err(StateError::probe)?;
        let mut rows = Vec::with_capacity(PROBE_FRACTIONS.len());
        for fraction in PROBE_FRACTIONS {
            let masked = |order: &[usize]| {
                let cells = metrics::removed_cells(order, fraction);
                rescore(masked_answer_logprobs(
                    ckpt, &prompt, &pixels, grid, cells, &ids,
                )?)
            };
            rows.push(ProbeRow {
                fraction,
                cells: metrics::cells_to_remove(grid.len(), fraction),
                by_map: masked(&most)?,
                random: masked(&random)?,
            });
        }
        Ok(Probe {
            token,
            token_text: step.token_text.clone(),
            map_label: map_label.to_string(),
            original,
            rows,
            seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{answer, state};
    use crate::Selection;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn removes_the_maps_top_patches_and_as_many_random_ones() {
        let mut s = state();
        assert!(matches!(
            s.probe(0, "dexar"),
            Err(StateError::NothingToShow)
        ));
        answer(&mut s, "describe the image", None);
        let n = s.answer.as_ref().unwrap().steps.len();
        assert!(n >= 2, "the test needs two tokens");
        let token = 1;
        let probe = s.probe(token, "dexar").unwrap();
        assert_eq!(probe.map_label, "dexar");
        assert_eq!(probe.rows.len(), 3);

        // An independent reference: the answer's ids, the prompt rebuilt
        // from the turns, the top cells by a plain sort, scored directly.
        let ckpt = &s.model().unwrap().ckpt;
        let ids: Vec<u32> = s
            .answer
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .map(|t| t.token_id)
            .collect();
        let turns = &s.turns;
        let prompt = ckpt
            .prepare_chat(
                &turns[..turns.len() - 1],
                &turns[turns.len() - 1].user,
                s.image.features().unwrap(),
            )
            .unwrap();
        let lp = answer_logprobs(ckpt, &prompt, s.image.features().unwrap(), &ids).unwrap();
        let ppl = (-lp.iter().sum::<f64>() / lp.len() as f64).exp();
        assert!(close(probe.original.perplexity, ppl));
        assert!(close(probe.original.token_prob, lp[token].exp()));

        let map = s.shown("dexar", &Selection::Token(token)).unwrap().map01;
        let mut ranked: Vec<usize> = (0..map.len()).collect();
        ranked.sort_by(|a, b| map[*b].partial_cmp(&map[*a]).unwrap().then(a.cmp(b)));
        let pixels = ckpt.processor.preprocess(&s.image.image).unwrap();
        for row in &probe.rows {
            let k = (row.fraction as f64 * map.len() as f64 + 1e-6).floor() as usize;
            assert_eq!(row.cells, k);
            let lp = masked_answer_logprobs(
                ckpt,
                &prompt,
                &pixels,
                s.image.features().unwrap().grid,
                &ranked[..k],
                &ids,
            )
            .unwrap();
            assert!(close(row.by_map.token_prob, lp[token].exp()), "{row:?}");
            // Removing patches changes what the model sees.
            assert!(
                row.random.perplexity != probe.original.perplexity,
                "{row:?}"
            );
        }
        // The same seed gives the same random rows.
        assert_eq!(s.probe(token, "dexar").unwrap(), probe);
        assert!(matches!(
            s.probe(n, "dexar"),
            Err(StateError::NoToken { .. })
        ));
        assert!(matches!(
            s.probe_map(0, &[1.0, 2.0], "odd"),
            Err(StateError::Probe(_))
        ));
    }
}
