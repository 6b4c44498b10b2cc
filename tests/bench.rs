//! `dexar bench` runs both paths on the bundled model and reports their ratio.

#[test]
fn bench_reports_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = dexar_tests::dexar()
        .args([
            "bench",
            "--tokens",
            "3",
            "--repeat",
            "1",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("speed-up"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["explained_tokens"], 3);
    assert!(doc["incremental_ms_per_token"].as_f64().unwrap() > 0.0);
    assert!(doc["naive_ms_per_token"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_builds_a_synthetic_llava_shaped_model() {
    let o = dexar_tests::dexar()
        .args([
            "bench",
            "--synthetic",
            "1x64",
            "--tokens",
            "1",
            "--repeat",
            "1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("576 image tokens"));
    let o = dexar_tests::dexar()
        .args(["bench", "--synthetic", "8by512"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--synthetic"));
}
