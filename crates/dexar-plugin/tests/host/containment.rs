//! Failures during calls become `StrategyError`s naming the plugin; the
//! registry keeps working. Also reload, unload and directory loading.

use crate::support::*;
use dexar_core::{Strategy, StrategyError};
use dexar_plugin::host::{HostOptions, PluginError, PluginRegistry};
use std::sync::Arc;
use std::time::Duration;

fn misbehave(options: HostOptions) -> (tempfile::TempDir, PluginRegistry, Arc<dyn Strategy>) {
    let dir = private_dir();
    let file = install(&misbehave_artifact(), dir.path(), "libmisbehave.so");
    let mut plugins = PluginRegistry::new(options);
    plugins.load(&file).unwrap();
    let strategy = plugins.strategy("misbehave").unwrap();
    (dir, plugins, strategy)
}

fn failure(strategy: &dyn Strategy, text: &str) -> String {
    let err = strategy.token_map(&trace_with_text(text)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("misbehave"), "names the plugin: {message}");
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[test]
fn rust_plugin_errors_panics_and_non_finite_output_are_contained() {
    let (_dir, _plugins, strategy) = misbehave(HostOptions::default());
    let ok = strategy.token_map(&trace_with_text("fine")).unwrap();
    assert_eq!(ok.weight, 2.0);

    let message = failure(&*strategy, "error");
    assert!(message.contains("this token is not for me"), "{message}");

    let message = failure(&*strategy, "panic");
    assert!(message.contains("panicked: boom at step 1"), "{message}");
    assert!(message.contains("src/lib.rs"), "panic location: {message}");

    let message = failure(&*strategy, "out-of-range");
    assert!(
        message.contains("panicked") && message.contains("out of range"),
        "{message}"
    );

    for text in ["nan", "inf-weight"] {
        let err = strategy.token_map(&trace_with_text(text)).unwrap_err();
        assert!(
            matches!(err, StrategyError::NonFinite { ref strategy } if strategy == "misbehave")
        );
    }

    // Still alive after all of that.
    assert_eq!(strategy.token_map(&trace_with_text("fine")).unwrap(), ok);
}

#[test]
fn rust_plugin_sentence_map_is_used_and_contained() {
    let (_dir, _plugins, strategy) = misbehave(HostOptions::default());
    let maps: Vec<_> = (0..3)
        .map(|step| {
            let mut trace = trace_with_text("fine");
            trace.step = step;
            strategy.token_map(&trace).unwrap()
        })
        .collect();
    // The plugin's own aggregate: an unweighted sum, then the host's minmax.
    let mut sum = vec![0f32; maps[0].raw.len()];
    for m in &maps {
        sum.iter_mut().zip(&m.raw).for_each(|(s, v)| *s += v);
    }
    let got = strategy.sentence_map(&maps).unwrap();
    assert_close(&got, &dexar_core::minmax(&sum).0, "misbehave sentence map");

    let err = strategy.sentence_map(&maps[..2]).unwrap_err().to_string();
    assert!(
        err.contains("misbehave") && err.contains("one too few"),
        "{err}"
    );
    assert!(strategy.sentence_map(&[]).unwrap().is_empty());
}

#[test]
fn c_plugin_errors_are_contained() {
    let dir = private_dir();
    let file = dir.path().join("libfixture.so");
    compile_c_fixture(&file, &[]);
    let mut plugins = registry();
    plugins.load(&file).unwrap();
    let strategy = plugins.strategy("c-fixture").unwrap();
    let err = strategy.token_map(&trace_with_text("error")).unwrap_err();
    assert!(err.to_string().contains("c-fixture"), "{err}");
    assert!(err.to_string().contains("refuses this token"), "{err}");
    let map = strategy.token_map(&trace_with_text("fine")).unwrap();
    assert_eq!(map.weight, 0.5);
    // No sentence function in the descriptor: the host default applies.
    assert!(!plugins.get("c-fixture").unwrap().has_sentence_map());
    assert_eq!(
        strategy.sentence_map(std::slice::from_ref(&map)).unwrap(),
        map.normalized()
    );
}

#[test]
fn calls_over_the_time_budget_are_reported() {
    let options = HostOptions {
        time_budget: Duration::from_millis(100),
        ..HostOptions::default()
    };
    let (_dir, _plugins, strategy) = misbehave(options.clone());
    let message = failure(&*strategy, "slow");
    assert!(message.contains("time budget"), "{message}");
    assert!(strategy.token_map(&trace_with_text("fine")).is_ok());

    let dir = private_dir();
    let file = dir.path().join("libslow.so");
    compile_c_fixture(&file, &["FIXTURE_SLEEP_MS=250"]);
    let mut plugins = PluginRegistry::new(options);
    plugins.load(&file).unwrap();
    let err = plugins
        .strategy("c-fixture")
        .unwrap()
        .token_map(&trace_with_text("fine"))
        .unwrap_err();
    assert!(
        err.to_string().contains("c-fixture") && err.to_string().contains("budget"),
        "{err}"
    );
}

#[test]
fn invalid_traces_never_reach_the_plugin() {
    let (_dir, _plugins, strategy) = misbehave(HostOptions::default());
    let mut trace = trace_with_text("fine");
    trace.grads.pop();
    let err = strategy.token_map(&trace).unwrap_err();
    assert!(matches!(err, StrategyError::InvalidTrace(_)), "{err}");
}

#[test]
fn reload_picks_up_a_rebuilt_library() {
    let dir = private_dir();
    let file = dir.path().join("libfixture.so");
    compile_c_fixture(&file, &["FIXTURE_VALUE=10.0f"]);
    let mut plugins = registry();
    plugins.load(&file).unwrap();
    let before = plugins.strategy("c-fixture").unwrap();
    let trace = trace_with_text("fine");
    assert_eq!(before.token_map(&trace).unwrap().raw[0], 10.0);

    compile_c_fixture(&file, &["FIXTURE_VALUE=20.0f"]);
    plugins.reload("c-fixture").unwrap();
    let after = plugins.strategy("c-fixture").unwrap();
    assert_eq!(after.token_map(&trace).unwrap().raw[0], 20.0);
    // A strategy handed out before the reload keeps its own library alive.
    assert_eq!(before.token_map(&trace).unwrap().raw[0], 10.0);

    // A reload that fails keeps the loaded version.
    std::fs::write(&file, "broken").unwrap();
    let err = plugins.reload("c-fixture").unwrap_err();
    assert!(matches!(err, PluginError::NotLibrary { .. }), "{err}");
    let still = plugins.strategy("c-fixture").unwrap();
    assert_eq!(still.token_map(&trace).unwrap().raw[0], 20.0);

    compile_c_fixture(&file, &["FIXTURE_VALUE=30.0f"]);
    let results = plugins.reload_all();
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok());
    let trace_value = plugins
        .strategy("c-fixture")
        .unwrap()
        .token_map(&trace)
        .unwrap()
        .raw[0];
    assert_eq!(trace_value, 30.0);
    assert!(matches!(
        plugins.reload("nope"),
        Err(PluginError::NotLoaded { .. })
    ));
}

