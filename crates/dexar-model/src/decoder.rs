//! The decoder of every family (LLaMA, Mistral, Qwen2-VL, Qwen2.5-VL,
//! Qwen3-VL, Gemma), instrumented: besides logits it can hand back, for chosen
//! layers, what the local backward of DEXAR.md needs at the query position
//! (attention row, mid-layer residual, layer output, cached values). The
//! families differ only by [`DecoderVariant`] flags: attention biases,
//! per-head q/k RMSNorm, multimodal RoPE, DeepStack features added after
//! the first layers, Gemma's `(1 + w)` norms and scaled embeddings; by the
//! MLP's activation (`hidden_act`); and, per chunk, by a bidirectional
//! prefix (PaliGemma's prefix-LM mask, [`ChunkInput::prefix`]).

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, Var, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::ops::Range;

use crate::config::TextConfig;
use crate::nn::{softmax_last, Activation, Linear, RmsNorm};

/// What distinguishes the decoders of the families dexar supports. None of
/// these changes the local backward (see `local_backward.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecoderVariant {
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// A bias on the output projection (Qwen3 with `attention_bias`).
    pub o_bias: bool,
    /// RMSNorm over each head's query and key before the rotary embedding (Qwen3).
    pub qk_norm: bool,
    /// Multimodal rotary embedding: image tokens at 3-D positions.
    pub mrope: Option<MRope>,
    /// RMSNorm gains stored as `w` and applied as `1 + w` (Gemma).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub norm_one_plus: bool,
    /// Token embeddings multiplied by `sqrt(hidden_size)` (Gemma; image
    /// features placed in the sequence are not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embed_scale: bool,
    /// Gemma 2: RMSNorms on the attention output and on the MLP output,
    /// before each joins the residual stream (`post_attention_layernorm`,
    /// `post_feedforward_layernorm`; the MLP's input norm is then
    /// `pre_feedforward_layernorm`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandwich_norms: bool,
    /// Gemma 2: attention scores divided by `sqrt(query_pre_attn_scalar)`
    /// rather than `sqrt(head_dim)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: scores soft-capped to `c · tanh(s / c)` before the mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_softcap: Option<f64>,
    /// Gemma 2: logits soft-capped to `c · tanh(z / c)` (the logit lens too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_softcap: Option<f64>,
}

/// Multimodal RoPE: the `head_dim / 2` rotary frequencies are shared among
/// the temporal, height and width axes, `section[a]` frequencies each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MRope {
    pub section: [usize; 3],
    /// Qwen3-VL: frequencies interleaved (T H W T H W ... then T) rather than
    /// in three contiguous blocks (Qwen2-VL, Qwen2.5-VL).
    pub interleaved: bool,
}

impl MRope {
    /// The axis (0 temporal, 1 height, 2 width) of each of the `half` frequencies.
    pub fn axes(&self, half: usize) -> Vec<usize> {
        let [t, h, _] = self.section;
        (0..half)
            .map(|i| {
                if self.interleaved {
                    match i % 3 {
                        1 if i < 3 * self.section[1] => 1,
                        2 if i < 3 * self.section[2] => 2,
                        _ => 0,
                    }
                } else if i < t {
                    0
                } else if i < t + h {
                    1
                } else {
                    2
                }
            })
            .collect()
    }
}

/// Rotary positions of the tokens of one forward chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum RopePositions {
    /// Token k at position `first + k` on every axis (text; with M-RoPE every
    /// axis then shares the position, which is plain RoPE).
    Sequential(usize),
    /// Per token, the (temporal, height, width) positions of M-RoPE.
    Multi(Vec<[u32; 3]>),
}

impl RopePositions {
    fn len_matches(&self, t: usize) -> bool {
        match self {
            Self::Sequential(_) => true,
            Self::Multi(p) => p.len() == t,
        }
    }
}

