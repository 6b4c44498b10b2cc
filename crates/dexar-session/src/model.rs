//! The model a front end talks to, with how the user named it, and its
//! identity: what a session file remembers of it, enough to explain its
//! traces without it.

use dexar_model::{Checkpoint, LoadOptions, ModelSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StateError;

/// A loaded checkpoint, the spec it came from and how it was loaded.
pub struct LoadedModel {
    pub ckpt: Checkpoint,
    pub spec: ModelSpec,
    /// What the user sees: `bundled:toy`, a directory or a Hugging Face id.
    pub label: String,
    pub opts: LoadOptions,
}

impl LoadedModel {
    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.ckpt.text_config().num_hidden_layers
    }

    /// SHA-256 of the parsed configuration: tells whether this is the model
    /// a session was recorded with.
    pub fn config_sha256(&self) -> String {
        config_hash(&self.ckpt)
    }

    /// What a session file records of this model, which maps images to the
    /// heatmap grid `grid` (LLaVA: always the same; Qwen-VL: that of the
    /// image at hand).
    pub fn identity(&self, grid: dexar_core::Grid) -> ModelIdentity {
        let text = self.ckpt.text_config();
        ModelIdentity {
            spec: self.spec.to_string(),
            label: self.label.clone(),
            path: self.ckpt.dir.display().to_string(),
            config_sha256: self.config_sha256(),
            model_type: self.ckpt.model_type().into(),
            text_model_type: text.model_type.clone(),
            num_layers: text.num_hidden_layers,
            num_heads: text.num_attention_heads,
            grid: [grid.height, grid.width],
            dtype: self.opts.dtype_name().into(),
            device: self.opts.device_name(),
        }
    }
}

/// A model as a session file names it: how it was asked for, its shape, and
/// a hash of its configuration that tells whether a loaded model is the one
/// that produced a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// As the user gave it: `bundled`, a directory or `ORG/NAME[@REV]`.
    pub spec: String,
    /// As dexar shows it (`bundled:toy` for the bundled model).
    pub label: String,
    /// The checkpoint directory (explain.json's `model.path`).
    pub path: String,
    /// SHA-256 of the parsed configuration as JSON.
    pub config_sha256: String,
    pub model_type: String,
    pub text_model_type: String,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Heatmap grid `[height, width]` (Qwen-VL: of the first image; each
    /// image record has its own).
    pub grid: [usize; 2],
    /// Weights precision and device it ran with.
    pub dtype: String,
    pub device: String,
}

impl ModelIdentity {
    pub fn grid(&self) -> dexar_core::Grid {
        dexar_core::Grid::new(self.grid[0], self.grid[1])
    }

    /// A short name for file names: the last part of the label, with
    /// anything but letters, digits, `.`, `_` and `-` made `-`.
    pub fn file_stem(&self) -> String {
        let last = self
            .label
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let stem: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        match stem.trim_matches(['-', '.']) {
            "" => "model".into(),
            s => s.to_string(),
        }
    }
}

fn config_hash(ckpt: &Checkpoint) -> String {
    let json = serde_json::to_vec(&ckpt.config_json()).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Resolves and loads `spec` (the bundled model comes from `dexar-toy`).
pub fn open_model(spec: &ModelSpec, opts: &LoadOptions) -> Result<LoadedModel, StateError> {
    let ckpt = spec
        .load(opts, dexar_toy::bundled)
        .map_err(|e| match spec {
            ModelSpec::Bundled => StateError::Bundled(e),
            _ => StateError::Model(e),
        })?;
    let label = match spec {
        ModelSpec::Bundled => dexar_toy::BUNDLED_LABEL.to_string(),
        other => other.to_string(),
    };
    Ok(LoadedModel {
        ckpt,
        spec: spec.clone(),
        label,
        opts: opts.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_the_bundled_model_and_names_bad_directories() {
        let m = open_model(&ModelSpec::Bundled, &LoadOptions::default()).unwrap();
        assert_eq!(m.label, "bundled:toy");
        assert_eq!(m.num_layers(), 3);
        let id = m.identity(dexar_core::Grid::new(8, 8));
        assert_eq!((id.num_layers, id.num_heads, id.grid), (3, 4, [8, 8]));
        assert_eq!(id.config_sha256.len(), 64);
        assert_eq!(id.file_stem(), "bundled-toy");
        let again = open_model(&ModelSpec::Bundled, &LoadOptions::default()).unwrap();
        assert_eq!(again.identity(dexar_core::Grid::new(8, 8)), id);
        let hf = ModelIdentity {
            label: "llava-hf/llava-1.5-7b-hf".into(),
            ..id.clone()
        };
        assert_eq!(hf.file_stem(), "llava-1.5-7b-hf");
        let e = open_model(&"/no/such/model".parse().unwrap(), &LoadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist") && !e.contains('\n'), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let spec = ModelSpec::Dir(empty.path().to_path_buf());
        let e = open_model(&spec, &LoadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
    }
}
