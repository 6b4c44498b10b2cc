//! The exact incremental computation of DEXAR.md: with keys and values of
//! earlier positions held constant, `∂ o^{l,t}[y_t] / ∂ A^{l,i}[q, :]` only
//! needs layer l's MLP, its output projection and the cached values at q.
//! Vectors stay in f32 whatever the model dtype; weights are used in their own
//! dtype for the matrix-vector products and the results are brought back to f32.
//!
//! The decoder variants change nothing here, and why:
//! - q/k biases, per-head q/k RMSNorm and the rotary embedding (plain or
//!   multimodal, with its `rope_deltas`) act only on how the probabilities
//!   `A^{l,i}[q, :]` are formed; the gradient is taken with respect to those
//!   probabilities, so nothing before them enters it.
//! - A v bias is part of the cached values `v_j`, which the probe holds as the
//!   forward computed them; an o bias is a constant of `∂o/∂c = W_o^T ∂o/∂r`.
//! - DeepStack (Qwen3-VL) adds features at image positions only. The query is
//!   a text position, so `h^l_q` and `r` are untouched; later layers' values at
//!   image positions already include the addition, as cached.
//! - A tied LM head is `W_lm = W_embed`: the row used by the logit lens is the
//!   same whichever tensor holds it.
//! - Gemma's `(1 + w)` RMSNorm gains are kept as `1 + w` (see
//!   `RmsNorm::load_one_plus`), so the norm backward is the same formula; its
//!   scaled embeddings act before layer 0; its tanh-GELU MLP is differentiated
//!   with [`crate::nn::Activation::derivative`].
//! - Gemma 2 (PaliGemma 2): the attention soft-capping and the query scale
//!   act before the probabilities, like the rotary embedding; its norms of
//!   the attention output and of the MLP output sit on the paths from `c_q`
//!   to `r` and from `r` to `h^l_q`, and are differentiated there
//!   (`attn_out`, the output projection at q, is kept by the probe); its
//!   soft-capped logits scale the lens's gradient by `1 − tanh²(z / c)`.
//! - PaliGemma's prefix-LM mask (image and prompt attend to each other both
//!   ways, the answer causally) only decides which keys each row may see.
//!   The query q is always the last position of the sequence so far (an
//!   answer position, or the prompt's last one for the first token), so every
//!   key `0..=q` is visible to it either way; and `A^{l,i}[q, :]` reaches
//!   `h^l_q` only through q's own context vector whatever the other rows see.
//!   The cached keys and values of the prompt were computed with the
//!   bidirectional mask, as a full forward computes them.

use candle_core::{DType, IndexOp, Result, Tensor};

use crate::decoder::{Decoder, LayerProbe};

/// `v · W` for a row vector `v` (`[K]`, f32) and `W` `[K, M]` in the model dtype: `[M]` f32.
fn vec_mat(v: &Tensor, w: &Tensor) -> Result<Tensor> {
    v.to_dtype(w.dtype())?
        .unsqueeze(0)?
        .matmul(w)?
        .squeeze(0)?
        .to_dtype(DType::F32)
}

/// Backward of `y = w ⊙ x / sqrt(mean(x²) + eps)`:
/// `dx = (w⊙dy)/rms − x · Σ(w⊙dy⊙x) / (n · rms³)`.
fn rms_norm_vjp(x: &Tensor, weight: &Tensor, eps: f64, dy: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)? as f64;
    let w = weight.to_dtype(DType::F32)?;
    let inv_rms = (x.sqr()?.mean_all()? + eps)?.sqrt()?.recip()?;
    let wdy = (&w * dy)?;
    let dot = (&wdy * x)?.sum_all()?;
    let first = wdy.broadcast_mul(&inv_rms)?;
    let coef = (dot * inv_rms.powf(3.0)?)? / n;
    first - x.broadcast_mul(&coef?)?
}

