//! Kernels for passes that no gradient is ever taken through (prefill, plain
//! and traced decoding): candle's fused operations, which have no backward.
//! The differentiated paths (the naive reference, training) keep the
//! composed operations of [`crate::nn`]. Each function computes what its
//! composed counterpart does, in f32 where that one does.

use candle_core::{DType, Result, Tensor, D};

use crate::nn::RmsNorm;

/// How many threads candle's CPU kernels use (RAYON_NUM_THREADS, else one per core).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// [`RmsNorm::forward`] with candle's fused kernel, computed in f32.
pub fn rms_norm(norm: &RmsNorm, x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    if dtype == DType::F32 && norm.weight.dtype() == DType::F32 {
        return candle_nn::ops::rms_norm(&xf, &norm.weight, norm.eps as f32);
    }
    // As the composed norm: normalised in f32, scaled in the model's dtype.
    let ones = Tensor::ones(norm.weight.dims1()?, DType::F32, x.device())?;
    let normed = candle_nn::ops::rms_norm(&xf, &ones, norm.eps as f32)?;
    normed.to_dtype(dtype)?.broadcast_mul(&norm.weight)
}

/// [`crate::nn::softmax_last`] with candle's fused kernel, computed in f32.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(dtype)
}

/// `silu(gate) ⊙ up`.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// The rotary embedding (`rotate_half` convention) of `x` `[B, H, T, hd]`
/// with `cos`, `sin` `[T, hd / 2]` (f32), computed in f32.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    candle_nn::rotary_emb::rope(&xf, cos, sin)?.to_dtype(x.dtype())
}

/// The first half of the last dimension of `[T, hd]` angles, contiguous: the
/// two halves of rotary tables are equal.
pub fn half_table(table: &Tensor) -> Result<Tensor> {
    let hd = table.dim(D::Minus1)?;
    table.narrow(D::Minus1, 0, hd / 2)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_kernels_equal_the_composed_ones() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 64), &dev).unwrap();
        let norm = RmsNorm {
            weight: Tensor::randn(0f32, 1.0, 64, &dev).unwrap(),
            eps: 1e-6,
        };
        assert!(max_diff(&rms_norm(&norm, &x).unwrap(), &norm.forward(&x).unwrap()) < 1e-5);
        assert!(
            max_diff(
                &softmax_last(&x).unwrap(),
                &crate::nn::softmax_last(&x).unwrap()
            ) < 1e-6
        );
        let gate = Tensor::randn(0f32, 1.0, (3, 7), &dev).unwrap();
        let up = Tensor::randn(0f32, 1.0, (3, 7), &dev).unwrap();
        let composed = crate::nn::Activation::Silu
            .apply(&gate)
            .unwrap()
            .mul(&up)
            .unwrap();
        assert!(max_diff(&silu_mul(&gate, &up).unwrap(), &composed) < 1e-6);
    }
}
