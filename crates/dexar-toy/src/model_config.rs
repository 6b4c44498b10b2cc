//! The toy VLM's architecture as llava-hf files: `config.json` (CLIP vision
//! tower, LLaMA decoder) and `preprocessor_config.json`, so the trained model
//! loads through exactly the code that loads a real LLaVA checkpoint.

use serde_json::{json, Value};

use crate::vocab::{vocabulary, BOS_ID, EOS_ID, IMAGE_ID, PAD_ID};

/// Side of the images the toy model sees, in pixels (the shapes world's default).
pub const IMAGE_SIZE: usize = 64;

/// Per-channel mean and standard deviation of the image processor: pixels
/// are mapped to `[-1, 1]`.
pub const PIXEL_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const PIXEL_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// Sizes of the toy LLaVA. Everything else (vocabulary, image token,
/// activations, feature selection) is fixed by [`ToyModelConfig::config_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToyModelConfig {
    /// Patch side; the image becomes `(64 / patch_size)^2` image tokens.
    pub patch_size: usize,
    pub vision_hidden: usize,
    pub vision_intermediate: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub text_hidden: usize,
    pub text_intermediate: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    /// Context length of the decoder (image tokens included).
    pub max_positions: usize,
}

impl ToyModelConfig {
    /// The bundled demo model: 8x8 patches (64 image tokens), about 0.8 M
    /// parameters (3.3 MB of f32 weights).
    pub fn demo() -> Self {
        Self {
            patch_size: 8,
            vision_hidden: 96,
            vision_intermediate: 256,
            vision_layers: 3,
            vision_heads: 4,
            text_hidden: 128,
            text_intermediate: 256,
            text_layers: 3,
            text_heads: 4,
            max_positions: 128,
        }
    }

    /// A very small model for tests: 16x16 patches (16 image tokens).
    pub fn tiny() -> Self {
        Self {
            patch_size: 16,
            vision_hidden: 32,
            vision_intermediate: 64,
            vision_layers: 1,
            vision_heads: 2,
            text_hidden: 32,
            text_intermediate: 64,
            text_layers: 2,
            text_heads: 2,
            max_positions: 64,
        }
    }

    /// Image tokens per image (the CLS token is dropped: strategy `default`).
    pub fn num_image_tokens(&self) -> usize {
        let side = IMAGE_SIZE / self.patch_size;
        side * side
    }

    /// Checks what `config.json` parsing would reject, plus the toy world's needs.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("patch_size", self.patch_size),
            ("vision_hidden", self.vision_hidden),
            ("vision_intermediate", self.vision_intermediate),
            ("vision_layers", self.vision_layers),
            ("vision_heads", self.vision_heads),
            ("text_hidden", self.text_hidden),
            ("text_intermediate", self.text_intermediate),
            ("text_layers", self.text_layers),
            ("text_heads", self.text_heads),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("model size `{name}` must be positive"));
        }
        if !IMAGE_SIZE.is_multiple_of(self.patch_size) {
            return Err(format!(
                "patch_size {} must divide the image size {IMAGE_SIZE}",
                self.patch_size
            ));
        }
        if !self.vision_hidden.is_multiple_of(self.vision_heads)
            || !self.text_hidden.is_multiple_of(self.text_heads)
        {
            return Err("hidden sizes must be multiples of their head counts".into());
        }
        if !(self.text_hidden / self.text_heads).is_multiple_of(2) {
            return Err("the decoder's head size must be even (rotary embeddings)".into());
        }
        // BOS, USER:, image, the longest prompt and answer of the shapes world.
        let needed = 2 + self.num_image_tokens() + 40;
        if self.max_positions < needed {
            return Err(format!(
                "max_positions {} is too short: prompts and answers need {needed}",
                self.max_positions
            ));
        }
        Ok(())
    }

    /// The llava-hf `config.json`.
    pub fn config_json(&self) -> Value {
        let vocab_size = vocabulary().len();
        json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "image_token_index": IMAGE_ID,
            "projector_hidden_act": "gelu",
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default",
            "ignore_index": -100,
            "tie_word_embeddings": false,
            "torch_dtype": "float32",
            "vision_config": {
                "model_type": "clip_vision_model",
                "hidden_size": self.vision_hidden,
                "intermediate_size": self.vision_intermediate,
                "num_hidden_layers": self.vision_layers,
                "num_attention_heads": self.vision_heads,
                "image_size": IMAGE_SIZE,
                "patch_size": self.patch_size,
                "num_channels": 3,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": 1e-5,
                "projection_dim": self.vision_hidden
            },
            "text_config": {
                "model_type": "llama",
                "hidden_size": self.text_hidden,
                "intermediate_size": self.text_intermediate,
                "num_hidden_layers": self.text_layers,
                "num_attention_heads": self.text_heads,
                "num_key_value_heads": self.text_heads,
                "head_dim": self.text_hidden / self.text_heads,
                "vocab_size": vocab_size,
                "max_position_embeddings": self.max_positions,
                "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0,
                "hidden_act": "silu",
                "tie_word_embeddings": false,
                "bos_token_id": BOS_ID,
                "eos_token_id": EOS_ID,
                "pad_token_id": PAD_ID
            },
            "bos_token_id": BOS_ID,
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID
        })
    }

    /// Number of weights [`crate::train`] saves.
    pub fn parameter_count(&self) -> usize {
        let vocab = vocabulary().len();
        let (dv, iv) = (self.vision_hidden, self.vision_intermediate);
        let (dt, it) = (self.text_hidden, self.text_intermediate);
        let patches = self.num_image_tokens();
        let vision = dv // class embedding
            + dv * 3 * self.patch_size * self.patch_size
            + (patches + 1) * dv
            + 4 * dv // pre and post layer norms
            + self.vision_layers * (4 * (dv * dv + dv) + 2 * iv * dv + iv + dv + 4 * dv);
        let projector = dv * dt + dt + dt * dt + dt;
        let text = 2 * vocab * dt + dt + self.text_layers * (4 * dt * dt + 3 * dt * it + 2 * dt);
        vision + projector + text
    }
}

