//! The naive reference path: recompute the whole sequence without a cache and
//! differentiate each layer's logit-lens logit through the attention
//! probabilities with candle autograd. A second, independent implementation
//! used by tests and as the benchmark baseline (it is what the reference
//! wrapper does for every generated token).

use candle_core::{DType, IndexOp};
use std::ops::Range;

use crate::decoder::Capture;
use crate::error::{ModelError, Result};
use crate::models::{ImageFeatures, VlModel};

/// One step of the naive path, buffers `[layers, heads, positions]`.
#[derive(Debug, Clone)]
pub struct NaiveStep {
    pub logits: Vec<f32>,
    pub token: u32,
    pub grads: Vec<f32>,
    pub attn: Vec<f32>,
}

/// Explains the next token after `ids` (the whole sequence so far, image
/// tokens included, its first `prompt_len` the prompt); `token` `None` takes
/// the argmax.
pub fn naive_step(
    model: &VlModel,
    ids: &[u32],
    prompt_len: usize,
    image_spans: &[(usize, usize)],
    image_features: &ImageFeatures,
    layers: Range<usize>,
    token: Option<u32>,
) -> Result<NaiveStep> {
    if model.dtype() != DType::F32 {
        return Err(ModelError::Setting(
            "the naive reference path needs an f32 model".into(),
        ));
    }
    let decoder = model.decoder();
    let input = model.sequence_input(ids, image_spans, image_features)?;
    let out = decoder.forward_at(
        &input.embeds,
        &model.whole_sequence(&input, image_spans, image_features, prompt_len),
        None,
        &Capture {
            full: true,
            ..Capture::default()
        },
    )?;
    let q = ids.len() - 1;
    let hidden = out
        .hidden
        .as_ref()
        .ok_or_else(|| ModelError::Setting("no hidden state".into()))?;
    let logits: Vec<f32> = decoder
        .logits(&hidden.i((0, q))?.unsqueeze(0)?)?
        .squeeze(0)?
        .detach()
        .to_vec1()?;
    let token = token.unwrap_or_else(|| {
        crate::generate::sample_token(&logits, 0.0, 1.0, &mut rand::SeedableRng::seed_from_u64(0))
    });
    let (mut grads, mut attn) = (Vec::new(), Vec::new());
    for l in layers {
        // o^{l,t}[y_t] = (W_lm · FinalNorm(h^l_q))[y_t]
        let h = out.layer_outputs[l].i((0, q))?.unsqueeze(0)?;
        let o = decoder.logits(&h)?.i((0, token as usize))?;
        let store = o.backward()?;
        let probs = &out.attn[l];
        let g = store.get(probs).ok_or_else(|| {
            ModelError::Setting(format!("no gradient reached the attention of layer {l}"))
        })?;
        grads.extend(g.i((0, .., q, ..))?.flatten_all()?.to_vec1::<f32>()?);
        attn.extend(
            probs
                .i((0, .., q, ..))?
                .detach()
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Ok(NaiveStep {
        logits,
        token,
        grads,
        attn,
    })
}
