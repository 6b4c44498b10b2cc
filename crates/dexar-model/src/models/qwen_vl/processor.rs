//! The Qwen2-VL image processor (also Qwen2.5-VL's and Qwen3-VL's), as
//! transformers' `Qwen2VLImageProcessor`: `smart_resize` to multiples of
//! patch x merge size within `min_pixels..=max_pixels` (bicubic), rescale,
//! normalise with the file's mean and std; then, for the vision tower, the
//! still image is repeated over the temporal patch and cut into patches in
//! merge-block order.

use image::{imageops::FilterType, DynamicImage, RgbImage};
use serde_json::Value;

use crate::preprocess::Pixels;

/// `preprocessor_config.json` of a Qwen-VL checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenImageProcessor {
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub min_pixels: u64,
    pub max_pixels: u64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub filter: FilterType,
}

/// Why an image cannot be processed, or a processor setting is invalid.
pub type ProcessorError = String;

impl Default for QwenImageProcessor {
    /// transformers' defaults (OpenAI CLIP statistics, 14-pixel patches).
    fn default() -> Self {
        Self {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
            filter: FilterType::CatmullRom,
        }
    }
}

impl QwenImageProcessor {
    /// Reads a `preprocessor_config.json`: `min_pixels` / `max_pixels` win
    /// over `size` {`shortest_edge`, `longest_edge`}, as in transformers.
    pub fn from_json(text: &str) -> Result<Self, ProcessorError> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        let mut p = Self::default();
        let uint = |key: &str, default: u64| -> Result<u64, ProcessorError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .ok_or_else(|| format!("`{key}` must be a non-negative integer")),
            }
        };
        let flag = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(true);
        p.patch_size = uint("patch_size", 14)? as usize;
        p.merge_size = uint("merge_size", 2)? as usize;
        p.temporal_patch_size = uint("temporal_patch_size", 2)? as usize;
        if let Some(size) = v.get("size").filter(|s| !s.is_null()) {
            let edge =
                |a: &str, b: &str| size.get(a).or_else(|| size.get(b)).and_then(Value::as_u64);
            if let Some(n) = edge("shortest_edge", "min_pixels") {
                p.min_pixels = n;
            }
            if let Some(n) = edge("longest_edge", "max_pixels") {
                p.max_pixels = n;
            }
        }
        p.min_pixels = uint("min_pixels", p.min_pixels)?;
        p.max_pixels = uint("max_pixels", p.max_pixels)?;
        p.do_resize = flag("do_resize");
        p.do_rescale = flag("do_rescale");
        p.do_normalize = flag("do_normalize");
        if let Some(f) = v.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale_factor = f as f32;
        }
        p.filter = match v.get("resample").and_then(Value::as_u64) {
            Some(0) => FilterType::Nearest,
            Some(2) => FilterType::Triangle,
            Some(1) => FilterType::Lanczos3,
            _ => FilterType::CatmullRom,
        };
        for (key, out) in [("image_mean", &mut p.mean), ("image_std", &mut p.std)] {
            match v.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) if a.len() == 3 => {
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or(format!("`{key}` must hold numbers"))? as f32;
                    }
                }
                Some(_) => return Err(format!("`{key}` must be a list of 3 numbers")),
            }
        }
        if p.std.contains(&0.0) {
            return Err("`image_std` must not contain 0".into());
        }
        if p.patch_size == 0 || p.merge_size == 0 || p.temporal_patch_size == 0 {
            return Err(
                "`patch_size`, `merge_size` and `temporal_patch_size` must be positive".into(),
            );
        }
        p.check_pixels()?;
        Ok(p)
    }

    /// The same processor with `max_pixels` lowered (or raised) to `max`.
    pub fn with_max_pixels(&self, max: u64) -> Result<Self, ProcessorError> {
        let p = Self {
            max_pixels: max,
            ..self.clone()
        };
        p.check_pixels()?;
        Ok(p)
    }

    fn check_pixels(&self) -> Result<(), ProcessorError> {
        if self.min_pixels > self.max_pixels {
            return Err(format!(
                "min_pixels ({}) is larger than max_pixels ({}); no image size satisfies both",
                self.min_pixels, self.max_pixels
            ));
        }
        Ok(())
    }

    /// Side of one merged token in pixels (patch x merge size): the heatmap cell.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// transformers' `smart_resize`: the (height, width) an image of
    /// `height` x `width` is resized to.
    pub fn smart_resize(&self, height: u32, width: u32) -> Result<(u32, u32), ProcessorError> {
        let (h, w) = (height as f64, width as f64);
        let f = self.factor() as f64;
        if h.max(w) / h.min(w) > 200.0 {
            return Err(format!(
                "its aspect ratio {:.0}:1 is over the 200:1 the Qwen-VL processor accepts",
                h.max(w) / h.min(w)
            ));
        }
        // Python's round() rounds halves to even.
        let mut hb = (h / f).round_ties_even() * f;
        let mut wb = (w / f).round_ties_even() * f;
        if hb * wb > self.max_pixels as f64 {
            let beta = (h * w / self.max_pixels as f64).sqrt();
            hb = f.max((h / beta / f).floor() * f);
            wb = f.max((w / beta / f).floor() * f);
        } else if hb * wb < self.min_pixels as f64 {
            let beta = (self.min_pixels as f64 / (h * w)).sqrt();
            hb = (h * beta / f).ceil() * f;
            wb = (w * beta / f).ceil() * f;
        }
        if hb < f || wb < f {
            return Err(format!(
                "{width}x{height} is too small for one merged patch of {0}x{0} pixels",
                self.factor()
            ));
        }
        Ok((hb as u32, wb as u32))
    }

    /// The (height, width) the model sees an image of `width` x `height` at.
    pub fn output_size(&self, width: u32, height: u32) -> Result<(u32, u32), ProcessorError> {
        if self.do_resize {
            return self.smart_resize(height, width);
        }
        let f = self.factor() as u32;
        if height < f || width < f || !height.is_multiple_of(f) || !width.is_multiple_of(f) {
            return Err(format!(
                "{width}x{height} is not made of whole merged patches of {f}x{f} pixels (and do_resize is false)"
            ));
        }
        Ok((height, width))
    }

    /// The RGB pixels the model sees (resized): the picture heatmaps are drawn over.
    pub fn model_view(&self, image: &DynamicImage) -> Result<RgbImage, ProcessorError> {
        let rgb = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        let (rh, rw) = self.output_size(w, h)?;
        Ok(if (rw, rh) != (w, h) {
            image::imageops::resize(&rgb, rw, rh, self.filter)
        } else {
            rgb
        })
    }

    /// Channel-first normalised pixels `[3, H, W]` of the model's view.
    pub fn preprocess(&self, image: &DynamicImage) -> Result<Pixels, ProcessorError> {
        let rescale = self.do_rescale.then_some(self.rescale_factor);
        let mean_std = self.do_normalize.then_some((self.mean, self.std));
        Ok(Pixels::from_rgb(
            &self.model_view(image)?,
            rescale,
            mean_std,
        ))
    }

    /// The vision tower's input: `[gh * gw, 3 * T * p * p]` patches of `pixels`
    /// (the frame repeated `T` times), rows in merge-block order (block row,
    /// block column, row and column inside the block), columns ordered
    /// (channel, frame, y, x); and the patch grid (gh, gw).
    pub fn patchify(&self, pixels: &Pixels) -> Result<(Vec<f32>, (usize, usize)), ProcessorError> {
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (h, w) = (pixels.height as usize, pixels.width as usize);
        if h % (p * m) != 0 || w % (p * m) != 0 || h == 0 || w == 0 {
            return Err(format!(
                "pixels of {w}x{h} are not made of whole merged patches of {0}x{0}",
                p * m
            ));
        }
        let (gh, gw) = (h / p, w / p);
        let row = 3 * t * p * p;
        let mut out = Vec::with_capacity(gh * gw * row);
        let plane = h * w;
        for br in 0..gh / m {
            for bc in 0..gw / m {
                for ir in 0..m {
                    for ic in 0..m {
                        let (py0, px0) = ((br * m + ir) * p, (bc * m + ic) * p);
                        for c in 0..3 {
                            for _ in 0..t {
                                for y in 0..p {
                                    let at = c * plane + (py0 + y) * w + px0;
                                    out.extend_from_slice(&pixels.data[at..at + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok((out, (gh, gw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> QwenImageProcessor {
        QwenImageProcessor {
            patch_size: 4,
            min_pixels: 256,
            max_pixels: 2560,
            ..QwenImageProcessor::default()
        }
    }

    #[test]
    fn smart_resize_follows_transformers() {
        let p = tiny();
        assert_eq!(
            p.smart_resize(32, 48).unwrap(),
            (32, 48),
            "valid sizes stay"
        );
        assert_eq!(p.smart_resize(41, 57).unwrap(), (40, 56));
        // 20 / 8 = 2.5 rounds to even (2): 16x16 = 256 = min_pixels
        assert_eq!(p.smart_resize(20, 20).unwrap(), (16, 16));
        assert_eq!(
            p.smart_resize(90, 120).unwrap(),
            (40, 56),
            "over max_pixels"
        );
        assert_eq!(
            p.smart_resize(3, 3).unwrap(),
            (16, 16),
            "under min_pixels: enlarged"
        );
        let e = p.smart_resize(1, 300).unwrap_err();
        assert!(e.contains("aspect ratio 300:1"), "{e}");
        let no_min = QwenImageProcessor {
            min_pixels: 0,
            ..tiny()
        };
        let e = no_min.smart_resize(3, 3).unwrap_err();
        assert_eq!(e, "3x3 is too small for one merged patch of 8x8 pixels");
    }

    #[test]
    fn settings_are_checked() {
        let e = QwenImageProcessor::from_json(r#"{"min_pixels": 5000, "max_pixels": 4000}"#)
            .unwrap_err();
        assert!(
            e.contains("min_pixels (5000) is larger than max_pixels (4000)"),
            "{e}"
        );
        let p = QwenImageProcessor::from_json(r#"{"size": {"shortest_edge": 10, "longest_edge": 20}, "max_pixels": 30, "patch_size": 16}"#).unwrap();
        assert_eq!((p.min_pixels, p.max_pixels, p.factor()), (10, 30, 32));
        assert!(p
            .with_max_pixels(5)
            .unwrap_err()
            .contains("larger than max_pixels (5)"));
        assert_eq!(p.with_max_pixels(500).unwrap().max_pixels, 500);
    }

    #[test]
    fn patches_come_in_merge_block_order() {
        let p = QwenImageProcessor {
            patch_size: 1,
            merge_size: 2,
            temporal_patch_size: 2,
            ..tiny()
        };
        // 3 channels of a 2x4 image, pixel value = 100 c + 10 y + x
        let data = (0..3)
            .flat_map(|c| {
                (0..2).flat_map(move |y| (0..4).map(move |x| (100 * c + 10 * y + x) as f32))
            })
            .collect();
        let (patches, grid) = p
            .patchify(&Pixels {
                data,
                height: 2,
                width: 4,
                global: None,
            })
            .unwrap();
        assert_eq!(grid, (2, 4));
        let firsts: Vec<f32> = patches.chunks(6).map(|r| r[0]).collect();
        assert_eq!(firsts, [0., 1., 10., 11., 2., 3., 12., 13.]);
        assert_eq!(&patches[..6], &[0., 0., 100., 100., 200., 200.]);
    }
}
