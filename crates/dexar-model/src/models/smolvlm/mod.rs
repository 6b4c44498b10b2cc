//! SmolVLM (and Idefics3, the same architecture): a SigLIP vision tower run
//! on every tile of a split image and on its global view, the connector's
//! pixel shuffle (`scale_factor^2` neighbouring patches into one token) and
//! linear projection, and a LLaMA decoder (SmolLM2), dexar's instrumented one.
//! Each tile and the global view is its own block of image tokens: an image
//! region with its box on the image.

pub mod config;
pub mod processor;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use dexar_core::{Grid, ImageRegion, RegionKind, WHOLE_IMAGE};

use crate::decoder::Decoder;
use crate::models::ImageFeatures;
use crate::nn::Linear;
use crate::preprocess::Pixels;
use crate::vision::VisionTower;
pub use config::{SmolFamily, SmolVlmConfig};
pub use processor::{SmolImageProcessor, SplitPlan};

/// The connector's pixel shuffle: `[B, N, D]` (N a square) to
/// `[B, N / s^2, D * s^2]`, as transformers' `pixel_shuffle` orders it.
pub fn pixel_shuffle(x: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    let side = (n as f64).sqrt().round() as usize;
    if side * side != n || !side.is_multiple_of(s) {
        candle_core::bail!("pixel shuffle of {n} patches by {s}: not a square of whole blocks");
    }
    x.reshape((b, side, side / s, d * s))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, side / s, side / s, d * s * s))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, n / (s * s), d * s * s))
}

/// A loaded SmolVLM.
#[derive(Debug, Clone)]
pub struct SmolVlmModel {
    pub config: SmolVlmConfig,
    /// SigLIP, on whole tiles of its `image_size`.
    pub vision: VisionTower,
    pub projection: Linear,
    pub decoder: Decoder,
    pub device: Device,
    pub dtype: DType,
}

