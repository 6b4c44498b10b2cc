//! Differentiable building blocks. Everything here is composed from candle
//! primitives that have a backward pass (candle-nn's fused softmax / norms do
//! not), so one model definition serves inference, the naive autograd
//! reference and training.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// `y = x W^T (+ b)`, weights in the checkpoint's `[out, in]` layout.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.t()?;
        let y = match x.dims() {
            [b, t, _] => x.reshape((b * t, ()))?.matmul(&w)?.reshape((*b, *t, ()))?,
            _ => x.matmul(&w)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// RMSNorm: `w ⊙ x / sqrt(mean(x²) + eps)`, computed in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    /// Gemma's RMSNorm, `(1 + w) ⊙ x / sqrt(mean(x²) + eps)`: the checkpoint
    /// stores `w`; the gain `1 + w` (computed in f32) is what is kept, so the
    /// forward pass and the local backward need no variant of their own.
    pub fn load_one_plus(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        let w = vb.get(dim, "weight")?;
        let weight = (w.to_dtype(DType::F32)? + 1.0)?.to_dtype(w.dtype())?;
        Ok(Self { weight, eps })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

/// LayerNorm with affine weight and bias, computed in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let centred = xf.broadcast_sub(&xf.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Activation functions named as in transformers' configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU, transformers' "gelu".
    Gelu,
    /// Tanh-approximated GELU ("gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
    /// `x · σ(1.702 x)`, CLIP's "quick_gelu".
    QuickGelu,
    Silu,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gelu => x.gelu_erf(),
            Self::GeluTanh => x.gelu(),
            Self::QuickGelu => x.mul(&sigmoid(&(x * 1.702)?)?),
            Self::Silu => x.mul(&sigmoid(x)?),
        }
    }

    /// The derivative `f'(x)`, elementwise (f32 vectors of the local backward).
    pub fn derivative(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => {
                // σ(x) (1 + x (1 − σ(x)))
                let sig = sigmoid(x)?;
                sig.mul(&((x * sig.affine(-1.0, 1.0)?)? + 1.0)?)
            }
            Self::GeluTanh => {
                // f = x/2 (1 + tanh u), u = √(2/π) (x + 0.044715 x³):
                // f' = (1 + tanh u)/2 + x/2 (1 − tanh² u) √(2/π) (1 + 3 · 0.044715 x²)
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let x2 = x.sqr()?;
                let u = ((x * &x2)? * 0.044715 + x)? * c;
                let th = u?.tanh()?;
                let du = ((x2 * (3.0 * 0.044715))? + 1.0)? * c;
                let sech2 = th.sqr()?.affine(-1.0, 1.0)?;
                th.affine(0.5, 0.5)? + ((x * 0.5)? * sech2)?.mul(&du?)?
            }
            Self::Gelu | Self::QuickGelu => candle_core::bail!(
                "the local backward has no derivative of {self:?} as a decoder MLP activation"
            ),
        }
    }
}

/// Logistic sigmoid composed from differentiable primitives.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Softmax over the last dimension, composed (has a backward pass), in f32.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let max = xf.max_keepdim(D::Minus1)?.detach();
    let e = xf.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn activation_derivatives_match_finite_differences() {
        let xs: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.1).collect();
        let t = |v: &[f64]| Tensor::new(v, &Device::Cpu).unwrap();
        let h = 1e-5;
        for act in [Activation::Silu, Activation::GeluTanh] {
            let shifted = |d: f64| xs.iter().map(|x| x + d).collect::<Vec<_>>();
            let up: Vec<f64> = act.apply(&t(&shifted(h))).unwrap().to_vec1().unwrap();
            let down: Vec<f64> = act.apply(&t(&shifted(-h))).unwrap().to_vec1().unwrap();
            let exact: Vec<f64> = act.derivative(&t(&xs)).unwrap().to_vec1().unwrap();
            for (i, e) in exact.iter().enumerate() {
                let numeric = (up[i] - down[i]) / (2.0 * h);
                assert!(
                    (e - numeric).abs() < 1e-6,
                    "{act:?} at {}: {e} vs {numeric}",
                    xs[i]
                );
            }
        }
        assert!(Activation::Gelu.derivative(&t(&xs)).is_err());
    }
}
