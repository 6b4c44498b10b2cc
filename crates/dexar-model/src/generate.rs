//! Traced generation: KV-cached decoding that, at every step, computes the
//! exact query-row gradients of every traced layer by the local backward and
//! hands a [`StepTrace`] to the caller as soon as the token is known.

use candle_core::{DType, IndexOp, Tensor};
use dexar_core::{PositionKind, StepTrace};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::checkpoint::Checkpoint;
use crate::decoder::{Capture, KvCache};
use crate::error::{ModelError, Result};
use crate::models::{decode_step, ImageFeatures};
use crate::prompt::PreparedPrompt;

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Decoder layers whose gradients are traced (see `dexar_core::LayerSelection`);
    /// empty: plain decoding, the steps' traces hold no layer.
    pub layers: Range<usize>,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            layers: 0..0,
        }
    }
}

/// Generate freely, or explain a given answer by teacher forcing.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Generate,
    TeacherForced(Vec<u32>),
}

/// One step as it streams out.
#[derive(Debug, Clone)]
pub struct TracedStep {
    pub trace: StepTrace,
    /// Logits at the query position.
    pub logits: Vec<f32>,
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    TargetEnd,
    ContextFull,
    Cancelled,
}

impl StopReason {
    /// The name explain.json's `settings.stop_reason` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::MaxTokens => "maxtokens",
            Self::TargetEnd => "targetend",
            Self::ContextFull => "contextfull",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub times: GenerationTimes,
}

/// Where a generation's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationTimes {
    /// The prompt through the decoder (the image already encoded).
    pub prefill: Duration,
    /// Everything after the prefill: logits, token choice, tracing, decode
    /// steps, the caller's `on_step`.
    pub steps: Duration,
    /// The part of `steps` spent tracing (local backward, copies to the trace).
    pub tracing: Duration,
}

