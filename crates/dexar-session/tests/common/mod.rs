//! What the session tests share: a state on the bundled model, recording or
//! not, and answering a question through it.

use dexar_model::{LoadOptions, ModelSpec};
use dexar_plugin::host::PluginRegistry;
use dexar_session::{
    open_model, AppState, Destination, LoadedImage, Recorder, Settings, TraceDtype,
};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The bundled model and image, answers of at most five tokens.
pub fn state() -> AppState {
    let model = open_model(&ModelSpec::Bundled, &LoadOptions::default()).unwrap();
    let image = LoadedImage::bundled_default(&model.ckpt).unwrap();
    let settings = Settings {
        max_tokens: 5,
        ..Settings::default()
    };
    AppState::new(model, image, settings, PluginRegistry::default())
}

/// [`state`], recording into a new file in `dir`.
pub fn recording(dir: &Path, dtype: TraceDtype) -> AppState {
    let mut s = state();
    let r = Recorder::new(
        Destination::Directory(dir.to_path_buf()),
        &s.identity,
        dtype,
    )
    .unwrap();
    s.set_recorder(Some(r));
    s
}

/// Answers `question` and keeps the answer.
pub fn ask(s: &mut AppState, question: &str) {
    let ask = s.prepare_ask(question, None).unwrap();
    let outcome = s.stream(&ask, &AtomicBool::new(false), &mut |_| {});
    assert!(outcome.result.is_ok());
    s.record(ask, outcome);
}
