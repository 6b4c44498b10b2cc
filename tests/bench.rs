//! `dexar bench` reports every stage (dexar.bench/2) on small models.

use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    dexar_tests::dexar()
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// `dexar bench ARGS --json FILE` (must succeed): its stdout and the JSON.
fn bench_json(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut all = args.to_vec();
    all.extend(["--json", json.to_str().unwrap()]);
    let o = bench(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        read_json(&json),
    )
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ms(doc: &Value, key: &str) -> f64 {
    let v = doc[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing: {doc}"));
    assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    v
}

#[test]
fn bench_reports_every_stage() {
    let (stdout, doc) = bench_json(&[
        "--tokens",
        "3",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--naive",
        "--layer-index",
        "1",
    ]);
    for stage in [
        "load:",
        "prefill:",
        "plain decoding:",
        "traced decoding:",
        "naive",
        "peak RSS:",
    ] {
        assert!(stdout.contains(stage), "{stage}: {stdout}");
    }
    assert_eq!(doc["schema"], "dexar.bench/2");
    assert_eq!(doc["explained_tokens"], 3);
    assert_eq!(doc["threads"], 1);
    assert_eq!(doc["layers"], serde_json::json!([1, 2]));
    for key in ["load_ms", "prefill_ms", "naive_ms_per_token"] {
        ms(&doc, key);
    }
    let plain = ms(&doc, "plain_ms_per_token");
    let traced = ms(&doc, "traced_ms_per_token");
    let ratio = ms(&doc, "traced_over_plain");
    assert!((ratio - traced / plain).abs() < 1e-9 * ratio);
    assert!(doc["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    // Gradients and probabilities, f32, of 2 layers x 4 heads over the
    // positions of each step (the prompt, then one more per token), averaged.
    let p0 = doc["prompt_tokens"].as_u64().unwrap();
    let positions: u64 = (0..3).map(|t| p0 + t).sum();
    let expected = 2 * 2 * 4 * positions * 4 / 3;
    assert_eq!(doc["trace_bytes_per_token"].as_u64().unwrap(), expected);
}

#[test]
fn bench_without_naive_leaves_it_out() {
    let (stdout, doc) = bench_json(&["--tokens", "2", "--repeat", "1"]);
    assert!(!stdout.contains("naive"));
    assert!(doc.get("naive_ms_per_token").is_none(), "{doc}");
    ms(&doc, "traced_over_plain");
}

#[test]
fn a_saved_synthetic_checkpoint_loads_as_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("synthetic");
    let o = bench(&[
        "--synthetic",
        "1x64",
        "--tokens",
        "1",
        "--repeat",
        "1",
        "--save-checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("576 image tokens"));
    let config: Value = read_json(&ckpt.join("config.json"));
    assert_eq!(
        config["architectures"],
        serde_json::json!(["LlavaForConditionalGeneration"])
    );
    assert_eq!(config["text_config"]["intermediate_size"], 256);
    let (_, doc) = bench_json(&[
        "--model",
        ckpt.to_str().unwrap(),
        "--tokens",
        "2",
        "--repeat",
        "1",
    ]);
    assert_eq!(doc["image_tokens"], 576);
    assert_eq!(doc["layers"], serde_json::json!([0]));
}

#[test]
fn bad_bench_flags_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 4] = [
        &["--synthetic", "8by512"],
        &["--threads", "0"],
        &["--save-checkpoint", "x"],
        &[
            "--synthetic",
            "qwen2-vl:1x64",
            "--save-checkpoint",
            dir.path().to_str().unwrap(),
        ],
    ];
    for args in cases {
        let o = bench(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