/// Picks the next token: argmax at temperature 0, else top-p sampling.
pub fn sample_token(logits: &[f32], temperature: f64, top_p: f64, rng: &mut StdRng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i, ((v as f64 - max) / temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (k, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= top_p {
            cut = k + 1;
            break;
        }
    }
    probs.truncate(cut.max(1));
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut draw = rng.random::<f64>() * mass;
    for (i, p) in &probs {
        draw -= p;
        if draw <= 0.0 {
            return *i as u32;
        }
    }
    probs.last().map_or_else(argmax, |p| p.0 as u32)
}

/// Runs traced generation. `on_step` returns `false` to stop early.
pub fn generate_traced(
    ckpt: &Checkpoint,
    prompt: &PreparedPrompt,
    image_features: &ImageFeatures,
    settings: &GenerationSettings,
    mode: &Mode,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(TracedStep) -> bool,
) -> Result<Generation> {
    let model = &ckpt.model;
    let decoder = model.decoder();
    let max_pos = decoder.cfg.context_len();
    let p0 = prompt.input_ids.len();
    let budget = match mode {
        Mode::Generate => settings.max_tokens,
        Mode::TeacherForced(target) => target.len(),
    };
    // The last explained token is placed at p0 + budget - 1; its query at p0 + budget - 2.
    let needed = match mode {
        Mode::Generate => p0 + 1,
        Mode::TeacherForced(_) => p0 + budget.saturating_sub(1),
    };
    if needed > max_pos {
        return Err(ModelError::ContextOverflow {
            len: needed,
            max: max_pos,
        });
    }
    if settings.layers.end > decoder.layers.len() {
        return Err(ModelError::Setting(format!(
            "traced layers {:?} are not within the model's {} layers",
            settings.layers,
            decoder.layers.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let capture = Capture {
        probes: settings.layers.clone(),
        no_grad: true,
        ..Capture::default()
    };
    let mut cache = KvCache::default();
    let prefill_start = Instant::now();
    let input = model.sequence_input(&prompt.input_ids, &prompt.image_spans, image_features)?;
    let whole = model.whole_sequence(&input, &prompt.image_spans, image_features, p0);
    let mut out = decoder.forward_at(&input.embeds, &whole, Some(&mut cache), &capture)?;
    let mut times = GenerationTimes {
        prefill: prefill_start.elapsed(),
        ..GenerationTimes::default()
    };
    let steps_start = Instant::now();
    tracing::debug!(
        prompt_tokens = p0,
        traced_layers = ?settings.layers,
        ms = crate::millis_since(prefill_start),
        "prefill"
    );
    // The decode step that produced `out` (none before the first token).
    let mut decode_ms = 0.0;
    let mut tokens: Vec<u32> = Vec::new();
    let regions = image_features.regions(&prompt.image_spans);
    let stop = loop {
        let t = tokens.len();
        if t == budget {
            break if matches!(mode, Mode::Generate) {
                StopReason::MaxTokens
            } else {
                StopReason::TargetEnd
            };
        }
        if cancel.load(Ordering::Relaxed) {
            break StopReason::Cancelled;
        }
        let q = p0 + t - 1;
        let hidden = out
            .hidden
            .as_ref()
            .ok_or_else(|| ModelError::Setting("decoder returned no hidden state".into()))?;
        let last = hidden.i((0, hidden.dim(1)? - 1))?;
        let logits: Vec<f32> = decoder
            .logits(&last.unsqueeze(0)?)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        // -inf is a masked token; NaN or +inf is a broken model.
        if logits.iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
            return Err(ModelError::NonFinite { step: t });
        }
        let token = match mode {
            Mode::Generate => sample_token(&logits, settings.temperature, settings.top_p, &mut rng),
            Mode::TeacherForced(target) => target[t],
        };
        if matches!(mode, Mode::Generate) && ckpt.eos_token_ids.contains(&token) {
            break StopReason::Eos;
        }
        let backward_start = Instant::now();
        let num_positions = q + 1;
        let heads = decoder.cfg.num_attention_heads;
        let mut grads = Vec::with_capacity(out.probes.len() * heads * num_positions);
        let mut attn = Vec::with_capacity(grads.capacity());
        for (l, probe) in &out.probes {
            grads.extend(
                decoder
                    .local_backward(*l, probe, token)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
            attn.extend(probe.attn.flatten_all()?.to_vec1::<f32>()?);
        }
        let kinds = (0..num_positions)
            .map(|j| {
                if regions.iter().any(|r| j >= r.span.0 && j < r.span.1) {
                    PositionKind::Image
                } else if j < p0 {
                    PositionKind::Prompt
                } else {
                    PositionKind::Generated
                }
            })
            .collect();
        let trace = StepTrace {
            step: t,
            token_id: token,
            token_text: ckpt.tokenizer.token_text(&tokens, token),
            query_position: q,
            layers: out.probes.iter().map(|(l, _)| *l).collect(),
            num_heads: heads,
            num_positions,
            grads,
            attn,
            kinds,
            regions: regions.clone(),
        };
        times.tracing += backward_start.elapsed();
        tracing::debug!(
            step = t,
            token,
            decode_ms,
            backward_ms = crate::millis_since(backward_start),
            "traced step"
        );
        tokens.push(token);
        if !on_step(TracedStep { trace, logits }) {
            break StopReason::Cancelled;
        }
        if tokens.len() == budget {
            continue;
        }
        let pos = p0 + t;
        if pos >= max_pos {
            break StopReason::ContextFull;
        }
        let decode_start = Instant::now();
        let x = decoder
            .embed(&Tensor::new(&[token], model.device())?)?
            .unsqueeze(0)?;
        out = decoder.forward_at(
            &x,
            &decode_step(pos, input.rope_delta),
            Some(&mut cache),
            &capture,
        )?;
        decode_ms = crate::millis_since(decode_start);
    };
    times.steps = steps_start.elapsed();
    Ok(Generation {
        text: ckpt.tokenizer.decode(&tokens),
        tokens,
        stop,
        times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(sample_token(&[0.1, 3.0, 3.0, -1.0], 0.0, 1.0, &mut rng), 1);
    }

    #[test]
    fn tiny_top_p_keeps_only_the_best_token() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(sample_token(&[0.0, 2.0, 1.9, 1.8], 1.0, 1e-6, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_softmax() {
        let logits = [0.0f32, (2f32).ln(), (3f32).ln(), f32::NEG_INFINITY];
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..6000)
                .map(|_| sample_token(&logits, 1.0, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7), "same seed, same tokens");
        assert_ne!(draw(7), draw(8));
        let tokens = draw(7);
        let mut counts = [0usize; 4];
        for t in tokens {
            counts[t as usize] += 1;
        }
        assert_eq!(counts[3], 0, "a -inf logit is never drawn");
        // Probabilities 1/6, 2/6, 3/6: expected 1000, 2000, 3000 (sd <= ~40).
        for (c, want) in counts.iter().zip([1000.0, 2000.0, 3000.0]) {
            assert!((*c as f64 - want).abs() < 200.0, "{counts:?}");
        }
        // top-p 0.5 keeps the smallest prefix reaching half the mass: only token 2.
        let mut rng = StdRng::seed_from_u64(3);
        assert!((0..200).all(|_| sample_token(&logits, 1.0, 0.5, &mut rng) == 2));
    }
}