/// Features added to the hidden states at the image positions after the
/// first decoder layers (Qwen3-VL's DeepStack): after layer `l`,
/// `layers[l]` (`[N, D]`) is added to positions `span` of the chunk.
#[derive(Debug, Clone, Copy)]
pub struct Deepstack<'a> {
    pub span: (usize, usize),
    pub layers: &'a [Tensor],
}

/// Where a forward chunk sits: its first cache position, its rotary
/// positions, what DeepStack adds to it, and its bidirectional prefix.
#[derive(Debug, Clone)]
pub struct ChunkInput<'a> {
    pub start: usize,
    pub rope: RopePositions,
    pub deepstack: Option<Deepstack<'a>>,
    /// Positions `0..prefix` attend to each other both ways (PaliGemma's
    /// image and prompt); every later position attends causally. 0: causal.
    pub prefix: usize,
}

impl ChunkInput<'_> {
    /// Text at cache positions `start..`, rotary positions from `start`.
    pub fn sequential(start: usize) -> Self {
        Self {
            start,
            rope: RopePositions::Sequential(start),
            deepstack: None,
            prefix: 0,
        }
    }
}

/// Rotary position embedding (transformers' `rotate_half` convention), with
/// the multimodal variant.
#[derive(Debug, Clone)]
struct Rope {
    /// `[1, hd / 2]` inverse frequencies.
    inv_freq: Tensor,
    /// M-RoPE: per axis, a `[1, hd]` 0/1 mask of the dimensions it drives.
    axis_masks: Option<[Tensor; 3]>,
}

impl Rope {
    fn new(cfg: &TextConfig, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32)
            .collect();
        let inv_freq = Tensor::from_vec(inv, (1, half), device)?;
        let axis_masks = match &cfg.variant.mrope {
            None => None,
            Some(m) => {
                let axes = m.axes(half);
                let mask = |a: usize| {
                    let row: Vec<f32> = axes
                        .iter()
                        .chain(&axes)
                        .map(|&x| if x == a { 1.0 } else { 0.0 })
                        .collect();
                    Tensor::from_vec(row, (1, 2 * half), device)
                };
                Some([mask(0)?, mask(1)?, mask(2)?])
            }
        };
        Ok(Self {
            inv_freq,
            axis_masks,
        })
    }

    /// `[T, hd]` angles of positions `pos` (`T` values).
    fn angles(&self, pos: Vec<f32>) -> Result<Tensor> {
        let t = pos.len();
        let pos = Tensor::from_vec(pos, (t, 1), self.inv_freq.device())?;
        let freqs = pos.broadcast_mul(&self.inv_freq)?;
        Tensor::cat(&[&freqs, &freqs], D::Minus1)
    }

    /// `(cos, sin)`, each `[T, hd]` f32, of a chunk of `t` tokens.
    fn cos_sin(&self, positions: &RopePositions, t: usize) -> Result<(Tensor, Tensor)> {
        match (positions, &self.axis_masks) {
            (RopePositions::Sequential(first), _) => {
                let a = self.angles((0..t).map(|k| (first + k) as f32).collect())?;
                Ok((a.cos()?, a.sin()?))
            }
            (RopePositions::Multi(p), Some(masks)) => {
                let (mut cos, mut sin) = (None::<Tensor>, None::<Tensor>);
                for (axis, mask) in masks.iter().enumerate() {
                    let a = self.angles(p.iter().map(|x| x[axis] as f32).collect())?;
                    let (c, s) = (a.cos()?.broadcast_mul(mask)?, a.sin()?.broadcast_mul(mask)?);
                    cos = Some(match cos {
                        Some(x) => (x + c)?,
                        None => c,
                    });
                    sin = Some(match sin {
                        Some(x) => (x + s)?,
                        None => s,
                    });
                }
                match (cos, sin) {
                    (Some(c), Some(s)) => Ok((c, s)),
                    _ => candle_core::bail!("M-RoPE without axes"),
                }
            }
            (RopePositions::Multi(_), None) => {
                candle_core::bail!("3-D rotary positions given to a decoder without M-RoPE")
            }
        }
    }

    /// `x * cos + rotate_half(x) * sin` for x `[B, H, T, hd]`.
    fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let hd = x.dim(D::Minus1)?;
        let xf = x.to_dtype(DType::F32)?;
        let x1 = xf.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = xf.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        (xf.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?.to_dtype(x.dtype())
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
    /// The MLP's input norm.
    pub post_norm: RmsNorm,
    /// Gemma 2's norms of the attention output and of the MLP output.
    pub attn_out_norm: Option<RmsNorm>,
    pub mlp_out_norm: Option<RmsNorm>,
    /// Per-head RMSNorm of queries and keys (Qwen3).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
}

