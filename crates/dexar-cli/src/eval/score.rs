//! Scoring one evaluation item: trace the answer, map object words to their
//! tokens, segmentation metrics per word and per sentence, and normalised
//! perplexity under patch perturbation (DEXAR.md, "Evaluation").

use dexar_core::metrics::{self, ItemMetrics, Order};
use dexar_core::{Grid, Strategy, TokenMap};
use dexar_model::{
    answer_logprobs, generate_traced, masked_answer_logprobs, Checkpoint, GenerationSettings,
    ImageFeatures, Mode, Pixels, PreparedPrompt,
};
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::data::{mask_in_model_view, EvalItem, Mask};
use crate::error::{CliError, CliResult};

/// What one item contributes to one strategy.
#[derive(Debug, Default)]
pub struct StrategyScores {
    pub words: Vec<ItemMetrics>,
    pub sentence: ItemMetrics,
}

#[derive(Debug)]
pub struct ItemScores {
    /// Per strategy, its scores or why it failed (a strategy skipped on
    /// request fails with an empty message).
    pub per_strategy: Vec<Result<StrategyScores, String>>,
    pub answer: String,
    /// Linked words that could not be matched to tokens.
    pub unmatched_words: usize,
}

pub struct Scorer<'a> {
    pub ckpt: &'a Checkpoint,
    pub strategies: &'a [Arc<dyn Strategy>],
    pub layers: Range<usize>,
    pub max_tokens: usize,
    pub perturb: bool,
    pub seed: u64,
    /// Set by Ctrl-C: generation stops early (the item is then discarded).
    pub cancel: &'a AtomicBool,
}

impl Scorer<'_> {
    /// Scores `item` with every strategy not marked in `skip`. A failing
    /// strategy fails alone; anything else fails the item.
    pub fn score(&self, item: &EvalItem, index: u64, skip: &[bool]) -> CliResult<ItemScores> {
        let ckpt = self.ckpt;
        let pixels = ckpt.processor.preprocess(&item.image)?;
        let features = ckpt.encode_pixels(&pixels)?;
        let prompt = ckpt.prepare_chat(&[], &item.prompt, &features)?;
        let settings = GenerationSettings {
            max_tokens: self.max_tokens,
            layers: self.layers.clone(),
            ..Default::default()
        };
        let cancel = self.cancel;
        let answer_ids = match &item.answer {
            Some(a) => ckpt.tokenizer.encode(a, false)?,
            None => {
                generate_traced(
                    ckpt,
                    &prompt,
                    &features,
                    &settings,
                    &Mode::Generate,
                    cancel,
                    &mut |_| true,
                )?
                .tokens
            }
        };
        let mut traces = Vec::new();
        if !answer_ids.is_empty() {
            let mode = Mode::TeacherForced(answer_ids.clone());
            generate_traced(
                ckpt,
                &prompt,
                &features,
                &settings,
                &mode,
                cancel,
                &mut |s| {
                    traces.push(s.trace);
                    true
                },
            )?;
        }
        let texts: Vec<&str> = traces.iter().map(|t| t.token_text.as_str()).collect();
        let word_tokens = dexar_core::words::word_tokens(&texts);
        let answer_text = texts.concat();
        let grid = features.grid;
        let mut words: Vec<(Vec<usize>, Mask)> = Vec::new();
        for w in &item.words {
            if let Some(tokens) = word_tokens.get(w.word) {
                words.push((
                    tokens.clone(),
                    mask_in_model_view(&w.mask, &ckpt.processor)?,
                ));
            }
        }
        let unmatched_words = item.words.len() - words.len();
        let sentence_mask = union_masks(words.iter().map(|(_, m)| m));

        // nPPL baseline and the strategy-independent random order.
        let perturb = self.perturb && !answer_ids.is_empty();
        let (ppl_original, random_auc) = if perturb {
            let ppl = self.ppl(&prompt, &features, &answer_ids)?;
            let order = metrics::perturbation_order(
                &vec![0.0; grid.len()],
                Order::Random(self.seed ^ index),
            )
            .map_err(internal)?;
            (
                ppl,
                Some(self.nppl_auc(&prompt, (&pixels, grid), &order, &answer_ids, ppl)?),
            )
        } else {
            (f64::NAN, None)
        };

        let mut per_strategy = Vec::new();
        for (s, &skipped) in self.strategies.iter().zip(skip) {
            if skipped {
                per_strategy.push(Err(String::new()));
                continue;
            }
            let maps = match strategy_maps(s.as_ref(), &traces) {
                Ok(maps) => maps,
                Err(e) => {
                    per_strategy.push(Err(e));
                    continue;
                }
            };
            let mut scores = StrategyScores::default();
            for (tokens, mask) in &words {
                let map = sum_maps(tokens.iter().map(|&t| &maps[t]), grid.len());
                scores.words.push(segmentation(&map, grid, mask)?);
            }
            if maps.is_empty() {
                per_strategy.push(Ok(scores));
                continue;
            }
            let sentence = match s.sentence_map(&maps) {
                Ok(m) => m,
                Err(e) => {
                    per_strategy.push(Err(dexar_core::one_line(&e.to_string())));
                    continue;
                }
            };
            if let Some(mask) = &sentence_mask {
                scores.sentence = segmentation(&sentence, grid, mask)?;
            }
            if perturb {
                let most =
                    metrics::perturbation_order(&sentence, Order::MostFirst).map_err(internal)?;
                let least =
                    metrics::perturbation_order(&sentence, Order::LeastFirst).map_err(internal)?;
                scores.sentence.nppl_auc_most_first = Some(self.nppl_auc(
                    &prompt,
                    (&pixels, grid),
                    &most,
                    &answer_ids,
                    ppl_original,
                )?);
                scores.sentence.nppl_auc_least_first = Some(self.nppl_auc(
                    &prompt,
                    (&pixels, grid),
                    &least,
                    &answer_ids,
                    ppl_original,
                )?);
                scores.sentence.nppl_auc_random = random_auc;
            }
            per_strategy.push(Ok(scores));
        }
        Ok(ItemScores {
            per_strategy,
            answer: answer_text,
            unmatched_words,
        })
    }

    fn ppl(
        &self,
        prompt: &PreparedPrompt,
        features: &ImageFeatures,
        answer: &[u32],
    ) -> CliResult<f64> {
        let lp = answer_logprobs(self.ckpt, prompt, features, answer)?;
        metrics::perplexity(&lp).map_err(internal)
    }

    /// Area under nPPL(r) for r = 0, 0.1, ..., 0.9, removing cells in `order`
    /// (their pixels set to 0, the image mean after normalisation).
    fn nppl_auc(
        &self,
        prompt: &PreparedPrompt,
        (pixels, grid): (&Pixels, Grid),
        order: &[usize],
        answer: &[u32],
        ppl_original: f64,
    ) -> CliResult<f64> {
        let xs: Vec<f64> = metrics::fractions().iter().map(|&r| r as f64).collect();
        let mut ppls = Vec::with_capacity(xs.len());
        for &r in &metrics::fractions() {
            if r == 0.0 {
                ppls.push(ppl_original);
                continue;
            }
            let cells = metrics::removed_cells(order, r);
            let lp = masked_answer_logprobs(self.ckpt, prompt, pixels, grid, cells, answer)?;
            ppls.push(metrics::perplexity(&lp).map_err(internal)?);
        }
        let curve = metrics::nppl_curve(ppl_original, &ppls).map_err(internal)?;
        metrics::curve_area(&curve, &xs).map_err(internal)
    }
}

