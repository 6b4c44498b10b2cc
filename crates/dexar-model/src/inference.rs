//! Kernels for passes that no gradient is ever taken through (prefill, plain
//! and traced decoding, the local backward's products): candle's fused
//! operations, which have no backward, and matrix-vector products split
//! across threads (gemm runs a single-row product on one core). The
//! differentiated paths (the naive reference, training) keep the composed
//! operations of [`crate::nn`]. Each function computes what its composed
//! counterpart does, in f32 where that one does.

use candle_core::{DType, Module, Result, Tensor, D};
use rayon::prelude::*;

use crate::nn::{Linear, RmsNorm};

/// Below this many output columns per thread a split costs more than it saves.
const MIN_COLUMNS_PER_THREAD: usize = 256;

/// How many threads candle's CPU kernels use (RAYON_NUM_THREADS, else one per core).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// `x · w` for `x` `[1, K]` and `w` `[K, N]` (any strides), the columns of
/// `w` shared among candle's threads on the CPU.
pub fn row_times(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let n = w.dim(1)?;
    let threads = threads()
        .min(n / MIN_COLUMNS_PER_THREAD)
        .max(1);
    if threads == 1 || !x.device().is_cpu() || x.dim(0)? != 1 {
        return x.matmul(w);
    }
    let chunk = n.div_ceil(threads);
    let parts = (0..threads)
        .into_par_iter()
        .map(|i| {
            let start = i * chunk;
            x.matmul(&w.narrow(1, start, chunk.min(n - start))?)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 1)
}

/// [`Linear::forward`], a single row (one decoding step) split across threads.
pub fn linear(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    if rows != 1 {
        return layer.forward(x);
    }
    let y = row_times(&x.reshape((1, ()))?, &layer.weight.t()?)?;
    let y = match &layer.bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = y.dim(1)?;
    }
    y.reshape(out)
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
    use candle_core::Device;

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
    fn split_products_equal_the_plain_ones() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 300), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (1000, 300), &dev).unwrap();
        let layer = Linear {
            weight: w.clone(),
            bias: Some(Tensor::randn(0f32, 1.0, 1000, &dev).unwrap()),
        };
        let x3 = x.unsqueeze(0).unwrap();
        assert!(max_diff(&linear(&layer, &x3).unwrap(), &layer.forward(&x3).unwrap()) < 1e-4);
        // Columns of a transposed (non-contiguous) matrix as in the local backward.
        let wt = w.t().unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 1000), &dev).unwrap();
        assert!(max_diff(&row_times(&v, &w).unwrap(), &v.matmul(&w).unwrap()) < 1e-3);
        assert!(max_diff(&row_times(&x, &wt).unwrap(), &x.matmul(&wt).unwrap()) < 1e-4);
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
