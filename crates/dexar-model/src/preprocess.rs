//! CLIP image preprocessing as in `preprocessor_config.json`: RGB, resize the
//! shortest edge (bicubic), centre crop, rescale, normalise.

use image::{imageops::FilterType, DynamicImage, GenericImageView, RgbImage};
use serde_json::Value;
use std::path::Path;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub do_resize: bool,
    /// Target of the shortest edge, or an exact (height, width).
    pub resize: Resize,
    pub filter: FilterType,
    pub do_center_crop: bool,
    pub crop: (u32, u32),
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    ShortestEdge(u32),
    Exact { height: u32, width: u32 },
}

impl ImageProcessor {
    /// CLIP defaults for a given input size.
    pub fn clip(size: u32) -> Self {
        Self {
            do_resize: true,
            resize: Resize::ShortestEdge(size),
            filter: FilterType::CatmullRom,
            do_center_crop: true,
            crop: (size, size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }

    pub fn from_file(path: &Path, default_size: u32) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::MissingFile {
                    path: path.into(),
                    what: "no preprocessor_config.json",
                })
            }
            Err(e) => return Err(ModelError::bad_file(path, format!("cannot read: {e}"))),
        };
        Self::from_json(&text, default_size).map_err(|m| ModelError::bad_file(path, m))
    }

    pub fn from_json(text: &str, default_size: u32) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        let mut p = Self::clip(default_size);
        let flag =
            |key: &str, default: bool| v.get(key).and_then(Value::as_bool).unwrap_or(default);
        p.do_resize = flag("do_resize", true);
        p.do_center_crop = flag("do_center_crop", true);
        p.do_rescale = flag("do_rescale", true);
        p.do_normalize = flag("do_normalize", true);
        if let Some(f) = v.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale_factor = f as f32;
        }
        let size_of = |x: &Value| -> Option<(u32, u32)> {
            if let Some(n) = x.as_u64() {
                return Some((n as u32, n as u32));
            }
            Some((
                x.get("height")?.as_u64()? as u32,
                x.get("width")?.as_u64()? as u32,
            ))
        };
        match v.get("size") {
            None | Some(Value::Null) => {}
            Some(s) => {
                p.resize = if let Some(e) = s.get("shortest_edge").and_then(Value::as_u64) {
                    Resize::ShortestEdge(e as u32)
                } else if let Some(n) = s.as_u64() {
                    Resize::ShortestEdge(n as u32)
                } else {
                    let (height, width) = size_of(s)
                        .ok_or("`size` must be an integer or {shortest_edge} or {height, width}")?;
                    Resize::Exact { height, width }
                }
            }
        }
        if let Some(c) = v.get("crop_size").filter(|c| !c.is_null()) {
            p.crop = size_of(c).ok_or("`crop_size` must be an integer or {height, width}")?;
        }
        p.filter = match v.get("resample").and_then(Value::as_u64) {
            Some(0) => FilterType::Nearest,
            Some(2) => FilterType::Triangle,
            Some(1) => FilterType::Lanczos3,
            _ => FilterType::CatmullRom,
        };
        let triple = |key: &str| -> std::result::Result<Option<[f32; 3]>, String> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or(format!("`{key}` must hold numbers"))? as f32;
                    }
                    Ok(Some(out))
                }
                Some(_) => Err(format!("`{key}` must be a list of 3 numbers")),
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            if s.contains(&0.0) {
                return Err("`image_std` must not contain 0".into());
            }
            p.std = s;
        }
        Ok(p)
    }

    /// The output (height, width) of [`Self::preprocess`].
    pub fn output_size(&self, img_w: u32, img_h: u32) -> (u32, u32) {
        if self.do_center_crop {
            return self.crop;
        }
        let (w, h) = self.resized_size(img_w, img_h);
        (h, w)
    }

    fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        if !self.do_resize {
            return (w, h);
        }
        match self.resize {
            // transformers: the short side becomes `s`, the long side int(s * long / short)
            Resize::ShortestEdge(s) => {
                if w <= h {
                    (s, (s as u64 * h as u64 / w.max(1) as u64) as u32)
                } else {
                    ((s as u64 * w as u64 / h.max(1) as u64) as u32, s)
                }
            }
            Resize::Exact { height, width } => (width, height),
        }
    }

    /// The RGB pixels the model sees (resized and cropped, not yet normalised):
    /// the picture heatmaps are drawn over.
    pub fn model_view(&self, image: &DynamicImage) -> RgbImage {
        let rgb: RgbImage = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        let (rw, rh) = self.resized_size(w, h);
        let resized = if (rw, rh) != (w, h) {
            image::imageops::resize(&rgb, rw, rh, self.filter)
        } else {
            rgb
        };
        if self.do_center_crop {
            center_crop(&resized, self.crop)
        } else {
            resized
        }
    }

    /// Channel-first normalised pixels `[3, H, W]` of the model's view.
    pub fn preprocess(&self, image: &DynamicImage) -> Pixels {
        let rescale = self.do_rescale.then_some(self.rescale_factor);
        let mean_std = self.do_normalize.then_some((self.mean, self.std));
        Pixels::from_rgb(&self.model_view(image), rescale, mean_std)
    }
}

