//! End-to-end tests of `dexar explain`: the real binary on the fixture
//! checkpoints, its explain.json contract and its handling of bad input.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixtures() -> PathBuf {
    dexar_tests::fixtures()
}

fn model() -> PathBuf {
    fixtures().join("tiny-llava")
}

fn image() -> PathBuf {
    fixtures().join("images/square.png")
}

use dexar_tests::run as dexar;

use dexar_tests::arg as s;

/// Runs explain with the fixture model, overriding some flags.
fn explain(model: &Path, image: &Path, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "explain",
        "--model",
        s(model),
        "--image",
        s(image),
        "--out",
        s(out),
    ];
    if !extra.contains(&"--max-tokens") {
        args.extend(["--max-tokens", "4"]);
    }
    if !extra
        .iter()
        .any(|a| *a == "--raw-prompt" || *a == "--prompt")
    {
        args.extend(["--prompt", "What is in the image?"]);
    }
    args.extend(extra);
    dexar(&args)
}

#[test]
fn explain_writes_the_documented_json_and_overlays() {
    let out = tempfile::tempdir().unwrap();
    let o = explain(&model(), &image(), &["--layer-index", "-2"], out.path());
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("explain.json")).unwrap())
            .unwrap();
    assert_eq!(doc["schema"], "dexar.explain/1");
    assert_eq!(doc["model"]["grid"], serde_json::json!([4, 4]));
    assert_eq!(doc["settings"]["mode"], "generate");
    assert_eq!(doc["settings"]["layers_used"], serde_json::json!([2, 3]));
    assert_eq!(doc["prompt"]["image_span"], serde_json::json!([3, 19]));
    let tokens = doc["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 4);
    let prompt_len = doc["prompt"]["input_ids"].as_array().unwrap().len() as u64;
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["index"], i as u64);
        assert_eq!(t["position"], prompt_len + i as u64);
    }
    for name in ["dexar", "dexar-unfiltered", "raw-attention", "grad-x-attn"] {
        let st = &doc["strategies"][name];
        let per_token = st["per_token"].as_array().unwrap();
        assert_eq!(per_token.len(), 4, "{name}");
        for m in per_token {
            let m = m.as_array().unwrap();
            assert_eq!(m.len(), 16);
            assert!(m.iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
        }
        assert_eq!(st["sentence"].as_array().unwrap().len(), 16);
        assert_eq!(st["token_weights"].as_array().unwrap().len(), 4);
        assert!(out.path().join(name).join("token_000.png").exists());
        assert!(out.path().join(name).join("sentence.png").exists());
        if name != "dexar" {
            assert!(
                st["token_weights"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w == 1.0),
                "{name} weights are 1"
            );
        }
    }
    // δ_t of the tokens equals the dexar strategy's token weights.
    let weights = doc["strategies"]["dexar"]["token_weights"]
        .as_array()
        .unwrap();
    for (t, w) in tokens.iter().zip(weights) {
        assert_eq!(&t["weight"], w);
    }
    let hw = doc["head_weights"].as_array().unwrap();
    assert_eq!(hw.len(), 4);
    assert_eq!(hw[0].as_array().unwrap().len(), 2 * 4);
}

#[test]
fn teacher_forced_explain_and_json_to_stdout() {
    let out = tempfile::tempdir().unwrap();
    let o = explain(
        &model(),
        &image(),
        &[
            "--target",
            "a red circle",
            "--json",
            "-",
            "--no-png",
            "--strategy",
            "raw-attention",
        ],
        out.path(),
    );
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: Value = serde_json::from_slice(&o.stdout).expect("stdout is the JSON");
    assert_eq!(doc["settings"]["mode"], "teacher-forced");
    let texts: Vec<&str> = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.concat(), "a red circle");
    let names: Vec<&String> = doc["strategies"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["dexar", "dexar-unfiltered", "raw-attention"]);
    assert!(
        !out.path().join("dexar").exists(),
        "--no-png writes no overlays"
    );
}