/// The CLIP-style `preprocessor_config.json`: shortest edge and centre crop
/// of [`IMAGE_SIZE`], pixels mapped to `[-1, 1]`.
pub fn preprocessor_json() -> Value {
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_resize": true,
        "size": { "shortest_edge": IMAGE_SIZE },
        "resample": 3,
        "do_center_crop": true,
        "crop_size": { "height": IMAGE_SIZE, "width": IMAGE_SIZE },
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": PIXEL_MEAN,
        "image_std": PIXEL_STD,
        "do_convert_rgb": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_model::{FeatureSelect, ImageProcessor, LlavaConfig};

    #[test]
    fn config_json_parses_as_llava_with_the_toy_vocabulary() {
        for sizes in [ToyModelConfig::demo(), ToyModelConfig::tiny()] {
            sizes.validate().expect("valid sizes");
            let config = LlavaConfig::from_value(&sizes.config_json()).expect("parses");
            assert_eq!(config.image_token_index, IMAGE_ID);
            assert_eq!(config.text.vocab_size, vocabulary().len());
            assert_eq!(config.vision_feature_select, FeatureSelect::Default);
            assert_eq!(config.num_image_tokens(), sizes.num_image_tokens());
            assert_eq!(config.eos_token_id, Some(EOS_ID));
        }
        let demo = ToyModelConfig::demo();
        assert_eq!(demo.num_image_tokens(), 64);
        assert!(
            demo.parameter_count() * 4 <= 8 << 20,
            "weights stay under 8 MB"
        );
    }

    #[test]
    fn preprocessor_keeps_64_pixel_images_as_they_are() {
        let text = preprocessor_json().to_string();
        let p = ImageProcessor::from_json(&text, IMAGE_SIZE as u32).expect("parses");
        assert_eq!(p.crop, (64, 64));
        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([255, 0, 128]));
        let pixels = p.preprocess(&image::DynamicImage::ImageRgb8(img));
        assert_eq!((pixels.height, pixels.width), (64, 64));
        let pixels = pixels.data;
        assert_eq!(pixels[0], 1.0);
        assert_eq!(pixels[64 * 64], -1.0);
        assert!((pixels[2 * 64 * 64] - (128.0 / 127.5 - 1.0)).abs() < 1e-6);
    }

    #[test]
    fn bad_sizes_are_refused_with_the_reason() {
        let odd = ToyModelConfig {
            patch_size: 7,
            ..ToyModelConfig::demo()
        };
        assert!(odd.validate().unwrap_err().contains("patch_size"));
        let short = ToyModelConfig {
            max_positions: 32,
            ..ToyModelConfig::demo()
        };
        assert!(short.validate().unwrap_err().contains("max_positions"));
    }
}
