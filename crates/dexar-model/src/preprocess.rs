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
        let text = crate::error::read_checkpoint_text(path, "no preprocessor_config.json")?;
        Self::from_json(&text, default_size).map_err(|m| ModelError::bad_file(path, m))
    }

    pub fn from_json(text: &str, default_size: u32) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        if !v.is_object() {
            return Err("the file must hold a JSON object of settings".into());
        }
        let mut p = Self::clip(default_size);
        let flag = |key: &str, default: bool| match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("`{key}` must be true or false")),
        };
        p.do_resize = flag("do_resize", true)?;
        p.do_center_crop = flag("do_center_crop", true)?;
        p.do_rescale = flag("do_rescale", true)?;
        p.do_normalize = flag("do_normalize", true)?;
        match v.get("rescale_factor") {
            None | Some(Value::Null) => {}
            Some(x) => {
                p.rescale_factor = x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or("`rescale_factor` must be a positive number")?
                    as f32
            }
        }
        let side = |x: &Value| -> Option<u32> {
            x.as_u64()
                .filter(|n| (1..=MAX_PROCESSOR_SIDE as u64).contains(n))
                .map(|n| n as u32)
        };
        let size_of = |x: &Value| -> Option<(u32, u32)> {
            if let Some(n) = side(x) {
                return Some((n, n));
            }
            Some((side(x.get("height")?)?, side(x.get("width")?)?))
        };
        let sizes = format!("between 1 and {MAX_PROCESSOR_SIDE}");
        match v.get("size") {
            None | Some(Value::Null) => {}
            Some(s) => {
                p.resize = if let Some(e) = s.get("shortest_edge") {
                    Resize::ShortestEdge(
                        side(e)
                            .ok_or(format!("`size.shortest_edge` must be an integer {sizes}"))?,
                    )
                } else if let Some(n) = side(s) {
                    Resize::ShortestEdge(n)
                } else {
                    let (height, width) = size_of(s).ok_or(format!(
                        "`size` must be an integer or {{shortest_edge}} or {{height, width}}, each {sizes}"
                    ))?;
                    Resize::Exact { height, width }
                }
            }
        }
        if let Some(c) = v.get("crop_size").filter(|c| !c.is_null()) {
            p.crop = size_of(c).ok_or(format!(
                "`crop_size` must be an integer or {{height, width}}, each {sizes}"
            ))?;
        }
        p.filter = match v.get("resample") {
            None | Some(Value::Null) => FilterType::CatmullRom,
            Some(x) => match x.as_u64() {
                Some(0) => FilterType::Nearest,
                Some(2) => FilterType::Triangle,
                Some(1) => FilterType::Lanczos3,
                Some(3..=5) => FilterType::CatmullRom,
                _ => return Err("`resample` must be a PIL filter number (0 to 5)".into()),
            },
        };
        let triple = |key: &str| -> std::result::Result<Option<[f32; 3]>, String> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x
                            .as_f64()
                            .filter(|f| f.is_finite())
                            .ok_or(format!("`{key}` must hold numbers"))?
                            as f32;
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

    /// Refuses an image whose resized copy (before the crop) would be too
    /// large to hold: a very elongated picture resized to the model's
    /// shortest edge becomes gigantic.
    pub fn check_image_size(&self, img_w: u32, img_h: u32) -> std::result::Result<(), String> {
        let (w, h) = self.resized_size(img_w, img_h);
        if w as u64 * h as u64 <= MAX_VIEW_PIXELS {
            return Ok(());
        }
        Err(format!(
            "{img_w}x{img_h} pixels is too elongated for this model: resizing it would make a {w}x{h} picture, more than {} megapixels; crop it first",
            MAX_VIEW_PIXELS / 1_000_000
        ))
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
    /// SmolVLM's global view of an image split into tiles (the tiles are cut
    /// from `data`); `None` for every other model.
    pub global: Option<Box<Pixels>>,
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
            global: None,
        }
    }

    /// The same pixels with the patches of `cells` (row-major indices of
    /// `grid`, patches of `patch` pixels) set to 0: the image mean once
    /// normalised, as the perturbation test removes patches. A global view
    /// loses the same part of the image: the pixels under each cell's box,
    /// scaled to its size (rounded outwards).
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
            fill_box(
                &mut data,
                (h, w),
                (gy * patch, (gy + 1) * patch),
                (gx * patch, (gx + 1) * patch),
            );
        }
        let global = self.global.as_ref().map(|g| {
            let (gh, gw) = (g.height as usize, g.width as usize);
            let mut data = g.data.clone();
            let scaled = |i: usize, n: usize, size: usize| (i * size) as f64 / n.max(1) as f64;
            for &cell in cells {
                let (gy, gx) = (cell / grid.width, cell % grid.width);
                let ys = (
                    scaled(gy, grid.height, gh).floor() as usize,
                    scaled(gy + 1, grid.height, gh).ceil() as usize,
                );
                let xs = (
                    scaled(gx, grid.width, gw).floor() as usize,
                    scaled(gx + 1, grid.width, gw).ceil() as usize,
                );
                fill_box(&mut data, (gh, gw), ys, xs);
            }
            Box::new(Pixels {
                data,
                height: g.height,
                width: g.width,
                global: None,
            })
        });
        Pixels {
            data,
            height: self.height,
            width: self.width,
            global,
        }
    }
}

