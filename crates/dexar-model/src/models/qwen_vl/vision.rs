//! The Qwen-VL vision towers, one implementation with the differences of the
//! three generations: Qwen2-VL (LayerNorm, GELU MLP, full attention),
//! Qwen2.5-VL (RMSNorm, gated SiLU MLP, window attention with some
//! full-attention blocks), Qwen3-VL (biased patch embedding, learned position
//! embeddings interpolated to the grid, DeepStack mergers). All use 2-D
//! rotary embeddings over (row, column) and merge 2x2 patches into a token.
//!
//! candle-transformers 0.11 has a Qwen3-VL vision model, but its module is
//! private to the crate and its patch merger uses the tanh GELU where
//! transformers uses the exact one, so it is not reused.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::config::{QwenFamily, QwenVisionConfig};
use crate::nn::{softmax_last, Activation, LayerNorm, Linear, RmsNorm};

#[derive(Debug, Clone)]
enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    fn load(vb: VarBuilder, dim: usize, rms: bool) -> Result<Self> {
        Ok(if rms {
            Self::Rms(RmsNorm::load(vb, dim, 1e-6)?)
        } else {
            Self::Layer(LayerNorm::load(vb, dim, 1e-6)?)
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Layer(n) => n.forward(x),
            Self::Rms(n) => n.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
enum Mlp {
    Plain {
        fc1: Linear,
        fc2: Linear,
        act: Activation,
    },
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
        act: Activation,
    },
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Plain { fc1, fc2, act } => fc2.forward(&act.apply(&fc1.forward(x)?)?),
            Self::Gated {
                gate,
                up,
                down,
                act,
            } => down.forward(&(act.apply(&gate.forward(x)?)? * up.forward(x)?)?),
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: Linear,
    proj: Linear,
    mlp: Mlp,
}

/// LayerNorm (or RMSNorm) and a 2-layer GELU MLP over groups of merge x merge tokens.
#[derive(Debug, Clone)]
struct Merger {
    norm: Norm,
    /// Normalise the concatenated group (Qwen3-VL's DeepStack mergers) rather than each token.
    postshuffle: bool,
    fc1: Linear,
    fc2: Linear,
}

impl Merger {
    fn forward(&self, x: &Tensor, unit: usize) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let grouped = |t: Tensor| t.reshape((n / unit, unit * d));
        let x = if self.postshuffle {
            self.norm.forward(&grouped(x.clone())?)?
        } else {
            grouped(self.norm.forward(x)?)?
        };
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// A Qwen-VL vision tower.
#[derive(Debug, Clone)]
pub struct QwenVisionTower {
    cfg: QwenVisionConfig,
    family: QwenFamily,
    /// The Conv3d patch embedding as a `[D, C * T * p * p]` matrix.
    patch_weight: Tensor,
    patch_bias: Option<Tensor>,
    /// Qwen3-VL: `[side * side, D]` learned position embeddings.
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
}

/// What the tower produces for one image.
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// `[gh/m * gw/m, out_hidden]` merged tokens, row-major over the merged grid.
    pub tokens: Tensor,
    /// Qwen3-VL: one `[N, out_hidden]` tensor per DeepStack block.
    pub deepstack: Vec<Tensor>,
}

impl QwenVisionTower {
    /// `vb` points at the tower (`visual` or `model.visual`).
    pub fn load(vb: VarBuilder, cfg: &QwenVisionConfig, family: QwenFamily) -> Result<Self> {
        let d = cfg.hidden_size;
        let k = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size;
        let pe = vb.pp("patch_embed").pp("proj");
        let patch_weight = pe
            .get(
                (
                    d,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    cfg.patch_size,
                    cfg.patch_size,
                ),
                "weight",
            )?
            .reshape((d, k))?;
        let qwen3 = family == QwenFamily::Qwen3Vl;
        let rms = family == QwenFamily::Qwen25Vl;
        let act = Activation::from_name(&cfg.hidden_act).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "vision hidden_act `{}` is not supported",
                cfg.hidden_act
            ))
        })?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let b = vb.pp("blocks").pp(i);
                let m = b.pp("mlp");
                let i_size = cfg.intermediate_size;
                let mlp = match family {
                    QwenFamily::Qwen2Vl => Mlp::Plain {
                        fc1: Linear::load(m.pp("fc1"), d, i_size, true)?,
                        fc2: Linear::load(m.pp("fc2"), i_size, d, true)?,
                        act,
                    },
                    QwenFamily::Qwen25Vl => Mlp::Gated {
                        gate: Linear::load(m.pp("gate_proj"), d, i_size, true)?,
                        up: Linear::load(m.pp("up_proj"), d, i_size, true)?,
                        down: Linear::load(m.pp("down_proj"), i_size, d, true)?,
                        act,
                    },
                    QwenFamily::Qwen3Vl => Mlp::Plain {
                        fc1: Linear::load(m.pp("linear_fc1"), d, i_size, true)?,
                        fc2: Linear::load(m.pp("linear_fc2"), i_size, d, true)?,
                        act,
                    },
                };
                Ok(Block {
                    norm1: Norm::load(b.pp("norm1"), d, rms)?,
                    norm2: Norm::load(b.pp("norm2"), d, rms)?,
                    qkv: Linear::load(b.pp("attn").pp("qkv"), d, 3 * d, true)?,
                    proj: Linear::load(b.pp("attn").pp("proj"), d, d, true)?,
                    mlp,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let unit = cfg.spatial_merge_size * cfg.spatial_merge_size;
        let merger_at = |mv: VarBuilder, postshuffle: bool| -> Result<Merger> {
            let wide = d * unit;
            Ok(if qwen3 {
                Merger {
                    norm: Norm::load(mv.pp("norm"), if postshuffle { wide } else { d }, false)?,
                    postshuffle,
                    fc1: Linear::load(mv.pp("linear_fc1"), wide, wide, true)?,
                    fc2: Linear::load(mv.pp("linear_fc2"), wide, cfg.out_hidden_size, true)?,
                }
            } else {
                Merger {
                    norm: Norm::load(mv.pp("ln_q"), d, rms)?,
                    postshuffle: false,
                    fc1: Linear::load(mv.pp("mlp").pp(0), wide, wide, true)?,
                    fc2: Linear::load(mv.pp("mlp").pp(2), wide, cfg.out_hidden_size, true)?,
                }
            })
        };
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|i| merger_at(vb.pp("deepstack_merger_list").pp(i), true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_bias: if qwen3 {
                Some(pe.get(d, "bias")?)
            } else {
                None
            },
            pos_embed: match cfg.num_position_embeddings {
                Some(n) => Some(vb.pp("pos_embed").get((n, d), "weight")?),
                None => None,
            },
            merger: merger_at(vb.pp("merger"), false)?,
            deepstack,
            blocks,
            patch_weight,
            cfg: cfg.clone(),
            family,
        })
    }

    /// Runs the tower on `patches` (`[gh * gw, C * T * p * p]`, merge-block
    /// order, see the processor) of a patch grid `gh` x `gw`.
    pub fn forward(&self, patches: &Tensor, (gh, gw): (usize, usize)) -> Result<VisionOutput> {
        let cfg = &self.cfg;
        let m = cfg.spatial_merge_size;
        let unit = m * m;
        let n = gh * gw;
        let dtype = self.patch_weight.dtype();
        let device = patches.device();
        let mut x = patches.to_dtype(dtype)?.matmul(&self.patch_weight.t()?)?;
        if let Some(b) = &self.patch_bias {
            x = x.broadcast_add(b)?;
        }
        if let Some(table) = &self.pos_embed {
            x = (x + self.interpolated_positions(table, gh, gw)?)?;
        }
        let (rows, cols) = block_order_coords(gh, gw, m);
        let (mut cos, mut sin) = self.rotary(&rows, &cols, device)?;
        // Qwen2.5-VL: attention inside windows of merged tokens, the tokens
        // reordered window by window (and put back after the merger).
        let windows = match cfg.window_size {
            Some(w) => {
                let (order, bounds) = window_order(gh / m, gw / m, w / (cfg.patch_size * m));
                Some((order, bounds.iter().map(|b| b * unit).collect::<Vec<_>>()))
            }
            None => None,
        };
        if let Some((order, _)) = &windows {
            let idx = Tensor::from_vec(
                order.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                order.len(),
                device,
            )?;
            let by_unit = |t: &Tensor| -> Result<Tensor> {
                let c = t.dim(1)?;
                t.reshape((n / unit, unit, c))?
                    .index_select(&idx, 0)?
                    .reshape((n, c))
            };
            x = by_unit(&x)?;
            cos = by_unit(&cos)?;
            sin = by_unit(&sin)?;
        }
        let whole = vec![0, n];
        let mut deepstack = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = match &windows {
                Some((_, bounds)) if !cfg.fullatt_block_indexes.contains(&i) => bounds,
                _ => &whole,
            };
            let h = self.attention(block, &block.norm1.forward(&x)?, &cos, &sin, segments)?;
            x = (x + h)?;
            x = (&x + block.mlp.forward(&block.norm2.forward(&x)?)?)?;
            if let Some(k) = cfg.deepstack_visual_indexes.iter().position(|&j| j == i) {
                deepstack.push(self.deepstack[k].forward(&x, unit)?);
            }
        }
        let mut tokens = self.merger.forward(&x, unit)?;
        if let Some((order, _)) = &windows {
            let mut back = vec![0u32; order.len()];
            for (pos, &orig) in order.iter().enumerate() {
                back[orig] = pos as u32;
            }
            tokens = tokens.index_select(&Tensor::from_vec(back, order.len(), device)?, 0)?;
        }
        // Merged tokens come in merge-block order, which is row-major over the merged grid.
        Ok(VisionOutput { tokens, deepstack })
    }

    fn attention(
        &self,
        b: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[usize],
    ) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let heads = self.cfg.num_heads;
        let hd = d / heads;
        let qkv = b.qkv.forward(x)?.reshape((n, 3, heads, hd))?;
        let rope = |t: Tensor| -> Result<Tensor> {
            // [n, H, hd], rotated in f32 like transformers
            let tf = t.to_dtype(DType::F32)?;
            let x1 = tf.narrow(D::Minus1, 0, hd / 2)?;
            let x2 = tf.narrow(D::Minus1, hd / 2, hd / 2)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            let (c, s) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
            (tf.broadcast_mul(&c)? + rotated.broadcast_mul(&s)?)?.to_dtype(t.dtype())
        };
        let q = rope(qkv.narrow(1, 0, 1)?.squeeze(1)?)?;
        let k = rope(qkv.narrow(1, 1, 1)?.squeeze(1)?)?;
        let v = qkv.narrow(1, 2, 1)?.squeeze(1)?;
        let scale = (hd as f64).powf(-0.5);
        let mut outs = Vec::with_capacity(segments.len());
        for w in segments.windows(2) {
            let (s, len) = (w[0], w[1] - w[0]);
            let heads_first = |t: &Tensor| t.narrow(0, s, len)?.transpose(0, 1)?.contiguous();
            let (qs, ks, vs) = (heads_first(&q)?, heads_first(&k)?, heads_first(&v)?);
            let probs = softmax_last(&(qs.matmul(&ks.t()?)? * scale)?)?;
            outs.push(probs.matmul(&vs)?.transpose(0, 1)?.reshape((len, d))?);
        }
        b.proj.forward(&Tensor::cat(&outs, 0)?)
    }

    /// `(cos, sin)`, `[N, hd]` f32: the first half of each head rotates by the
    /// row (hd/4 frequencies) then the column, the second half repeats it.
    fn rotary(&self, rows: &[usize], cols: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.hidden_size / self.cfg.num_heads;
        let dim = hd / 2;
        let inv: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / self.cfg.rope_theta.powf(2.0 * i as f64 / dim as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, dim / 2), device)?;
        let col = |v: &[usize]| {
            Tensor::from_vec(
                v.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                (v.len(), 1),
                device,
            )
        };
        let fr = col(rows)?.broadcast_mul(&inv)?;
        let fc = col(cols)?.broadcast_mul(&inv)?;
        let half = Tensor::cat(&[&fr, &fc], D::Minus1)?;
        let angles = Tensor::cat(&[&half, &half], D::Minus1)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Qwen3-VL: the learned square grid of position embeddings resampled
    /// bilinearly (corners aligned) to the `gh` x `gw` patch grid, in
    /// merge-block order.
    fn interpolated_positions(&self, table: &Tensor, gh: usize, gw: usize) -> Result<Tensor> {
        let side = (table.dim(0)? as f64).sqrt().round() as usize;
        let taps = |i: usize, size: usize| -> [(usize, f32); 2] {
            let src = i as f32 * (side - 1) as f32 / (size.max(2) - 1) as f32;
            let f = src.floor();
            let lo = (f as usize).min(side - 1);
            let hi = (f as usize + 1).min(side - 1);
            [
                (lo, (1.0 - (src - f).abs()).max(0.0)),
                (hi, (1.0 - (src - f - 1.0).abs()).max(0.0)),
            ]
        };
        let (rows, cols) = block_order_coords(gh, gw, self.cfg.spatial_merge_size);
        let n = rows.len();
        let mut index = Vec::with_capacity(4 * n);
        let mut weight = Vec::with_capacity(4 * n);
        for (&r, &c) in rows.iter().zip(&cols) {
            for (hr, wr) in taps(r, gh) {
                for (hc, wc) in taps(c, gw) {
                    index.push((hr * side + hc) as u32);
                    weight.push(wr * wc);
                }
            }
        }
        let device = table.device();
        let picked = table.index_select(&Tensor::from_vec(index, 4 * n, device)?, 0)?;
        let weight = Tensor::from_vec(weight, (4 * n, 1), device)?.to_dtype(table.dtype())?;
        picked.broadcast_mul(&weight)?.reshape((n, 4, ()))?.sum(1)
    }

    pub fn family(&self) -> QwenFamily {
        self.family
    }
}

