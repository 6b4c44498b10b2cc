//! Qwen2-VL, Qwen2.5-VL and Qwen3-VL: the vision tower, the image processor,
//! the configuration, and the multimodal rotary positions of a prompt. The
//! decoder is dexar's instrumented one with the Qwen variant flags.

pub mod config;
pub mod processor;
pub mod vision;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dexar_core::Grid;

use crate::decoder::Decoder;
use crate::models::ImageFeatures;
use crate::preprocess::Pixels;
pub use config::{QwenFamily, QwenVisionConfig, QwenVlConfig};
pub use processor::QwenImageProcessor;
pub use vision::QwenVisionTower;

/// A loaded Qwen-VL model.
#[derive(Debug, Clone)]
pub struct QwenVlModel {
    pub config: QwenVlConfig,
    pub vision: QwenVisionTower,
    pub decoder: Decoder,
    pub device: Device,
    pub dtype: DType,
}

impl QwenVlModel {
    /// Loads the weights under either name layout: the original
    /// (`model.*`, `visual.*`, `lm_head`) or transformers'
    /// (`model.language_model.*`, `model.visual.*`, `lm_head`).
    pub fn load(vb: VarBuilder, config: &QwenVlConfig) -> candle_core::Result<Self> {
        let (lm, visual) = if vb.contains_tensor("model.language_model.embed_tokens.weight") {
            ("model.language_model", "model.visual")
        } else {
            ("model", "visual")
        };
        let head_vb = super::lm_head(&vb, config.text.tie_word_embeddings)?;
        Ok(Self {
            vision: QwenVisionTower::load(vb.pp(visual), &config.vision, config.family)?,
            decoder: Decoder::load(vb.pp(lm), head_vb, &config.text)?,
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// Runs the tower on vision-tower patches (`[gh * gw, 3 * T * p * p]` f32,
    /// as the processor's `patchify` lays them out, or transformers'
    /// `pixel_values`) of a `gh` x `gw` patch grid.
    pub fn encode_patches(
        &self,
        patches: &[f32],
        (gh, gw): (usize, usize),
    ) -> candle_core::Result<ImageFeatures> {
        let m = self.config.vision.spatial_merge_size;
        if gh % m != 0 || gw % m != 0 || gh * gw == 0 || !patches.len().is_multiple_of(gh * gw) {
            candle_core::bail!(
                "{} patch values do not make a {gh}x{gw} patch grid of whole merge blocks",
                patches.len()
            );
        }
        let t = Tensor::from_slice(patches, (gh * gw, patches.len() / (gh * gw)), &self.device)?;
        let out = self.vision.forward(&t, (gh, gw))?;
        Ok(ImageFeatures {
            tokens: out.tokens.to_dtype(self.dtype)?,
            grid: Grid::new(gh / m, gw / m),
            deepstack: out.deepstack,
            layout: Vec::new(),
        })
    }

    /// Runs the tower on preprocessed pixels.
    pub fn encode_pixels(
        &self,
        pixels: &Pixels,
        processor: &QwenImageProcessor,
    ) -> crate::Result<ImageFeatures> {
        let (patches, grid) = processor
            .patchify(pixels)
            .map_err(crate::ModelError::ImageContent)?;
        Ok(self.encode_patches(&patches, grid)?)
    }
}

/// M-RoPE positions (temporal, height, width) of a sequence of `len` tokens
/// whose `image_span` holds an image of merged grid `grid`, and the rope
/// delta of the text after it: text before the image counts 0, 1, ...; the
/// image's token at (row, col) sits at (s, s + row, s + col) for `s` the
/// span start; text after it resumes at `s + max(rows, cols)`.
pub fn mrope_positions(len: usize, (s, e): (usize, usize), grid: Grid) -> (Vec<[u32; 3]>, i64) {
    let mut pos = Vec::with_capacity(len);
    for j in 0..s.min(len) {
        pos.push([j as u32; 3]);
    }
    for k in 0..(e - s) {
        let (r, c) = (k / grid.width.max(1), k % grid.width.max(1));
        pos.push([s as u32, (s + r) as u32, (s + c) as u32]);
    }
    let resume = s + grid.height.max(grid.width);
    for j in e..len {
        pos.push([(resume + j - e) as u32; 3]);
    }
    let max = pos
        .iter()
        .flat_map(|p| p.iter())
        .copied()
        .max()
        .unwrap_or(0) as i64;
    (pos, max + 1 - len as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_an_image_in_a_prompt() {
        // 2 text tokens, a 2x3 image, 2 text tokens
        let (pos, delta) = mrope_positions(10, (2, 8), Grid::new(2, 3));
        assert_eq!(&pos[..3], &[[0, 0, 0], [1, 1, 1], [2, 2, 2]]);
        assert_eq!(pos[7], [2, 3, 4]);
        assert_eq!(&pos[8..], &[[5, 5, 5], [6, 6, 6]]);
        assert_eq!(delta, 7 - 10);
    }
}