/// What the local backward needs from layer l at the query position q.
#[derive(Debug, Clone)]
pub struct LayerProbe {
    /// `A^{l,i}[q, :]`, `[H, P]`.
    pub attn: Tensor,
    /// Residual stream after attention, `r`, `[D]`.
    pub resid_mid: Tensor,
    /// The output projection's result `W_o c` at q, `[D]` (what Gemma 2's
    /// attention-output norm normalises).
    pub attn_out: Tensor,
    /// Layer output `h^l_q`, `[D]`.
    pub output: Tensor,
    /// Values of every key position (cache included), `[H_kv, P, hd]`.
    pub values: Tensor,
    /// The MLP's gate and up projections at q, `[I]` each, as the forward
    /// computed them (the local backward needs both; `None`: recomputed).
    pub mlp_gate_up: Option<(Tensor, Tensor)>,
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
    /// No gradient will be taken through this pass (decoding, prefill): the
    /// key/value cache may be extended in place.
    pub no_grad: bool,
}

/// Key/value cache, `[B, H_kv, T, hd]` per layer.
#[derive(Debug, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
    /// No-grad passes: per layer, key and value buffers `[B, H_kv, capacity, hd]`
    /// whose first `len` positions `layers` views, so that a step writes its
    /// keys in place instead of copying the whole cache.
    buffers: Vec<Option<KvBuffer>>,
}

#[derive(Debug)]
struct KvBuffer {
    keys: Tensor,
    values: Tensor,
    len: usize,
}

/// Buffers grow by this many positions at a time.
const KV_GROWTH: usize = 256;

/// A clone holds the same keys and values but no buffer: two caches must
/// not write into one buffer.
impl Clone for KvCache {
    fn clone(&self) -> Self {
        Self::from_layers(self.layers.clone())
    }
}

impl KvCache {
    /// A cache holding these keys and values.
    pub fn from_layers(layers: Vec<Option<(Tensor, Tensor)>>) -> Self {
        Self {
            layers,
            buffers: Vec::new(),
        }
    }