/// A strategy's map of every traced token, or its error on one line.
fn strategy_maps(
    s: &dyn Strategy,
    traces: &[dexar_core::StepTrace],
) -> Result<Vec<TokenMap>, String> {
    traces
        .iter()
        .map(|t| s.token_map(t))
        .collect::<Result<_, _>>()
        .map_err(|e| dexar_core::one_line(&e.to_string()))
}

fn internal(e: impl std::fmt::Display) -> CliError {
    CliError::internal(e.to_string())
}

fn segmentation(map: &[f32], grid: Grid, mask: &Mask) -> CliResult<ItemMetrics> {
    let seg = metrics::segmentation_metrics(
        map,
        grid,
        &mask.inside,
        mask.width as usize,
        mask.height as usize,
    )
    .map_err(internal)?;
    Ok(ItemMetrics::from(seg))
}

fn sum_maps<'a>(maps: impl Iterator<Item = &'a TokenMap>, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; len];
    for m in maps {
        for (o, v) in out.iter_mut().zip(&m.raw) {
            *o += v;
        }
    }
    out
}

fn union_masks<'a>(mut masks: impl Iterator<Item = &'a Mask>) -> Option<Mask> {
    let first = masks.next()?.clone();
    Some(masks.fold(first, |mut acc, m| {
        if m.inside.len() == acc.inside.len() {
            acc.inside
                .iter_mut()
                .zip(&m.inside)
                .for_each(|(a, &b)| *a |= b);
        }
        acc
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_core::{StepTrace, StrategyError};

    /// A plugin that fails on every token.
    struct Failing;

    impl Strategy for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        fn help(&self) -> &str {
            "fails"
        }
        fn token_map(&self, _: &StepTrace) -> Result<TokenMap, StrategyError> {
            Err(StrategyError::Failed {
                strategy: "failing".into(),
                message: "out of\nluck".into(),
            })
        }
    }

    #[test]
    fn a_failing_strategy_fails_alone_and_a_skipped_one_is_not_run() {
        let ckpt = dexar_toy::load_bundled(&Default::default()).unwrap();
        let strategies: Vec<Arc<dyn Strategy>> = vec![
            dexar_core::builtin_strategy("dexar", 1).unwrap().into(),
            Arc::new(Failing),
            dexar_core::builtin_strategy("raw-attention", 1)
                .unwrap()
                .into(),
        ];
        let cancel = AtomicBool::new(false);
        let scorer = Scorer {
            ckpt: &ckpt,
            strategies: &strategies,
            layers: 0..ckpt.text_config().num_hidden_layers,
            max_tokens: 4,
            perturb: false,
            seed: 0,
            cancel: &cancel,
        };
        let items =
            super::super::data::load(&super::super::data::DataSource::Toy { n: 1, seed: 1 })
                .unwrap();
        let item = items.iter().next().unwrap().unwrap();
        let scores = scorer.score(&item, 0, &[false, false, true]).unwrap();
        assert!(scores.per_strategy[0]
            .as_ref()
            .is_ok_and(|s| !s.words.is_empty()));
        let failed = scores.per_strategy[1].as_ref().unwrap_err();
        assert!(failed.contains("out of luck"), "one line: {failed}");
        assert_eq!(scores.per_strategy[2].as_ref().unwrap_err(), "", "skipped");
    }
}