impl Decoder {
    /// `u = ∂ o^{l}[y] / ∂ h`, the logit lens `o = W_lm · FinalNorm(h)` differentiated
    /// at `h` (`[D]`): FinalNorm backward applied to row y of `W_lm`.
    pub fn lens_vjp(&self, h: &Tensor, token: u32) -> Result<Tensor> {
        let row = self.lm_head.i(token as usize)?.to_dtype(DType::F32)?;
        let h = h.to_dtype(DType::F32)?;
        // Gemma 2's soft-capped logit c · tanh(z / c): dz scaled by 1 − tanh²(z / c)
        let row = match self.cfg.variant.final_softcap {
            Some(c) => {
                let z =
                    (rms_norm_forward(&h, &self.norm.weight, self.norm.eps)? * &row)?.sum_all()?;
                let th = (z / c)?.tanh()?;
                row.broadcast_mul(&th.sqr()?.affine(-1.0, 1.0)?)?
            }
            None => row,
        };
        rms_norm_vjp(&h, &self.norm.weight, self.norm.eps, &row)
    }

    /// The query-row gradients `g^{l,t,i}[j]`, `[H, P]` f32, for layer `l` and token `y`.
    pub fn local_backward(&self, l: usize, probe: &LayerProbe, token: u32) -> Result<Tensor> {
        let layer = &self.layers[l];
        let cfg = &self.cfg;
        let (h, kv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        // u = ∂o/∂h^l_q
        let u = self.lens_vjp(&probe.output, token)?;
        // ∂o/∂r = u + (∂ MLP(PostNorm(r)) / ∂r)^T u
        let r = probe.resid_mid.to_dtype(DType::F32)?;
        // a, b: the MLP's gate and up projections at q, kept from the forward pass.
        let (a, b) = match &probe.mlp_gate_up {
            Some((a, b)) => (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?),
            None => {
                let x = rms_norm_forward(&r, &layer.post_norm.weight, layer.post_norm.eps)?;
                (
                    vec_mat(&x, &layer.gate_proj.weight.t()?)?,
                    vec_mat(&x, &layer.up_proj.weight.t()?)?,
                )
            }
        };
        let act = self.mlp_act.apply(&a)?;
        let dact = self.mlp_act.derivative(&a)?;
        // Gemma 2 normalises the MLP's output before adding it: back through that norm first
        let u_mlp = match &layer.mlp_out_norm {
            Some(n) => {
                let m = vec_mat(&(&act * &b)?, &layer.down_proj.weight.t()?)?;
                rms_norm_vjp(&m, &n.weight, n.eps, &u)?
            }
            None => u.clone(),
        };
        let dm = vec_mat(&u_mlp, &layer.down_proj.weight)?;
        let da = ((&dm * &b)? * dact)?;
        let db = (&dm * act)?;
        let dx = (vec_mat(&da, &layer.gate_proj.weight)? + vec_mat(&db, &layer.up_proj.weight)?)?;
        let dr = (&u + rms_norm_vjp(&r, &layer.post_norm.weight, layer.post_norm.eps, &dx)?)?;
        // ∂o/∂c = W_o^T ∂o/∂r, split per head (Gemma 2: through its
        // attention-output norm, at the output projection's value at q)
        let dr = match &layer.attn_out_norm {
            Some(n) => rms_norm_vjp(&probe.attn_out.to_dtype(DType::F32)?, &n.weight, n.eps, &dr)?,
            None => dr,
        };
        let dc = vec_mat(&dr, &layer.o_proj.weight)?.reshape((h, 1, hd))?;
        // g[i, j] = <∂o/∂c_i, v_{kv(i), j}>
        let values = probe.values.to_dtype(DType::F32)?;
        let p = values.dim(1)?;
        let n_rep = h / kv;
        let values = match n_rep {
            1 => values,
            _ => values
                .unsqueeze(1)?
                .broadcast_as((kv, n_rep, p, hd))?
                .reshape((h, p, hd))?,
        };
        dc.matmul(&values.t()?)?.squeeze(1)
    }
}

fn rms_norm_forward(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let inv_rms = (x.sqr()?.mean_all()? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv_rms)?
        .mul(&weight.to_dtype(DType::F32)?)
}