/// (row, column) of every patch, listed in merge-block order.
fn block_order_coords(gh: usize, gw: usize, m: usize) -> (Vec<usize>, Vec<usize>) {
    let (mut rows, mut cols) = (Vec::with_capacity(gh * gw), Vec::with_capacity(gh * gw));
    for br in 0..gh / m {
        for bc in 0..gw / m {
            for ir in 0..m {
                for ic in 0..m {
                    rows.push(br * m + ir);
                    cols.push(bc * m + ic);
                }
            }
        }
    }
    (rows, cols)
}

/// Qwen2.5-VL's windows over a `mh` x `mw` grid of merged tokens, windows of
/// `side` x `side` (the last ones cut short): the merged tokens in window
/// order, and the window boundaries in merged tokens.
fn window_order(mh: usize, mw: usize, side: usize) -> (Vec<usize>, Vec<usize>) {
    let side = side.max(1);
    let mut order = Vec::with_capacity(mh * mw);
    let mut bounds = vec![0];
    for wr in 0..mh.div_ceil(side) {
        for wc in 0..mw.div_ceil(side) {
            let before = order.len();
            for r in wr * side..((wr + 1) * side).min(mh) {
                for c in wc * side..((wc + 1) * side).min(mw) {
                    order.push(r * mw + c);
                }
            }
            bounds.push(bounds.last().copied().unwrap_or(0) + (order.len() - before));
        }
    }
    (order, bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_grid_once() {
        let (order, bounds) = window_order(5, 7, 2);
        assert_eq!(order.len(), 35);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..35).collect::<Vec<_>>());
        assert_eq!(&order[..4], &[0, 1, 7, 8]);
        assert_eq!(bounds.len(), 3 * 4 + 1);
        assert_eq!(&bounds[..5], &[0, 4, 8, 12, 14]);
    }
}
