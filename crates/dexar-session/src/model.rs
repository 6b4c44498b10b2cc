//! The model a front end talks to, with how the user named it.

use dexar_model::{Checkpoint, LoadOptions, ModelSpec};

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
