//! The LLaMA / Mistral decoder, instrumented: besides logits it can hand back,
//! for chosen layers, what the local backward of DEXAR.md needs at the query
//! position (attention row, mid-layer residual, layer output, cached values).

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, Var, D};
use candle_nn::VarBuilder;
use std::ops::Range;

use crate::config::TextConfig;
use crate::nn::{softmax_last, Activation, Linear, RmsNorm};

/// Rotary position embedding (transformers' `rotate_half` convention).
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &TextConfig, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let positions = cfg.context_len();
        let pos = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// `x * cos + rotate_half(x) * sin` for x `[B, H, T, hd]` at positions `start..start+T`.
    fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (_, _, t, hd) = x.dims4()?;
        let cos = self.cos.narrow(0, start, t)?;
        let sin = self.sin.narrow(0, start, t)?;
        let xf = x.to_dtype(DType::F32)?;
        let x1 = xf.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = xf.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        (xf.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.to_dtype(x.dtype())
    }
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    pub input_norm: RmsNorm,
    pub post_norm: RmsNorm,
}

/// What the local backward needs from layer l at the query position q.
#[derive(Debug, Clone)]
pub struct LayerProbe {
    /// `A^{l,i}[q, :]`, `[H, P]`.
    pub attn: Tensor,
    /// Residual stream after attention, `r`, `[D]`.
    pub resid_mid: Tensor,
    /// Layer output `h^l_q`, `[D]`.
    pub output: Tensor,
    /// Values of every key position (cache included), `[H_kv, P, hd]`.
    pub values: Tensor,
}

/// Which internals a forward pass should hand back.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Layers whose [`LayerProbe`] at the last position (batch item 0) is returned.
    pub probes: Range<usize>,
    /// Return every layer's full attention probabilities and outputs, the
    /// probabilities made autograd leaves (`Var`s) so that `∂o/∂A` can be read
    /// from a backward pass (candle keeps gradients of leaves only). Memory
    /// heavy; for the naive reference path.
    pub full: bool,
    /// Return every layer's output `[B, T, D]` (implied by `full`), still
    /// connected to the graph: for losses on intermediate layers in training.
    pub layer_outputs: bool,
}

/// Key/value cache, `[B, H_kv, T, hd]` per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// How many positions the cache holds.
    pub fn cached_positions(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }
}

#[derive(Debug, Default)]
pub struct DecoderOutput {
    /// Last decoder layer output (before the final norm), `[B, T, D]`.
    pub hidden: Option<Tensor>,
    pub probes: Vec<(usize, LayerProbe)>,
    /// With [`Capture::full`]: per layer, attention probabilities `[B, H, T, T_k]`.
    pub attn: Vec<Tensor>,
    /// With [`Capture::full`] or [`Capture::layer_outputs`]: per layer, outputs `[B, T, D]`.
    pub layer_outputs: Vec<Tensor>,
}

/// The language model: embeddings, decoder layers, final norm, LM head.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub cfg: TextConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Tensor,
    rope: Rope,
}