impl SmolVlmModel {
    /// Loads the weights under transformers' names (`model.vision_model.*`,
    /// `model.connector.modality_projection.proj`, `model.text_model.*`,
    /// `lm_head`), which Idefics3 and SmolVLM checkpoints share.
    pub fn load(vb: VarBuilder, config: &SmolVlmConfig) -> candle_core::Result<Self> {
        let m = vb.pp("model");
        let head_vb = super::lm_head(&vb, config.text.tie_word_embeddings)?;
        let s = config.scale_factor;
        Ok(Self {
            vision: VisionTower::load_siglip(m.pp("vision_model"), &config.vision)?,
            projection: Linear::load(
                m.pp("connector").pp("modality_projection").pp("proj"),
                config.vision.hidden_size * s * s,
                config.text.hidden_size,
                false,
            )?,
            decoder: Decoder::load(m.pp("text_model"), head_vb, &config.text)?,
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// Image tokens of `[B, 3, S, S]` frames: `[B * tokens_per_tile, D]`.
    pub fn encode_frames(&self, frames: &Tensor) -> candle_core::Result<Tensor> {
        let hidden = self
            .vision
            .last_hidden_state(&frames.to_dtype(self.dtype)?)?;
        let shuffled = pixel_shuffle(&hidden, self.config.scale_factor)?;
        let tokens = self.projection.forward(&shuffled)?;
        let (b, n, d) = tokens.dims3()?;
        tokens.reshape((b * n, d))
    }

    /// Runs the tower on preprocessed pixels (tiles cut from `pixels`, then
    /// its global view; or `pixels` alone as the global view).
    pub fn encode_pixels(&self, pixels: &Pixels) -> crate::Result<ImageFeatures> {
        let t = self.config.vision.image_size;
        let frame = |p: &Pixels| -> candle_core::Result<Tensor> {
            Tensor::from_slice(
                &p.data,
                (3, p.height as usize, p.width as usize),
                &self.device,
            )
        };
        let whole = frame(pixels)?;
        let (h, w) = (pixels.height as usize, pixels.width as usize);
        let mut frames = Vec::new();
        let (rows, cols) = match &pixels.global {
            Some(global) => {
                if h % t != 0
                    || w % t != 0
                    || (global.height as usize, global.width as usize) != (t, t)
                {
                    return Err(crate::ModelError::ImageContent(format!(
                        "{w}x{h} pixels do not split into tiles of {t}x{t} with a {t}x{t} global view; the image processor's max_image_size must be the vision tower's image_size"
                    )));
                }
                for r in 0..h / t {
                    for c in 0..w / t {
                        frames.push(whole.narrow(1, r * t, t)?.narrow(2, c * t, t)?);
                    }
                }
                frames.push(frame(global)?);
                (h / t, w / t)
            }
            None => {
                if (h, w) != (t, t) {
                    return Err(crate::ModelError::ImageContent(format!(
                        "{w}x{h} pixels are not one {t}x{t} view for the vision tower"
                    )));
                }
                frames.push(whole);
                (0, 0)
            }
        };
        Ok(self.features(&Tensor::stack(&frames, 0)?, rows, cols)?)
    }

    /// The image features of `[rows * cols + 1, 3, S, S]` frames (the tiles
    /// row by row, then the global view; one frame when `rows` is 0), as
    /// transformers' processor lays out `pixel_values`.
    pub fn features(
        &self,
        frames: &Tensor,
        rows: usize,
        cols: usize,
    ) -> candle_core::Result<ImageFeatures> {
        let n = frames.dim(0)?;
        if n != rows * cols + 1 {
            candle_core::bail!("{n} frames for {rows}x{cols} tiles and a global view");
        }
        let tokens = self.encode_frames(frames)?;
        let (layout, grid) = self.layout(rows, cols);
        Ok(ImageFeatures {
            tokens,
            grid,
            deepstack: Vec::new(),
            layout,
        })
    }

    /// The blocks of a split into `rows` x `cols` tiles (row-major) and the
    /// global view, with their boxes; and the grid of the tiles composed.
    pub fn layout(&self, rows: usize, cols: usize) -> (Vec<ImageRegion>, Grid) {
        let g = self.config.tile_grid_side();
        let n = g * g;
        let grid = Grid::new(g, g);
        let mut layout = Vec::with_capacity(rows * cols + 1);
        for r in 0..rows {
            for c in 0..cols {
                let k = layout.len();
                layout.push(ImageRegion {
                    kind: RegionKind::Tile,
                    span: (k * n, (k + 1) * n),
                    grid,
                    bbox: [
                        c as f32 / cols as f32,
                        r as f32 / rows as f32,
                        (c + 1) as f32 / cols as f32,
                        (r + 1) as f32 / rows as f32,
                    ],
                });
            }
        }
        let k = layout.len();
        layout.push(ImageRegion {
            kind: RegionKind::Global,
            span: (k * n, (k + 1) * n),
            grid,
            bbox: WHOLE_IMAGE,
        });
        let composed = if rows == 0 {
            grid
        } else {
            Grid::new(rows * g, cols * g)
        };
        (layout, composed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_shuffle_orders_like_transformers() {
        // [1, 16, 1]: a 4x4 patch grid of values 0..16, scale 2.
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 16, 1))
            .unwrap();
        let y = pixel_shuffle(&x, 2).unwrap();
        assert_eq!(y.dims(), &[1, 4, 4]);
        // transformers: view(h, w/s, d*s) -> permute -> reshape(w/s, h/s, d*s*s) -> permute
        // token (i, j) holds rows 2i, 2i+1 of columns 2j, 2j+1 as [2i,2j], [2i,2j+1], [2i+1,2j], [2i+1,2j+1]
        let v: Vec<Vec<f32>> = y.squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(v[0], [0.0, 1.0, 4.0, 5.0]);
        assert_eq!(v[1], [2.0, 3.0, 6.0, 7.0]);
        assert_eq!(v[2], [8.0, 9.0, 12.0, 13.0]);
        assert!(pixel_shuffle(
            &Tensor::zeros((1, 12, 1), DType::F32, &Device::Cpu).unwrap(),
            2
        )
        .is_err());
    }
}