    /// Layer `l`'s keys and values with `k`, `v` (`[B, H_kv, T, hd]`)
    /// appended: concatenated (differentiable), or written in place into
    /// the layer's buffer when `in_place`.
    fn append(
        &mut self,
        l: usize,
        k: Tensor,
        v: Tensor,
        in_place: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.buffers.resize_with(self.layers.len(), || None);
        let prev = self.layers[l].as_ref();
        let (k, v) = if !in_place {
            self.buffers[l] = None;
            match prev {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            }
        } else {
            let len = prev.map_or(Ok(0), |(pk, _)| pk.dim(2))?;
            let (b, kv, t, hd) = k.dims4()?;
            let total = len + t;
            let fits = self.buffers[l].as_ref().is_some_and(|buf| {
                buf.len == len
                    && buf
                        .keys
                        .dims4()
                        .is_ok_and(|(bb, hh, cap, dd)| (bb, hh, dd) == (b, kv, hd) && cap >= total)
                    && buf.keys.dtype() == k.dtype()
            });
            if !fits {
                let cap = (total + KV_GROWTH).next_multiple_of(KV_GROWTH);
                let keys = Tensor::zeros((b, kv, cap, hd), k.dtype(), k.device())?;
                let values = Tensor::zeros((b, kv, cap, hd), v.dtype(), v.device())?;
                if let Some((pk, pv)) = prev {
                    keys.slice_set(&pk.contiguous()?, 2, 0)?;
                    values.slice_set(&pv.contiguous()?, 2, 0)?;
                }
                self.buffers[l] = Some(KvBuffer { keys, values, len });
            }
            let Some(buf) = self.buffers[l].as_mut() else {
                candle_core::bail!("key/value buffer of layer {l} missing");
            };
            buf.keys.slice_set(&k.contiguous()?, 2, len)?;
            buf.values.slice_set(&v.contiguous()?, 2, len)?;
            buf.len = total;
            (
                buf.keys.narrow(2, 0, total)?,
                buf.values.narrow(2, 0, total)?,
            )
        };
        self.layers[l] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

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
    /// The MLP's gate activation (`hidden_act`: SiLU, Gemma's tanh GELU).
    pub mlp_act: Activation,
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
        let var = &cfg.variant;
        let mlp_act = Activation::from_name(&cfg.hidden_act).ok_or_else(|| {
            candle_core::Error::Msg(format!("hidden_act `{}` is not supported", cfg.hidden_act))
        })?;
        let norm = |vb: VarBuilder, dim: usize| match var.norm_one_plus {
            true => RmsNorm::load_one_plus(vb, dim, cfg.rms_norm_eps),
            false => RmsNorm::load(vb, dim, cfg.rms_norm_eps),
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let lv = vb.pp("layers").pp(l);
                let a = lv.pp("self_attn");
                let m = lv.pp("mlp");
                let head_norm = |name: &str| -> Result<Option<RmsNorm>> {
                    match var.qk_norm {
                        true => Ok(Some(RmsNorm::load(a.pp(name), hd, cfg.rms_norm_eps)?)),
                        false => Ok(None),
                    }
                };
                Ok(DecoderLayer {
                    q_proj: Linear::load(a.pp("q_proj"), d, h * hd, var.qkv_bias)?,
                    k_proj: Linear::load(a.pp("k_proj"), d, kv * hd, var.qkv_bias)?,
                    v_proj: Linear::load(a.pp("v_proj"), d, kv * hd, var.qkv_bias)?,
                    o_proj: Linear::load(a.pp("o_proj"), h * hd, d, var.o_bias)?,
                    q_norm: head_norm("q_norm")?,
                    k_norm: head_norm("k_norm")?,
                    gate_proj: Linear::load(m.pp("gate_proj"), d, i, false)?,
                    up_proj: Linear::load(m.pp("up_proj"), d, i, false)?,
                    down_proj: Linear::load(m.pp("down_proj"), i, d, false)?,
                    input_norm: norm(lv.pp("input_layernorm"), d)?,
                    post_norm: match var.sandwich_norms {
                        true => norm(lv.pp("pre_feedforward_layernorm"), d)?,
                        false => norm(lv.pp("post_attention_layernorm"), d)?,
                    },
                    attn_out_norm: match var.sandwich_norms {
                        true => Some(norm(lv.pp("post_attention_layernorm"), d)?),
                        false => None,
                    },
                    mlp_out_norm: match var.sandwich_norms {
                        true => Some(norm(lv.pp("post_feedforward_layernorm"), d)?),
                        false => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = match head_vb {
            Some(hv) => hv.get((cfg.vocab_size, d), "weight")?,
            None => embed_tokens.clone(),
        };
        Ok(Self {
            cfg: cfg.clone(),
            norm: norm(vb.pp("norm"), d)?,
            mlp_act,
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
        let emb = flat.reshape(out_shape)?;
        match self.cfg.variant.embed_scale {
            // transformers multiplies by sqrt(hidden) rounded to the weights' dtype
            true => {
                let scale = Tensor::new((self.cfg.hidden_size as f64).sqrt() as f32, emb.device())?
                    .to_dtype(emb.dtype())?;
                emb.broadcast_mul(&scale)
            }
            false => Ok(emb),
        }
    }

    /// Logits of `FinalNorm(h)` for any leading shape.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let normed = self.norm.forward(hidden)?;
        let w = self.lm_head.t()?;
        let z = match normed.dims() {
            [b, t, _] => normed
                .reshape((b * t, ()))?
                .matmul(&w)?
                .reshape((*b, *t, ()))?,
            _ => normed.matmul(&w)?,
        };
        match self.cfg.variant.final_softcap {
            Some(c) => (z / c)?.tanh()? * c,
            None => Ok(z),
        }
    }

    /// Input embeddings `[1, T, D]` of `ids`, the span `image_span` replaced
    /// by `image_tokens` `[N, D]`.
    pub fn embed_with_image(
        &self,
        ids: &[u32],
        image_spans: &[(usize, usize)],
        image_tokens: &Tensor,
    ) -> Result<Tensor> {
        let text = self.embed(&Tensor::new(ids, self.embed_tokens.device())?)?;
        let image = image_tokens.to_dtype(text.dtype())?;
        let mut parts = Vec::with_capacity(2 * image_spans.len() + 1);
        let (mut at, mut row) = (0, 0);
        for &(s, e) in image_spans {
            if s > at {
                parts.push(text.narrow(0, at, s - at)?);
            }
            parts.push(image.narrow(0, row, e - s)?);
            row += e - s;
            at = e;
        }
        if at < ids.len() {
            parts.push(text.narrow(0, at, ids.len() - at)?);
        }
        Tensor::cat(&parts, 0)?.unsqueeze(0)
    }

    /// Runs the decoder on `x` `[B, T, D]` placed at positions `start..start+T`,
    /// extending `cache` when given.
    pub fn forward(
        &self,
        x: &Tensor,
        start: usize,
        cache: Option<&mut KvCache>,
        capture: &Capture,
    ) -> Result<DecoderOutput> {
        self.forward_at(x, &ChunkInput::sequential(start), cache, capture)
    }

    /// Runs the decoder on the chunk `x` `[B, T, D]` described by `at`,
    /// extending `cache` when given.
    pub fn forward_at(
        &self,
        x: &Tensor,
        at: &ChunkInput<'_>,
        mut cache: Option<&mut KvCache>,
        capture: &Capture,
    ) -> Result<DecoderOutput> {
        let (b, t, _) = x.dims3()?;
        let start = at.start;
        if !at.rope.len_matches(t) {
            candle_core::bail!("rotary positions do not match the chunk of {t} tokens");
        }
        let (cos, sin) = self.rope.cos_sin(&at.rope, t)?;
        // Nothing is differentiated through this pass: the cache can be
        // extended in place. (candle's fused softmax / RMSNorm / RoPE / SiLU
        // were tried here too and left out: they moved the Qwen2-VL parity
        // maps past their tolerance, see docs/bench.md.)
        let no_grad = capture.no_grad && !capture.full;
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
        let mask = self.mask(t, start, at.prefix, x.device())?;
        let mut out = DecoderOutput::default();
        let mut x = x.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = layer.input_norm.forward(&x)?;
            let split = |y: Tensor, heads: usize| {
                y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()
            };
            let mut q = split(layer.q_proj.forward(&normed)?, h)?;
            let mut k = split(layer.k_proj.forward(&normed)?, kv)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = qn.forward(&q)?;
                k = kn.forward(&k)?;
            }
            let q = Rope::apply(&q, &cos, &sin)?;
            let mut k = Rope::apply(&k, &cos, &sin)?;
            let mut v = split(layer.v_proj.forward(&normed)?, kv)?;
            if let Some(c) = cache.as_deref_mut() {
                (k, v) = c.append(l, k, v, no_grad)?;
            }
            let (k_rep, v_rep) = (repeat_kv(&k, h / kv)?, repeat_kv(&v, h / kv)?);
            let scale = cfg.variant.query_pre_attn_scalar.unwrap_or(hd as f64);
            let mut scores = (q.matmul(&k_rep.t()?.contiguous()?)? / scale.sqrt())?;
            if let Some(c) = cfg.variant.attn_softcap {
                scores = ((scores / c)?.tanh()? * c)?;
            }
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
            let attn_out = layer.o_proj.forward(&ctx)?;
            let resid_mid = match &layer.attn_out_norm {
                Some(n) => (&x + n.forward(&attn_out)?)?,
                None => (&x + &attn_out)?,
            };
            let mlp_in = layer.post_norm.forward(&resid_mid)?;
            let gate = layer.gate_proj.forward(&mlp_in)?;
            let up = layer.up_proj.forward(&mlp_in)?;
            let mut mlp = layer
                .down_proj
                .forward(&(self.mlp_act.apply(&gate)? * &up)?)?;
            if let Some(n) = &layer.mlp_out_norm {
                mlp = n.forward(&mlp)?;
            }
            x = (&resid_mid + mlp)?;
            if capture.probes.contains(&l) {
                let at_query = |y: &Tensor| -> Result<Tensor> {
                    Ok(y.i((0, t - 1))?.to_dtype(DType::F32)?.detach())
                };
                out.probes.push((
                    l,
                    LayerProbe {
                        attn: probs.i((0, .., t - 1, ..))?.to_dtype(DType::F32)?.detach(),
                        resid_mid: resid_mid.i((0, t - 1))?.detach(),
                        attn_out: attn_out.i((0, t - 1))?.detach(),
                        output: x.i((0, t - 1))?.detach(),
                        values: v.i(0)?.detach(),
                        mlp_gate_up: Some((at_query(&gate)?, at_query(&up)?)),
                    },
                ));
            }
            if capture.full {
                out.attn.push(probs);
            }
            if capture.full || capture.layer_outputs {
                out.layer_outputs.push(x.clone());
            }
            // DeepStack adds at image positions only, never at the query
            // (a text position): the layer output h^l_q above is unchanged.
            if let Some(ds) = &at.deepstack {
                if let Some(feats) = ds.layers.get(l) {
                    x = add_at_span(&x, ds.span, feats)?;
                }
            }
        }
        debug_assert!(cache.as_ref().is_none_or(|c| c.cached_positions() == total));
        out.hidden = Some(x);
        Ok(out)
    }

    /// Additive causal (and sliding-window) mask `[T, start+T]`, the first
    /// `prefix` positions seeing each other both ways, or `None` when every
    /// key is visible to every query.
    fn mask(
        &self,
        t: usize,
        start: usize,
        prefix: usize,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let total = start + t;
        let window = self.cfg.sliding_window.unwrap_or(usize::MAX);
        if t == 1 && total <= window {
            return Ok(None);
        }
        let data: Vec<f32> = (0..t)
            .flat_map(|i| {
                let qpos = start + i;
                (0..total).map(move |j| {
                    if (j < prefix && qpos < prefix) || (j <= qpos && qpos - j < window) {
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

/// `x` `[1, T, D]` with `add` `[N, D]` added to positions `span` (`N` long).
fn add_at_span(x: &Tensor, (s, e): (usize, usize), add: &Tensor) -> Result<Tensor> {
    let t = x.dim(1)?;
    if e > t || e - s != add.dim(0)? {
        candle_core::bail!(
            "DeepStack features of {} tokens do not fit the image span {s}..{e}",
            add.dim(0)?
        );
    }
    let mid = x
        .narrow(1, s, e - s)?
        .broadcast_add(&add.to_dtype(x.dtype())?.unsqueeze(0)?)?;
    let mut parts = Vec::with_capacity(3);
    if s > 0 {
        parts.push(x.narrow(1, 0, s)?);
    }
    parts.push(mid);
    if e < t {
        parts.push(x.narrow(1, e, t - e)?);
    }
    Tensor::cat(&parts, 1)
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
