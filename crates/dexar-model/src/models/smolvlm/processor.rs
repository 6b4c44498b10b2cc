//! SmolVLM's image processor (transformers' `SmolVLMImageProcessor`, the
//! same as Idefics3's): resize so the longest edge is `size.longest_edge`,
//! resize again up to whole tiles of `max_image_size.longest_edge`, cut the
//! tiles row by row and add the whole image downscaled to one tile (the
//! global view); an image of one tile or less is the global view alone. Then
//! rescale and normalise. Also the prompt text the processor puts in place of
//! `<image>` for such a split.

use image::{DynamicImage, RgbImage};
use serde_json::Value;

use crate::preprocess::{ImageProcessor, Pixels};

/// transformers' `MAX_IMAGE_SIZE`: the longest side after the first resize.
const MAX_IMAGE_SIZE: u32 = 4096;

/// The settings of `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SmolImageProcessor {
    /// Rescaling, normalisation and the resampling filter (resample 1 is
    /// Lanczos, SmolVLM's default).
    pub base: ImageProcessor,
    pub do_resize: bool,
    /// `size.longest_edge`.
    pub longest_edge: u32,
    /// `max_image_size.longest_edge`: the side of a tile and of the global view.
    pub tile: u32,
    pub do_image_splitting: bool,
}

/// How an image is cut: the size it is resized to and its tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    /// Width and height after the first resize (longest edge).
    pub first: (u32, u32),
    /// Width and height of the image the tiles are cut from.
    pub width: u32,
    pub height: u32,
    /// Tiles per column and per row; 0 and 0 when the image is the global view alone.
    pub rows: usize,
    pub cols: usize,
}

impl SmolImageProcessor {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        let Some(map) = v.as_object() else {
            return Err("the file must hold a JSON object of settings".into());
        };
        let edge = |key: &str, default: u32| -> Result<u32, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .get("longest_edge")
                    .and_then(Value::as_u64)
                    .filter(|n| (1..=MAX_IMAGE_SIZE as u64).contains(n))
                    .map(|n| n as u32)
                    .ok_or(format!(
                        "`{key}` must be {{\"longest_edge\": N}} with N between 1 and {MAX_IMAGE_SIZE}"
                    )),
            }
        };
        let flag = |key: &str, default: bool| match map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("`{key}` must be true or false")),
        };
        // The fields shared with CLIP's processor; the sizes are SmolVLM's own.
        let mut shared = map.clone();
        for key in ["size", "max_image_size", "do_center_crop", "crop_size"] {
            shared.remove(key);
        }
        if !shared.contains_key("resample") {
            shared.insert("resample".into(), Value::from(1));
        }
        let base = ImageProcessor::from_json(&Value::Object(shared).to_string(), 1)?;
        Ok(Self {
            base: ImageProcessor {
                do_center_crop: false,
                ..base
            },
            do_resize: flag("do_resize", true)?,
            longest_edge: edge("size", 4 * 364)?,
            tile: edge("max_image_size", 364)?,
            do_image_splitting: flag("do_image_splitting", true)?,
        })
    }

    /// How an image of `w` x `h` is resized and cut (transformers'
    /// `resize`, `resize_for_vision_encoder` and `split_images`).
    pub fn plan(&self, w: u32, h: u32) -> SplitPlan {
        let (mut height, mut width) = (h.max(1), w.max(1));
        if self.do_resize {
            (height, width) = rescale_to_max_len(height, width, self.longest_edge);
            (height, width) = scale_below_upper_bound(height, width, MAX_IMAGE_SIZE);
        }
        let first = (width, height);
        let t = self.tile;
        if !self.do_image_splitting {
            return SplitPlan {
                first,
                width: t,
                height: t,
                rows: 0,
                cols: 0,
            };
        }
        (height, width) = whole_tiles(height, width, t);
        let (rows, cols) = if height > t || width > t {
            (
                ((height - t) / t + 1) as usize,
                ((width - t) / t + 1) as usize,
            )
        } else {
            (0, 0)
        };
        SplitPlan {
            first,
            width,
            height,
            rows,
            cols,
        }
    }

    /// The RGB pixels the tiles are cut from (the global view alone: the
    /// picture it is resized from): heatmaps are drawn over them.
    pub fn model_view(&self, image: &DynamicImage) -> RgbImage {
        let rgb = image.to_rgb8();
        let plan = self.plan(rgb.width(), rgb.height());
        let first = self.resized(&rgb, plan.first.0, plan.first.1);
        self.resized(&first, plan.width, plan.height)
    }

    /// `img` resized to `w` x `h` with the processor's filter; the same
    /// picture when it already has that size (as PIL returns a copy).
    fn resized(&self, img: &RgbImage, w: u32, h: u32) -> RgbImage {
        if img.dimensions() == (w, h) {
            img.clone()
        } else {
            image::imageops::resize(img, w, h, self.base.filter)
        }
    }

    /// Normalised pixels of the tiles' picture, with the global view beside
    /// them when the image is split.
    pub fn preprocess(&self, image: &DynamicImage) -> Pixels {
        let view = self.model_view(image);
        let plan = self.plan(image.width(), image.height());
        let rescale = self.base.do_rescale.then_some(self.base.rescale_factor);
        let mean_std = self
            .base
            .do_normalize
            .then_some((self.base.mean, self.base.std));
        let mut pixels = Pixels::from_rgb(&view, rescale, mean_std);
        if plan.rows > 0 {
            let global = self.resized(&view, self.tile, self.tile);
            pixels.global = Some(Box::new(Pixels::from_rgb(&global, rescale, mean_std)));
        }
        pixels
    }
}