#[test]
fn help_documents_every_flag() {
    let o = dexar(&["explain", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--model",
        "--image",
        "--prompt",
        "--raw-prompt",
        "--target",
        "--max-tokens",
        "--layer-index",
        "--strategy",
        "--out",
        "--json",
        "--template",
        "--topk",
        "--temperature",
        "--top-p",
        "--seed",
        "--dtype",
        "--device",
        "--colormap",
        "--alpha",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

use dexar_tests::assert_user_error;

/// A way to break a checkpoint directory.
type Breakage = Box<dyn FnOnce(&Path)>;

use dexar_tests::model_copy as broken_model;

#[test]
fn bad_model_directories_are_refused_with_one_line() {
    let out = tempfile::tempdir().unwrap();
    let o = explain(Path::new("/nonexistent/model"), &image(), &[], out.path());
    assert_user_error(&o, "/nonexistent/model");

    let cases: Vec<(&str, Breakage)> = vec![
        (
            "config.json",
            Box::new(|d: &Path| std::fs::remove_file(d.join("config.json")).unwrap()),
        ),
        (
            "config.json",
            Box::new(|d: &Path| std::fs::write(d.join("config.json"), "{ not json").unwrap()),
        ),
        (
            "unsupported model_type `blip`",
            Box::new(|d: &Path| {
                std::fs::write(d.join("config.json"), r#"{"model_type": "blip"}"#).unwrap()
            }),
        ),
        (
            "model.safetensors",
            Box::new(|d: &Path| std::fs::remove_file(d.join("model.safetensors")).unwrap()),
        ),
        (
            "model.safetensors",
            Box::new(|d: &Path| {
                let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
                std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
            }),
        ),
        (
            "model.safetensors",
            Box::new(|d: &Path| std::fs::write(d.join("model.safetensors"), b"garbage").unwrap()),
        ),
        (
            "tokenizer.json",
            Box::new(|d: &Path| std::fs::remove_file(d.join("tokenizer.json")).unwrap()),
        ),
        (
            "tokenizer.json",
            Box::new(|d: &Path| std::fs::write(d.join("tokenizer.json"), "{}").unwrap()),
        ),
        (
            "preprocessor_config.json",
            Box::new(|d: &Path| std::fs::write(d.join("preprocessor_config.json"), "[1,").unwrap()),
        ),
        (
            "weights do not match config.json",
            Box::new(|d: &Path| {
                let p = d.join("config.json");
                let mut v: Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                v["text_config"]["hidden_size"] = serde_json::json!(96);
                std::fs::write(&p, v.to_string()).unwrap();
            }),
        ),
    ];
    for (needle, edit) in cases {
        let dir = broken_model(edit);
        let o = explain(dir.path(), &image(), &[], out.path());
        assert_user_error(&o, needle);
    }
}

#[test]
fn bad_images_prompts_and_flags_are_refused_with_one_line() {
    let out = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not an image").unwrap();
    assert_user_error(&explain(&model(), &garbage, &[], out.path()), "garbage.png");
    let empty = tmp.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert_user_error(&explain(&model(), &empty, &[], out.path()), "empty");
    assert_user_error(
        &explain(&model(), Path::new("/nonexistent.png"), &[], out.path()),
        "/nonexistent.png",
    );

    assert_user_error(
        &explain(
            &model(),
            &image(),
            &["--raw-prompt", "no marker here"],
            out.path(),
        ),
        "no <image> marker",
    );
    assert_user_error(
        &explain(
            &model(),
            &image(),
            &["--raw-prompt", "<image> and <image>"],
            out.path(),
        ),
        "2 <image> markers",
    );
    let long = "What is in the image? ".repeat(40);
    assert_user_error(
        &explain(&model(), &image(), &["--prompt", &long], out.path()),
        "exceeds the model's context of 128",
    );
    assert_user_error(
        &explain(&model(), &image(), &["--strategy", "dexr"], out.path()),
        "did you mean `dexar`",
    );
    assert_user_error(
        &explain(&model(), &image(), &["--dtype", "f64"], out.path()),
        "--dtype",
    );

    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = explain(&model(), &image(), &[], &file.join("sub"));
    assert_user_error(&o, "--out");
}

#[cfg(target_os = "linux")]
#[test]
fn explain_runs_a_plugin_strategy() {
    let plugins = tempfile::tempdir().unwrap();
    let plugin = dexar_tests::build_plugin("legrad", "legrad", plugins.path());
    let out = tempfile::tempdir().unwrap();
    let args = dexar_tests::legrad_args(&plugin);
    let o = explain(&model(), &image(), &args, out.path());
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("explain.json")).unwrap())
            .unwrap();
    dexar_tests::assert_legrad_is_unfiltered(&doc);
    let o = explain(
        &model(),
        &image(),
        &["--plugin", "/nonexistent/libx.so"],
        out.path(),
    );
    assert_user_error(&o, "--plugin");
}

#[test]
fn sampled_generation_is_reproducible_by_seed_and_stops_at_eos() {
    let out = tempfile::tempdir().unwrap();
    let run = |seed: &str| {
        let args = [
            "--temperature",
            "1.5",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--max-tokens",
            "12",
            "--no-png",
            "--json",
            "-",
        ];
        let o = explain(&model(), &image(), &args, out.path());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let ids: Vec<u64> = v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        (
            ids,
            v["settings"]["stop_reason"].as_str().unwrap().to_string(),
        )
    };
    let a = run("1");
    assert_eq!(a, run("1"));
    let others: Vec<_> = (2..6).map(|s| run(&s.to_string())).collect();
    assert!(
        others.iter().any(|o| o.0 != a.0),
        "different seeds sample differently"
    );
    // Greedy decoding of the fixture model ends with EOS after five tokens.
    let o = explain(
        &model(),
        &image(),
        &["--max-tokens", "20", "--no-png", "--json", "-"],
        out.path(),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["settings"]["stop_reason"], "eos");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
}

/// `dexar ARGS` with environment variables set (`Some`) or removed (`None`).
fn dexar_env(args: &[&str], env: &[(&str, Option<&Path>)]) -> Output {
    let mut cmd = dexar_tests::dexar();
    cmd.args(args);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("dexar runs")
}

#[cfg(unix)]
#[test]
fn hugging_face_ids_are_looked_up_in_the_local_cache_only() {
    let out = tempfile::tempdir().unwrap();
    let hf_home = tempfile::tempdir().unwrap();
    let env = [("HF_HOME", Some(hf_home.path())), ("HF_HUB_CACHE", None)];
    let img = image();
    let by_id = |id: &str| {
        let args = ["explain", "--model", id, "--image", s(&img), "--no-png"];
        let more = ["--prompt", "What is in the image?", "--max-tokens", "4"];
        let args: Vec<&str> = args.iter().chain(&more).copied().collect();
        dexar_env(
            &[&args[..], &["--json", "-", "--out", s(out.path())]].concat(),
            &env,
        )
    };
    let o = by_id("llava-hf/llava-1.5-7b-hf");
    assert_user_error(&o, "huggingface-cli download llava-hf/llava-1.5-7b-hf");
    let err = String::from_utf8_lossy(&o.stderr);
    let searched = format!("searched {}", hf_home.path().join("hub").display());
    assert!(err.contains(&searched), "{err}");

    // A cached snapshot (here, the fixture checkpoint) is found by its id.
    let repo = hf_home.path().join("hub/models--tiny--llava");
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::os::unix::fs::symlink(model(), repo.join("snapshots/abc123")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    let o = by_id("tiny/llava");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by_dir = explain(&model(), &image(), &["--no-png", "--json", "-"], out.path());
    let tokens = |o: &Output| serde_json::from_slice::<Value>(&o.stdout).unwrap()["tokens"].clone();
    assert_eq!(tokens(&o), tokens(&by_dir));
}

#[test]
fn debug_logs_name_the_stages_and_their_times() {
    let out = tempfile::tempdir().unwrap();
    let args = [
        "explain",
        "--prompt",
        "describe the image",
        "--max-tokens",
        "2",
        "--no-png",
    ];
    let args = [&args[..], &["--out", s(out.path())]].concat();
    let o = dexar_env(&args, &[("DEXAR_LOG", Some(Path::new("debug")))]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for stage in ["model loaded", "image encoded", "prefill", "traced step"] {
        assert!(err.contains(stage), "no {stage:?} in:\n{err}");
    }
    assert!(err.contains("ms="), "{err}");
    let quiet = dexar_env(&args, &[("DEXAR_LOG", None)]);
    assert!(quiet.status.success() && quiet.stderr.is_empty());
}
