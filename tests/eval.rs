//! End-to-end tests of `dexar eval`: toy data, a data directory, bad input.

use dexar_tests::run as dexar;

use dexar_tests::arg as s;

#[test]
fn eval_on_toy_data_writes_the_documented_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let o = dexar(&["eval", "--data", "toy:2:5", "--out", s(&json)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    for name in [
        "dexar",
        "dexar-unfiltered",
        "raw-attention",
        "grad-x-attn",
        "pointing",
    ] {
        assert!(table.contains(name), "{table}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["schema"], "dexar.eval/1");
    assert_eq!(doc["data"]["items"], 2);
    let d = &doc["strategies"]["dexar"];
    for key in [
        "pointing_game",
        "miou",
        "ap",
        "nppl_auc_most_first",
        "nppl_auc_least_first",
        "nppl_auc_random",
    ] {
        let v = d[key].as_f64().unwrap_or_else(|| panic!("{key} in {d}"));
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    assert!(d["count"].as_u64().unwrap() >= 2, "object words counted");
    for key in ["pointing_game", "miou", "ap"] {
        let v = d[key].as_f64().unwrap();
        assert!(v <= 1.0, "{key} = {v}");
    }
    let csv = dir.path().join("eval.csv");
    let o = dexar(&[
        "eval",
        "--data",
        "toy:1:5",
        "--no-perturbation",
        "--strategy",
        "dexar",
        "--out",
        s(&csv),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("strategy,level,metric,value,count\n"));
    assert!(text.contains("dexar,word,pointing_game,"));
    assert!(!text.contains("nppl"), "--no-perturbation skips nPPL");
}

#[test]
fn eval_on_a_data_directory_skips_and_counts_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    dexar_toy::write_dataset(dir.path(), 3, 11).unwrap();
    let data = dir.path().join("data.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let n_good = lines.len();
    lines.push("{ this is not json".into());
    // A mask whose size differs from its image.
    let small = dir.path().join("masks/small.png");
    image::GrayImage::new(8, 8).save(&small).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    v["objects"][0]["mask"] = serde_json::json!("masks/small.png");
    lines.push(v.to_string());
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();

    let o = dexar(&[
        "eval",
        "--data",
        s(dir.path()),
        "--no-perturbation",
        "--strategy",
        "dexar",
        "--out",
        s(&dir.path().join("r.json")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("data.jsonl:{}: malformed line", n_good + 1)),
        "{err}"
    );
    assert!(
        err.contains("mask masks/small.png is 8x8 but its image is 64x64"),
        "{err}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(doc["data"]["skipped"], 2);
    assert_eq!(doc["data"]["items"], n_good as u64);
}

#[test]
fn eval_refuses_bad_data_specs() {
    for (spec, needle) in [
        ("/nonexistent/dir", "no such directory"),
        ("toy:zero", "toy:N"),
        ("/tmp", "no data.jsonl"),
    ] {
        let o = dexar(&["eval", "--data", spec]);
        assert_eq!(o.status.code(), Some(2), "{spec}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("error: --data") && err.contains(needle),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }
}
