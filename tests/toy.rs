//! `dexar toy export` and `dexar toy data` write what the rest of dexar reads.

use dexar_tests::run as dexar;

#[test]
fn exported_bundled_model_loads_and_explains_like_the_bundled_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let o = dexar(&["toy", "export", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--prompt",
            "What is in the image?",
            "--max-tokens",
            "3",
            "--no-png",
            "--json",
            "-",
        ];
        args.extend(extra);
        let out = dir.path().join("out");
        args.extend(["--out", out.to_str().unwrap()]);
        let o = dexar(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["tokens"].clone(), v["strategies"]["dexar"].clone())
    };
    assert_eq!(run(&[]), run(&["--model", model.to_str().unwrap()]));
}

#[test]
fn toy_data_writes_a_directory_eval_reads() {
    let dir = tempfile::tempdir().unwrap();
    let o = dexar(&["toy", "data", dir.path().to_str().unwrap(), "--n", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.path().join("data.jsonl").is_file());
    let o = dexar(&[
        "eval",
        "--data",
        dir.path().to_str().unwrap(),
        "--no-perturbation",
        "--strategy",
        "dexar",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(0 skipped)"));
}

#[test]
fn toy_train_writes_a_checkpoint_explain_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let o = dexar(&[
        "toy",
        "train",
        "--steps",
        "3",
        "--vision-steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained 3 steps"));
    let ex = dir.path().join("ex");
    let o = dexar(&[
        "explain",
        "--model",
        out.to_str().unwrap(),
        "--prompt",
        "describe the image",
        "--max-tokens",
        "2",
        "--no-png",
        "--out",
        ex.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