/// Sets rows `ys` x columns `xs` (half-open, clipped) of every channel of
/// channel-first `[3, h, w]` data to 0.
fn fill_box(data: &mut [f32], (h, w): (usize, usize), ys: (usize, usize), xs: (usize, usize)) {
    for c in 0..3 {
        for y in ys.0..ys.1.min(h) {
            let row = c * h * w + y * w;
            data[row + xs.0.min(w)..row + xs.1.min(w)].fill(0.0);
        }
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

/// The largest image side dexar decodes, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// The most pixels an image may have (64 megapixels).
pub const MAX_IMAGE_PIXELS: u64 = 64_000_000;
/// The largest image file dexar reads.
pub const MAX_IMAGE_FILE: u64 = 256 << 20;
/// The most pixels the resized image (before the model's crop) may have.
pub const MAX_VIEW_PIXELS: u64 = 16_000_000;
/// The largest `size` / `crop_size` a preprocessor config may ask for.
pub const MAX_PROCESSOR_SIDE: u32 = 2048;
/// What the decoder may allocate at most (a 64-megapixel RGBA image with
/// 16-bit channels, and then some).
const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// Opens and decodes an image, with errors a user can act on.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let bytes = dexar_core::read_regular(path, MAX_IMAGE_FILE).map_err(|e| ModelError::Image {
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

/// Decodes image bytes (format guessed from content); refuses empty images
/// and images over [`MAX_IMAGE_SIDE`] a side or [`MAX_IMAGE_PIXELS`] before
/// decoding them (a few bytes of PNG can declare gigapixels).
pub fn decode_image(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    let cannot = |e: image::ImageError| {
        format!("cannot decode ({e}); use a PNG, JPEG, GIF, BMP, WebP or TIFF file")
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| cannot(e.into()))
    };
    let (w, h) = reader()?.into_dimensions().map_err(cannot)?;
    if w == 0 || h == 0 {
        return Err(format!("image has zero size ({w}x{h})"));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(format!(
            "{w}x{h} pixels; dexar takes at most {MAX_IMAGE_SIDE} pixels a side and {} megapixels",
            MAX_IMAGE_PIXELS / 1_000_000
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut decoder = reader()?;
    decoder.limits(limits);
    let img = decoder.decode().map_err(cannot)?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("image has zero size ({w}x{h})"));
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageLuma8(image::GrayImage::new(w, h));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        bytes
    }

    #[test]
    fn images_over_the_limits_are_refused_before_decoding() {
        assert_eq!(decode_image(&png(40, 30)).unwrap().dimensions(), (40, 30));
        let e = decode_image(&png(MAX_IMAGE_SIDE + 1, 1)).unwrap_err();
        assert!(
            e.contains("16385x1 pixels") && e.contains("at most 16384"),
            "{e}"
        );
        let e = decode_image(&png(9000, 8000)).unwrap_err();
        assert!(e.contains("64 megapixels"), "{e}");
        assert!(decode_image(b"").unwrap_err().contains("empty"));
        assert!(decode_image(b"GIF89a")
            .unwrap_err()
            .contains("cannot decode"));
    }

    #[test]
    fn elongated_images_are_refused_before_resizing() {
        let p = ImageProcessor::clip(336);
        assert!(p.check_image_size(1000, 500).is_ok());
        let e = p.check_image_size(16000, 1).unwrap_err();
        assert!(e.contains("5376000x336"), "{e}");
    }

    #[test]
    fn processor_fields_of_the_wrong_type_or_size_are_refused() {
        assert!(ImageProcessor::from_json("{}", 32).is_ok());
        for (json, needle) in [
            ("[]", "JSON object"),
            (r#"{"do_resize": "yes"}"#, "do_resize"),
            (
                r#"{"size": {"shortest_edge": 200000}}"#,
                "size.shortest_edge",
            ),
            (r#"{"size": {"shortest_edge": "32"}}"#, "size.shortest_edge"),
            (r#"{"size": {"height": 0, "width": 4}}"#, "`size`"),
            (r#"{"crop_size": 100000}"#, "crop_size"),
            (r#"{"rescale_factor": -1}"#, "rescale_factor"),
            (r#"{"resample": "bicubic"}"#, "resample"),
            (r#"{"image_std": [1, 0, 1]}"#, "image_std"),
        ] {
            let e = ImageProcessor::from_json(json, 32).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