#[test]
fn unload_list_and_directory_loading() {
    let dir = private_dir();
    install(&example_artifact("legrad"), dir.path(), "liblegrad.so");
    install(
        &example_artifact("dexar-top3"),
        dir.path(),
        "libdexar_top3.so",
    );
    std::fs::write(dir.path().join("README.txt"), "not a plugin").unwrap();

    let mut plugins = registry();
    let results = plugins.load_dirs(&[dir.path().to_path_buf()]);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let names: Vec<String> = plugins.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["dexar-top3", "legrad"]);
    // Scanning again loads nothing twice.
    assert!(plugins.load_dirs(&[dir.path().to_path_buf()]).is_empty());

    let missing = dir.path().join("nowhere");
    let results = plugins.load_dirs(std::slice::from_ref(&missing));
    assert!(matches!(
        results[..],
        [Err(PluginError::NoSuchDirectory { .. })]
    ));

    plugins.unload("legrad").unwrap();
    assert!(plugins.strategy("legrad").is_none());
    assert!(matches!(
        plugins.unload("legrad"),
        Err(PluginError::NotLoaded { .. })
    ));
    assert_eq!(plugins.strategies().len(), 1);
    // After unloading, the name is free again.
    plugins.load(dir.path().join("liblegrad.so")).unwrap();
    assert_eq!(plugins.len(), 2);
}

#[test]
fn search_path_loads_the_callers_directories() {
    let dir = private_dir();
    install(
        &example_artifact("entropy-filter"),
        dir.path(),
        "libentropy_filter.so",
    );
    let mut plugins = registry();
    let results = plugins.load_search_path(&[dir.path().to_path_buf()]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(plugins.get("entropy-filter").is_some());
    let info = &plugins.list()[0];
    assert_eq!(info.path, dir.path().join("libentropy_filter.so"));
    assert!(!info.version.is_empty() && !info.has_sentence_map);
}
