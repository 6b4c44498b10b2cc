//! Teacher-forced scoring of an answer without tracing: the log-probabilities
//! the model gives each answer token. Used by perturbation metrics (nPPL).

use candle_core::{DType, IndexOp, D};

use crate::checkpoint::Checkpoint;
use crate::decoder::Capture;
use crate::error::{ModelError, Result};
use crate::models::ImageFeatures;
use crate::preprocess::Pixels;
use crate::prompt::PreparedPrompt;

/// [`answer_logprobs`] with the image's cells `cells` (row-major indices of
/// the heatmap grid `grid` of these pixels) set to 0, the image mean once
/// normalised: the scoring of DEXAR.md's perturbation test, for one removed
/// set of cells.
pub fn masked_answer_logprobs(
    ckpt: &Checkpoint,
    prompt: &PreparedPrompt,
    pixels: &Pixels,
    grid: dexar_core::Grid,
    cells: &[usize],
    answer: &[u32],
) -> Result<Vec<f64>> {
    let blanked = pixels.with_patches_blanked(cells, grid, ckpt.cell_pixels());
    let features = ckpt.encode_pixels(&blanked)?;
    answer_logprobs(ckpt, prompt, &features, answer)
}

/// `log p(answer_t | prompt, answer_<t)` for every answer token, by one full
/// forward pass of prompt + answer.
pub fn answer_logprobs(
    ckpt: &Checkpoint,
    prompt: &PreparedPrompt,
    image_features: &ImageFeatures,
    answer: &[u32],
) -> Result<Vec<f64>> {
    if answer.is_empty() {
        return Ok(Vec::new());
    }
    let max = ckpt.text_config().context_len();
    let p0 = prompt.input_ids.len();
    // The last answer token is predicted at position p0 + len - 2.
    let len = p0 + answer.len() - 1;
    if len > max {
        return Err(ModelError::ContextOverflow { len, max });
    }
    let mut ids = prompt.input_ids.clone();
    ids.extend_from_slice(&answer[..answer.len() - 1]);
    let model = &ckpt.model;
    let input = model.sequence_input(&ids, &prompt.image_spans, image_features)?;
    let whole = model.whole_sequence(&input, &prompt.image_spans, image_features, p0);
    let out = model
        .decoder()
        .forward_at(&input.embeds, &whole, None, &Capture::default())?;
    let hidden = out
        .hidden
        .ok_or_else(|| ModelError::Setting("decoder returned no hidden state".into()))?;
    // Positions p0-1 .. p0+len-2 predict the answer tokens.
    let h = hidden.i((0, p0 - 1..ids.len()))?.contiguous()?;
    let logits = model.decoder().logits(&h)?.to_dtype(DType::F32)?;
    let max_l = logits.max_keepdim(D::Minus1)?;
    let lse = (logits
        .broadcast_sub(&max_l)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max_l)?;
    let logp = logits.broadcast_sub(&lse)?;
    let rows: Vec<Vec<f32>> = logp.to_vec2()?;
    Ok(rows
        .iter()
        .zip(answer)
        .map(|(row, &t)| row.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY) as f64)
        .collect())
}
