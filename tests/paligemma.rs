//! End-to-end tests of PaliGemma through the binary, on the tiny random
//! checkpoint: explain with a task prefix and a raw prompt, the REPL (an
//! unknown task prefix is a message, the prompt comes back), a recorded
//! session replayed without the model, eval on a data directory, bench, the
//! TUI, PaliGemma 2, and one-line exit-2 errors (unknown task prefix, a
//! Gemma 3 text model, a wrong image token count).

use dexar_tests::{arg as s, assert_user_error, dexar_at, run as dexar, run_with_input, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn model() -> PathBuf {
    dexar_tests::fixtures().join("tiny-paligemma")
}

fn square() -> PathBuf {
    dexar_tests::fixtures().join("images/square.png")
}

fn explain(model: &Path, prompt: &[&str], out: &Path) -> Output {
    let image = square();
    let mut args = vec!["explain", "--model", s(model), "--image", s(&image)];
    args.extend(prompt);
    args.extend(["--max-tokens", "3", "--out", s(out)]);
    dexar(&args)
}

fn ok(o: &Output) {
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn explain_maps_the_siglip_grid_for_task_prefixes_and_raw_prompts() {
    let out = tempfile::tempdir().unwrap();
    ok(&explain(&model(), &["--prompt", "caption en"], out.path()));
    let doc = json(&out.path().join("explain.json"));
    assert_eq!(doc["model"]["model_type"], "paligemma");
    assert_eq!(doc["model"]["text_model_type"], "gemma");
    assert_eq!(doc["model"]["grid"], serde_json::json!([4, 4]));
    // <image> x 16, <bos>, the prefix, "\n" (as PaliGemmaProcessor builds it)
    assert_eq!(doc["prompt"]["image_span"], serde_json::json!([0, 16]));
    assert_eq!(doc["prompt"]["text"], "<image><bos>caption en\n");
    assert_eq!(doc["prompt"]["input_ids"][16], 2);
    assert_eq!(doc["tokens"].as_array().unwrap().len(), 3);
    for map in doc["strategies"]["dexar"]["per_token"].as_array().unwrap() {
        assert_eq!(map.as_array().unwrap().len(), 16);
    }
    assert!(out.path().join("dexar/sentence.png").exists());

    // A raw prompt gets the same BOS and newline: the same ids.
    let raw = tempfile::tempdir().unwrap();
    ok(&explain(
        &model(),
        &["--raw-prompt", "<image>caption en", "--no-png"],
        raw.path(),
    ));
    let raw_doc = json(&raw.path().join("explain.json"));
    assert_eq!(raw_doc["prompt"]["input_ids"], doc["prompt"]["input_ids"]);
    assert_eq!(raw_doc["tokens"], doc["tokens"]);

    // A plugin sees the same trace: LeGrad's maps are the unfiltered DEX-AR maps.
    let plugins = tempfile::tempdir().unwrap();
    let plugin = dexar_tests::build_plugin("legrad", "legrad", plugins.path());
    let mut args = vec!["--prompt", "caption en"];
    args.extend(dexar_tests::legrad_args(&plugin));
    ok(&explain(&model(), &args, raw.path()));
    let doc = json(&raw.path().join("explain.json"));
    let legrad = doc["strategies"]["legrad"]["per_token"].as_array().unwrap();
    assert_eq!(legrad.len(), 3);
    assert!(legrad.iter().all(|m| m.as_array().unwrap().len() == 16));
    dexar_tests::assert_legrad_is_unfiltered(&doc);
}

#[test]
fn paligemma_2_explains_with_its_gemma_2_decoder() {
    let out = tempfile::tempdir().unwrap();
    let m = dexar_tests::fixtures().join("tiny-paligemma2");
    ok(&explain(
        &m,
        &["--prompt", "answer en where is the circle?"],
        out.path(),
    ));
    let doc = json(&out.path().join("explain.json"));
    assert_eq!(doc["model"]["text_model_type"], "gemma2");
    assert_eq!(doc["model"]["grid"], serde_json::json!([4, 4]));
    assert_eq!(doc["tokens"].as_array().unwrap().len(), 3);
    for map in doc["strategies"]["dexar"]["per_token"].as_array().unwrap() {
        assert_eq!(map.as_array().unwrap().len(), 16);
    }
}

#[test]
fn unknown_task_prefixes_and_unsupported_configs_are_one_line_errors() {
    let out = tempfile::tempdir().unwrap();
    let o = explain(&model(), &["--prompt", "What is in the image?"], out.path());
    assert_user_error(&o, "unknown PaliGemma task prefix `What`");
    let err = text(&o.stderr);
    for prefix in [
        "caption {lang}",
        "answer {lang} {question}",
        "detect {object}",
        "ocr",
    ] {
        assert!(err.contains(prefix), "{err}");
    }
    let o = explain(&model(), &["--prompt", "answer en"], out.path());
    assert_user_error(&o, "answer {lang} {question}");

    let gemma3 = dexar_tests::copy_checkpoint(&model(), |d| {
        let path = d.join("config.json");
        let mut v = json(&path);
        v["text_config"]["model_type"] = "gemma3".into();
        std::fs::write(&path, v.to_string()).unwrap();
    });
    let o = explain(gemma3.path(), &["--prompt", "caption en"], out.path());
    assert_user_error(&o, "text model gemma3 (PaliGemma reads gemma or gemma2)");
    let hidden = dexar_tests::copy_checkpoint(&model(), |d| {
        let path = d.join("config.json");
        let mut v = json(&path);
        v["text_config"]["num_image_tokens"] = 9.into();
        std::fs::write(&path, v.to_string()).unwrap();
    });
    let o = explain(hidden.path(), &["--prompt", "caption en"], out.path());
    assert_user_error(&o, "num_image_tokens (9)");
}

#[test]
fn the_repl_answers_task_prefixes_and_a_recorded_session_replays() {
    let home = tempfile::tempdir().unwrap();
    let session = home.path().join("p.dexar");
    let mut cmd = dexar_at(home.path());
    cmd.args(["--model", s(&model()), "--image", s(&square())])
        .args(["--graphics", "ascii", "--size", "16x8", "--max-tokens", "3"])
        .args(["--session", s(&session)]);
    let script = "caption en\nWhat is it?\nanswer en where is the circle?\n/show 0\n/show all\n";
    let o = run_with_input(&mut cmd, script.as_bytes());
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success() && !err.contains("panicked"), "{err}");
    let both = format!("{out}{err}");
    assert_eq!(both.matches("reached /max-tokens").count(), 2, "{both}");
    assert!(
        both.contains("unknown PaliGemma task prefix `What`"),
        "{both}"
    );
    assert!(
        out.contains("dexar · token 0") && out.contains("whole answer"),
        "{out}"
    );

    // `dexar sessions` lists it; replay re-explains it without the model.
    let l = dexar_at(home.path())
        .args(["sessions", "--dir", s(home.path())])
        .output()
        .unwrap();
    assert!(l.status.success(), "{}", text(&l.stderr));
    assert!(text(&l.stdout).contains("p.dexar"), "{}", text(&l.stdout));
    let replay = home.path().join("replay");
    let r = dexar_at(home.path())
        .args(["replay", s(&session), "--turn", "2", "--no-png"])
        .args(["--out", s(&replay)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    let doc = json(&replay.join("explain.json"));
    assert_eq!(doc["model"]["model_type"], "paligemma");
    assert_eq!(doc["tokens"].as_array().unwrap().len(), 3);
}

#[test]
fn eval_and_bench_run_on_paligemma() {
    let dir = tempfile::tempdir().unwrap();
    dexar_toy::write_dataset(dir.path(), 2, 3).unwrap();
    // PaliGemma reads task prefixes: ask each question as `answer en ...`
    let data = dir.path().join("data.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let q = v["prompt"].as_str().unwrap().to_string();
            v["prompt"] = format!("answer en {q}").into();
            v.to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    dexar_tests::eval_scores_every_item(&model(), dir.path());

    let m = model();
    let args = ["--model", s(&m), "--prompt", "caption en"];
    let (_, doc) = dexar_tests::bench_quick(&args, dir.path());
    assert_eq!(doc["schema"], "dexar.bench/2");
    assert!(doc["traced_over_plain"].as_f64().unwrap() > 0.0);
}

#[cfg(unix)]
#[test]
fn the_tui_answers_and_shows_a_prefix_error_as_a_message() {
    use dexar_tests::pty::Term;
    let m = model();
    let img = square();
    let mut t = Term::spawn(
        &[
            "tui",
            "--model",
            s(&m),
            "--image",
            s(&img),
            "--graphics",
            "blocks",
            "--max-tokens",
            "3",
        ],
        &[],
    );
    t.wait_screen(" conversation ");
    t.send("/");
    t.send("caption en");
    t.wait_screen("ask> caption en");
    t.send("\r");
    t.wait_screen("dexar · token 2 ");
    t.send("/");
    t.send("Where?");
    t.wait_screen("ask> Where?");
    t.send("\r");
    t.wait_screen("unknown PaliGemma task prefix");
    t.send("q");
    assert_eq!(t.exit_code(), 0);
}