/// Preprocessed pixels, channel-first `[3, height, width]`, flattened: what
/// the vision tower takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub data: Vec<f32>,
    pub height: u32,
    pub width: u32,
}

impl Pixels {
    /// Channel-first pixels of `view`: each 8-bit value times `rescale`,
    /// then `(v - mean) / std` per channel, each step if given.
    pub fn from_rgb(
        view: &RgbImage,
        rescale: Option<f32>,
        mean_std: Option<([f32; 3], [f32; 3])>,
    ) -> Pixels {
        let (w, h) = view.dimensions();
        let plane = (w * h) as usize;
        let mut data = vec![0f32; 3 * plane];
        for (x, y, px) in view.enumerate_pixels() {
            for c in 0..3 {
                let mut v = px[c] as f32;
                if let Some(f) = rescale {
                    v *= f;
                }
                if let Some((mean, std)) = mean_std {
                    v = (v - mean[c]) / std[c];
                }
                data[c * plane + (y * w + x) as usize] = v;
            }
        }
        Pixels {
            data,
            height: h,
            width: w,
        }
    }

    /// The same pixels with the patches of `cells` (row-major indices of
    /// `grid`, patches of `patch` pixels) set to 0: the image mean once
    /// normalised, as the perturbation test removes patches.
    pub fn with_patches_blanked(
        &self,
        cells: &[usize],
        grid: dexar_core::Grid,
        patch: usize,
    ) -> Pixels {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut data = self.data.clone();
        for &cell in cells {
            let (gy, gx) = (cell / grid.width, cell % grid.width);
            for c in 0..3 {
                for y in gy * patch..((gy + 1) * patch).min(h) {
                    let row = c * h * w + y * w;
                    data[row + (gx * patch).min(w)..row + ((gx + 1) * patch).min(w)].fill(0.0);
                }
            }
        }
        Pixels { data, ..*self }
    }
}

/// transformers' centre crop: offset `(size - crop) / 2` (floor), zero padding when smaller.
fn center_crop(img: &RgbImage, (ch, cw): (u32, u32)) -> RgbImage {
    let (w, h) = img.dimensions();
    let top = (h as i64 - ch as i64).div_euclid(2);
    let left = (w as i64 - cw as i64).div_euclid(2);
    RgbImage::from_fn(cw, ch, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64 {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Opens and decodes an image, with errors a user can act on.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Image {
        path: path.into(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".into(),
            _ => format!("cannot read: {e}"),
        },
    })?;
    decode_image(&bytes).map_err(|message| ModelError::Image {
        path: path.into(),
        message,
    })
}

/// Decodes image bytes (format guessed from content); refuses empty images.
pub fn decode_image(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    let img = image::load_from_memory(bytes).map_err(|e| {
        format!("cannot decode ({e}); use a PNG, JPEG, GIF, BMP, WebP or TIFF file")
    })?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("image has zero size ({w}x{h})"));
    }
    Ok(img)
}
