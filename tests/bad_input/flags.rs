//! Flags and prompts: values out of range are refused by the flag's own
//! check (negative numbers included), clamping and unknown words are said,
//! counts that would run for days are bounded.

use super::*;

#[test]
fn out_of_range_values_are_refused_by_name() {
    let model = tiny_llava();
    for (extra, needle) in [
        (
            &["--temperature", "-1"][..],
            "--temperature must be a number >= 0",
        ),
        (
            &["--temperature", "inf"],
            "--temperature must be a number >= 0",
        ),
        (
            &["--temperature", "NaN"],
            "--temperature must be a number >= 0",
        ),
        (&["--top-p", "-0.5"], "--top-p must be in (0, 1]"),
        (&["--alpha", "-1"], "--alpha must be between 0 and 1"),
        (&["--topk", "0"], "--topk must be at least 1"),
        (&["--prompt", ""], "--prompt is empty"),
        (&["--prompt", "   "], "--prompt is empty"),
    ] {
        assert_user_error(&explain(&model, extra), needle);
    }
    assert_user_error(
        &run(&["eval", "--data", "toy:1", "--topk", "0"]),
        "--topk must be at least 1",
    );
}

#[test]
fn counts_that_would_run_for_days_are_refused() {
    for (args, needle) in [
        (
            &["toy", "accuracy", "--n", "18446744073709551615"][..],
            "--n <N>",
        ),
        (&["toy", "accuracy", "--n", "0"], "--n <N>"),
        (
            &["toy", "data", "/nonexistent/d", "--n", "1000000"],
            "--n <N>",
        ),
        (
            &["eval", "--data", "toy:100000000"],
            "at most 100000 toy scenes",
        ),
        (
            &["eval", "--data", "toy:18446744073709551615"],
            "at most 100000 toy scenes",
        ),
    ] {
        assert_user_error(&run(args), needle);
    }
}

#[test]
fn a_clamped_layer_index_is_said_with_what_was_used() {
    let model = tiny_llava();
    for (k, used, note) in [
        (
            "99",
            3,
            "layer index 99 is outside the model's 4 layers; using layers 3-3",
        ),
        (
            "-99",
            0,
            "layer index -99 is outside the model's 4 layers; using layers 0-3",
        ),
    ] {
        let o = explain(&model, &["--layer-index", k, "--no-png", "--json", "-"]);
        let err = assert_ok(&o);
        assert_eq!(err.trim(), format!("warning: --layer-index: {note}"));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["settings"]["layers_used"][0], used);
    }
    let o = explain(&model, &["--layer-index", "-2", "--no-png"]);
    assert_eq!(assert_ok(&o), "", "an index within the model says nothing");
}

#[test]
fn target_words_the_tokenizer_does_not_know_are_warned_about() {
    let o = explain(&tiny_llava(), &["--target", "€€€ red", "--no-png"]);
    let err = assert_ok(&o);
    assert_eq!(
        err.trim(),
        "warning: --target: the tokenizer does not know `€€€`; explained as <unk>"
    );
    let o = explain(&tiny_llava(), &["--target", "a red circle", "--no-png"]);
    assert_eq!(assert_ok(&o), "");
}

#[cfg(unix)]
#[test]
fn a_config_file_that_is_no_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.toml");
    dexar_tests::mkfifo(&fifo);
    for config in [fifo.as_path(), dir.path()] {
        let mut cmd = isolated();
        cmd.args(["eval", "--data", "toy:1"])
            .env("DEXAR_CONFIG", config);
        let o = dexar_tests::run_within(cmd, b"", LIMIT);
        assert_user_error(&o, "cannot read (is a");
    }
}