impl Decoder {
    /// `vb` points at the decoder (`language_model.model` or `model.language_model`),
    /// `head_vb` at the LM head (`None` ties it to the embeddings).
    pub fn load(vb: VarBuilder, head_vb: Option<VarBuilder>, cfg: &TextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let (h, kv, hd, i) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        );
        let embed_tokens = vb.pp("embed_tokens").get((cfg.vocab_size, d), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let lv = vb.pp("layers").pp(l);
                let a = lv.pp("self_attn");
                let m = lv.pp("mlp");
                Ok(DecoderLayer {
                    q_proj: Linear::load(a.pp("q_proj"), d, h * hd, false)?,
                    k_proj: Linear::load(a.pp("k_proj"), d, kv * hd, false)?,
                    v_proj: Linear::load(a.pp("v_proj"), d, kv * hd, false)?,
                    o_proj: Linear::load(a.pp("o_proj"), h * hd, d, false)?,
                    gate_proj: Linear::load(m.pp("gate_proj"), d, i, false)?,
                    up_proj: Linear::load(m.pp("up_proj"), d, i, false)?,
                    down_proj: Linear::load(m.pp("down_proj"), i, d, false)?,
                    input_norm: RmsNorm::load(lv.pp("input_layernorm"), d, cfg.rms_norm_eps)?,
                    post_norm: RmsNorm::load(
                        lv.pp("post_attention_layernorm"),
                        d,
                        cfg.rms_norm_eps,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = match head_vb {
            Some(hv) => hv.get((cfg.vocab_size, d), "weight")?,
            None => embed_tokens.clone(),
        };
        Ok(Self {
            cfg: cfg.clone(),
            norm: RmsNorm::load(vb.pp("norm"), d, cfg.rms_norm_eps)?,
            rope: Rope::new(cfg, embed_tokens.device())?,
            embed_tokens,
            layers,
            lm_head,
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let shape = ids.dims().to_vec();
        let flat = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?;
        let mut out_shape = shape;
        out_shape.push(self.cfg.hidden_size);
        flat.reshape(out_shape)
    }

    /// Logits of `FinalNorm(h)` for any leading shape.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let normed = self.norm.forward(hidden)?;
        let w = self.lm_head.t()?;
        match normed.dims() {
            [b, t, _] => normed
                .reshape((b * t, ()))?
                .matmul(&w)?
                .reshape((*b, *t, ())),
            _ => normed.matmul(&w),
        }
    }

    /// Runs the decoder on `x` `[B, T, D]` placed at positions `start..start+T`,
    /// extending `cache` when given.
    pub fn forward(
        &self,
        x: &Tensor,
        start: usize,
        mut cache: Option<&mut KvCache>,
        capture: &Capture,
    ) -> Result<DecoderOutput> {
        let (b, t, _) = x.dims3()?;
        let cfg = &self.cfg;
        let (h, kv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.layers.len(), None);
        }
        let total = start + t;
        let mask = self.mask(t, start, x.device())?;
        let mut out = DecoderOutput::default();
        let mut x = x.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = layer.input_norm.forward(&x)?;
            let split = |y: Tensor, heads: usize| {
                y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = self
                .rope
                .apply(&split(layer.q_proj.forward(&normed)?, h)?, start)?;
            let mut k = self
                .rope
                .apply(&split(layer.k_proj.forward(&normed)?, kv)?, start)?;
            let mut v = split(layer.v_proj.forward(&normed)?, kv)?;
            if let Some(c) = cache.as_deref_mut() {
                if let Some((pk, pv)) = &c.layers[l] {
                    k = Tensor::cat(&[pk, &k], 2)?;
                    v = Tensor::cat(&[pv, &v], 2)?;
                }
                c.layers[l] = Some((k.clone(), v.clone()));
            }
            let (k_rep, v_rep) = (repeat_kv(&k, h / kv)?, repeat_kv(&v, h / kv)?);
            let mut scores = (q.matmul(&k_rep.t()?.contiguous()?)? / (hd as f64).sqrt())?;
            if let Some(m) = &mask {
                scores = scores.broadcast_add(&m.to_dtype(scores.dtype())?)?;
            }
            let mut probs = softmax_last(&scores)?;
            if capture.full {
                probs = Var::from_tensor(&probs.detach())?.as_tensor().clone();
            }
            let ctx = probs
                .matmul(&v_rep)?
                .transpose(1, 2)?
                .reshape((b, t, h * hd))?;
            let resid_mid = (&x + layer.o_proj.forward(&ctx)?)?;
            let mlp_in = layer.post_norm.forward(&resid_mid)?;
            let act = Activation::Silu.apply(&layer.gate_proj.forward(&mlp_in)?)?;
            let mlp = layer
                .down_proj
                .forward(&(act * layer.up_proj.forward(&mlp_in)?)?)?;
            x = (&resid_mid + mlp)?;
            if capture.probes.contains(&l) {
                out.probes.push((
                    l,
                    LayerProbe {
                        attn: probs.i((0, .., t - 1, ..))?.to_dtype(DType::F32)?.detach(),
                        resid_mid: resid_mid.i((0, t - 1))?.detach(),
                        output: x.i((0, t - 1))?.detach(),
                        values: v.i(0)?.detach(),
                    },
                ));
            }
            if capture.full {
                out.attn.push(probs);
            }
            if capture.full || capture.layer_outputs {
                out.layer_outputs.push(x.clone());
            }
        }
        debug_assert!(cache.as_ref().is_none_or(|c| c.cached_positions() == total));
        out.hidden = Some(x);
        Ok(out)
    }

    /// Additive causal (and sliding-window) mask `[T, start+T]`, or `None` when
    /// every key is visible to every query.
    fn mask(&self, t: usize, start: usize, device: &Device) -> Result<Option<Tensor>> {
        let total = start + t;
        let window = self.cfg.sliding_window.unwrap_or(usize::MAX);
        if t == 1 && total <= window {
            return Ok(None);
        }
        let data: Vec<f32> = (0..t)
            .flat_map(|i| {
                let qpos = start + i;
                (0..total).map(move |j| {
                    if j <= qpos && qpos - j < window {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Tensor::from_vec(data, (t, total), device).map(Some)
    }
}

/// Grouped-query attention: key/value head `i / n_rep` serves query head `i`.
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, n_rep, t, hd))?
        .reshape((b, kv * n_rep, t, hd))
}
