//! The image being discussed: decoded, seen as the model sees it, encoded.

use dexar_model::{Checkpoint, ImageFeatures};
use image::{DynamicImage, RgbImage};
use std::path::Path;

use crate::error::StateError;

/// An image with its encoding for one model.
pub struct LoadedImage {
    /// A path, or `bundled:NAME` for a sample image.
    pub label: String,
    pub image: DynamicImage,
    /// What the model saw (resized, cropped), enlarged for display.
    pub view: RgbImage,
    pub features: ImageFeatures,
}

impl LoadedImage {
    /// Decodes an image file and encodes it for `ckpt`.
    pub fn open(ckpt: &Checkpoint, path: &Path) -> Result<Self, StateError> {
        let label = path.display().to_string();
        let image = dexar_model::load_image(path)?;
        Self::encode(ckpt, label, image)
    }

    /// The sample image dexar opens on.
    pub fn bundled_default(ckpt: &Checkpoint) -> Result<Self, StateError> {
        let (name, img) = dexar_toy::default_image();
        Self::encode(ckpt, format!("bundled:{name}"), img)
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
        let view = display_view(ckpt, &image).map_err(|e| StateError::Image {
            label: label.clone(),
            message: dexar_core::one_line(&e.to_string()),
        })?;
        Ok(Self {
            view,
            label,
            image,
            features,
        })
    }
}

/// The model's view of an image (resized, cropped), enlarged to at least
/// 256 pixels a side for display.
pub fn display_view(ckpt: &Checkpoint, img: &DynamicImage) -> dexar_model::Result<RgbImage> {
    let view = ckpt.model_view(img)?;
    let side = view.width().min(view.height()).max(1);
    if side >= 256 {
        return Ok(view);
    }
    let scale = 256u32.div_ceil(side);
    Ok(image::imageops::resize(
        &view,
        view.width() * scale,
        view.height() * scale,
        image::imageops::FilterType::CatmullRom,
    ))
}