/// Rows and columns of the tiles of pixels as [`SmolImageProcessor::preprocess`]
/// lays them out (0 and 0 for the global view alone).
pub fn tiles_of(pixels: &Pixels, tile: u32) -> (usize, usize) {
    if pixels.global.is_none() || tile == 0 {
        return (0, 0);
    }
    (
        (pixels.height / tile) as usize,
        (pixels.width / tile) as usize,
    )
}

/// transformers' `_resize_output_size_rescale_to_max_len` (min_len 1): the
/// longest edge becomes `max_len`, the other keeps the aspect ratio, rounded
/// down and then up to an even number.
pub fn rescale_to_max_len(height: u32, width: u32, max_len: u32) -> (u32, u32) {
    let aspect = width as f64 / height as f64;
    let even = |n: u32| n + n % 2;
    let (h, w) = if width >= height {
        (even((max_len as f64 / aspect) as u32), max_len)
    } else {
        (max_len, even((max_len as f64 * aspect) as u32))
    };
    (h.max(1), w.max(1))
}

/// transformers' `_resize_output_size_scale_below_upper_bound`.
pub fn scale_below_upper_bound(height: u32, width: u32, max_len: u32) -> (u32, u32) {
    let aspect = width as f64 / height as f64;
    let (mut h, mut w) = (height, width);
    if width >= height && width > max_len {
        w = max_len;
        h = (w as f64 / aspect) as u32;
    } else if height > width && height > max_len {
        h = max_len;
        w = (h as f64 * aspect) as u32;
    }
    (h.max(1), w.max(1))
}

/// transformers' `resize_for_vision_encoder`: both sides up to whole tiles.
pub fn whole_tiles(height: u32, width: u32, tile: u32) -> (u32, u32) {
    let aspect = width as f64 / height as f64;
    let up = |n: f64| ((n / tile as f64).ceil() as u32) * tile;
    if width >= height {
        let w = up(width as f64);
        let h = up(((w as f64 / aspect) as u32) as f64);
        (h.max(tile), w)
    } else {
        let h = up(height as f64);
        let w = up(((h as f64 * aspect) as u32) as f64);
        (h, w.max(tile))
    }
}

/// The text the processor puts in place of `<image>`: each tile's block
/// `<fake_token_around_image><row_r_col_c><image>...` row by row (a newline
/// after each row), then a blank line and the global view's block
/// `<fake_token_around_image><global-img><image>...<fake_token_around_image>`;
/// the global block alone for an image that is not split.
pub fn image_prompt(
    rows: usize,
    cols: usize,
    tokens_per_tile: usize,
    names: &PromptTokens,
) -> String {
    let image = names.image.repeat(tokens_per_tile);
    let global = format!("{}{}{image}{}", names.fake, names.global, names.fake);
    if rows == 0 || cols == 0 {
        return global;
    }
    let mut text = String::new();
    for r in 1..=rows {
        for c in 1..=cols {
            text.push_str(&format!("{}<row_{r}_col_{c}>{image}", names.fake));
        }
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&global);
    text
}

/// The special tokens of SmolVLM's image prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTokens {
    pub image: String,
    pub fake: String,
    pub global: String,
}

impl Default for PromptTokens {
    fn default() -> Self {
        Self {
            image: "<image>".into(),
            fake: "<fake_token_around_image>".into(),
            global: "<global-img>".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(longest: u32, tile: u32) -> SmolImageProcessor {
        SmolImageProcessor::from_json(&format!(
            r#"{{"size": {{"longest_edge": {longest}}}, "max_image_size": {{"longest_edge": {tile}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn sizes_follow_transformers() {
        // SmolVLM-256M: 2048 / 512. A 640x480 picture: 2048x1536, then whole tiles 2048x1536.
        let p = processor(2048, 512);
        assert_eq!(rescale_to_max_len(480, 640, 2048), (1536, 2048));
        let plan = p.plan(640, 480);
        assert_eq!(
            (plan.width, plan.height, plan.rows, plan.cols),
            (2048, 1536, 3, 4)
        );
        // odd sides round up to even; a tall picture keeps its columns
        assert_eq!(rescale_to_max_len(64, 23, 64), (64, 24));
        let p = processor(64, 32);
        let plan = p.plan(24, 64);
        assert_eq!(
            (plan.width, plan.height, plan.rows, plan.cols),
            (32, 64, 2, 1)
        );
        let plan = p.plan(64, 64);
        assert_eq!((plan.rows, plan.cols), (2, 2));
        // at most one tile: the global view alone
        let plan = processor(32, 32).plan(100, 60);
        assert_eq!(
            (plan.width, plan.height, plan.rows, plan.cols),
            (32, 32, 0, 0)
        );
        assert_eq!(scale_below_upper_bound(10, 9000, 4096), (4, 4096));
    }

    #[test]
    fn the_image_prompt_is_laid_out_as_transformers_does() {
        let t = PromptTokens::default();
        let two = "<image><image>";
        assert_eq!(
            image_prompt(1, 2, 2, &t),
            format!(
                "<fake_token_around_image><row_1_col_1>{two}<fake_token_around_image><row_1_col_2>{two}\n\n<fake_token_around_image><global-img>{two}<fake_token_around_image>"
            )
        );
        assert_eq!(
            image_prompt(0, 0, 1, &t),
            "<fake_token_around_image><global-img><image><fake_token_around_image>"
        );
    }

    #[test]
    fn settings_are_checked() {
        let bad = SmolImageProcessor::from_json(r#"{"max_image_size": {"longest_edge": 0}}"#);
        assert!(bad.unwrap_err().contains("max_image_size"));
        let p = SmolImageProcessor::from_json("{}").unwrap();
        assert_eq!((p.longest_edge, p.tile), (1456, 364));
        assert_eq!(p.base.filter, image::imageops::FilterType::Lanczos3);
    }
}
