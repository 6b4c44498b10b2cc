//! The image being discussed: decoded, seen as the model sees it, encoded
//! (when its model is loaded), with the bytes a session file keeps.

use dexar_core::Grid;
use dexar_model::{Checkpoint, ImageFeatures};
use image::{DynamicImage, RgbImage};
use std::path::Path;
use std::sync::Arc;

use crate::error::StateError;
use crate::file::SessionImage;

/// An image with its encoding for one model.
pub struct LoadedImage {
    /// A path, or `bundled:NAME` for a sample image.
    pub label: String,
    pub image: DynamicImage,
    /// What the model saw (resized, cropped), enlarged for display.
    pub view: RgbImage,
    /// What the model saw, at its resolution (what a session records).
    pub model_view: RgbImage,
    /// The image file's bytes and their format (`png`, `jpeg`...), when it
    /// came from a file; a session records a PNG of `image` otherwise.
    pub original: Option<(Arc<[u8]>, String)>,
    /// The image tokens; `None` for an image opened from a session whose
    /// model is not loaded.
    features: Option<ImageFeatures>,
    /// The heatmap grid of this image's traces (known from the features,
    /// or from the session the image was recorded in).
    pub grid: Option<Grid>,
}

impl LoadedImage {
    /// Decodes an image file and encodes it for `ckpt`.
    pub fn open(ckpt: &Checkpoint, path: &Path) -> Result<Self, StateError> {
        let label = path.display().to_string();
        let image = dexar_model::load_image(path)?;
        let mut loaded = Self::encode(ckpt, label, image)?;
        loaded.original = std::fs::read(path).ok().map(original_of);
        Ok(loaded)
    }

    /// The sample image dexar opens on.
    pub fn bundled_default(ckpt: &Checkpoint) -> Result<Self, StateError> {
        let (name, img) = dexar_toy::default_image();
        let mut loaded = Self::encode(ckpt, format!("bundled:{name}"), img)?;
        let bytes = dexar_toy::SAMPLE_IMAGES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.to_vec());
        loaded.original = bytes.map(original_of);
        Ok(loaded)
    }

    /// Encodes a decoded image for `ckpt`.
    pub fn encode(
        ckpt: &Checkpoint,
        label: String,
        image: DynamicImage,
    ) -> Result<Self, StateError> {
        ckpt.processor
            .check_image_size(image.width(), image.height())
            .map_err(|message| StateError::Image {
                label: label.clone(),
                message,
            })?;
        let features = ckpt.encode_image(&image).map_err(|e| StateError::Image {
            label: label.clone(),
            message: format!(
                "cannot encode it ({})",
                dexar_core::one_line(&e.to_string())
            ),
        })?;
        let model_view = ckpt.model_view(&image).map_err(|e| StateError::Image {
            label: label.clone(),
            message: dexar_core::one_line(&e.to_string()),
        })?;
        Ok(Self {
            view: enlarged(&model_view),
            model_view,
            label,
            image,
            original: None,
            grid: Some(features.grid),
            features: Some(features),
        })
    }

    /// The same image encoded for another model.
    pub fn reencode(&self, ckpt: &Checkpoint) -> Result<Self, StateError> {
        let mut loaded = Self::encode(ckpt, self.label.clone(), self.image.clone())?;
        loaded.original = self.original.clone();
        Ok(loaded)
    }

    /// The image of a recorded conversation, without a model: its view is
    /// the recorded one (so maps are drawn over exactly what the model
    /// saw, whichever processor is at hand). `ckpt` (the session's own model, when loaded)
    /// encodes it so the conversation can go on.
    pub fn from_session(
        recorded: &SessionImage,
        ckpt: Option<&Checkpoint>,
    ) -> Result<Self, StateError> {
        let image = dexar_model::decode_image(&recorded.original)
            .unwrap_or_else(|_| DynamicImage::ImageRgb8(recorded.model_view.clone()));
        let mut loaded = match ckpt {
            Some(ckpt) => Self::encode(ckpt, recorded.label.clone(), image)?,
            None => Self {
                label: recorded.label.clone(),
                image,
                view: RgbImage::new(1, 1),
                model_view: RgbImage::new(1, 1),
                original: None,
                features: None,
                grid: None,
            },
        };
        loaded.grid = Some(Grid::new(recorded.grid[0], recorded.grid[1]));
        loaded.view = enlarged(&recorded.model_view);
        loaded.model_view = recorded.model_view.clone();
        loaded.original = Some((
            Arc::from(recorded.original.as_slice()),
            recorded.original_format.clone(),
        ));
        Ok(loaded)
    }

    /// The image tokens for the model.
    pub fn features(&self) -> Result<&ImageFeatures, StateError> {
        self.features.as_ref().ok_or(StateError::NoModel)
    }

    /// The bytes a session records: the original file's, else a PNG.
    pub fn original_bytes(&self) -> (Arc<[u8]>, String) {
        if let Some(o) = &self.original {
            return o.clone();
        }
        let mut png = Vec::new();
        let _ = self
            .image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
        (Arc::from(png), "png".into())
    }
}

fn original_of(bytes: Vec<u8>) -> (Arc<[u8]>, String) {
    let format = image::guess_format(&bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .unwrap_or("unknown")
        .to_string();
    (Arc::from(bytes), format)
}

/// The model's view of an image (resized, cropped), enlarged to at least
/// 256 pixels a side for display.
pub fn display_view(ckpt: &Checkpoint, img: &DynamicImage) -> dexar_model::Result<RgbImage> {
    Ok(enlarged(&ckpt.model_view(img)?))
}

/// A model's view enlarged to at least 256 pixels a side for display.
pub fn enlarged(view: &RgbImage) -> RgbImage {
    let side = view.width().min(view.height()).max(1);
    if side >= 256 {
        return view.clone();
    }
    let scale = 256u32.div_ceil(side);
    image::imageops::resize(
        view,
        view.width() * scale,
        view.height() * scale,
        image::imageops::FilterType::CatmullRom,
    )
}
