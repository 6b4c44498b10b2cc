//! End-to-end tests of SmolVLM through the binary, on the tiny random
//! checkpoint (2x2 tiles and a global view of a square image): explain's
//! regions, composed and global maps and `--region`, plugins of ABI 1.1 and
//! 1.0 on a split image, the REPL's `/region`, a recorded session replayed,
//! eval and bench; and one-line errors for tiles that do not fit the model.

use dexar_tests::{arg as s, assert_user_error, run as dexar, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn model() -> PathBuf {
    dexar_tests::fixtures().join("tiny-smolvlm")
}

fn square() -> PathBuf {
    dexar_tests::fixtures().join("images/smol-square.png")
}

fn explain(extra: &[&str], out: &Path) -> Output {
    let (model, image) = (model(), square());
    let mut args = vec![
        "explain",
        "--model",
        s(&model),
        "--image",
        s(&image),
        "--out",
        s(out),
        "--max-tokens",
        "3",
        "--prompt",
        "What is in the image?",
    ];
    args.extend(extra);
    dexar(&args)
}

fn ok(o: &Output) {
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn explain_writes_the_regions_the_composed_map_and_the_global_view() {
    let out = tempfile::tempdir().unwrap();
    ok(&explain(&[], out.path()));
    let doc = json(&out.path().join("explain.json"));
    assert_eq!(doc["model"]["model_type"], "smolvlm");
    // 2x2 tiles of 4x4 tokens composed into 8x8 cells over the image
    assert_eq!(doc["model"]["grid"], serde_json::json!([8, 8]));
    let regions = doc["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 5);
    assert_eq!(regions[1]["kind"], "tile");
    assert_eq!(regions[1]["box"], serde_json::json!([0.5, 0.0, 1.0, 0.5]));
    assert_eq!(regions[4]["kind"], "global");
    assert_eq!(regions[4]["grid"], serde_json::json!([4, 4]));
    assert_eq!(doc["prompt"]["image_span"], regions[0]["span"]);
    for name in ["dexar", "dexar-unfiltered", "raw-attention", "grad-x-attn"] {
        let st = &doc["strategies"][name];
        assert_eq!(st["per_token"][0].as_array().unwrap().len(), 64, "{name}");
        assert_eq!(st["global"]["grid"], serde_json::json!([4, 4]), "{name}");
        assert_eq!(st["global"]["per_token"][0].as_array().unwrap().len(), 16);
        assert_eq!(st["global"]["sentence"].as_array().unwrap().len(), 16);
    }
    let dir = out.path().join("dexar");
    assert_eq!(
        files(&dir),
        [
            "sentence.global.png",
            "sentence.png",
            "token_000.global.png",
            "token_000.png",
            "token_001.global.png",
            "token_001.png",
            "token_002.global.png",
            "token_002.png"
        ]
    );
    // --region tiles: the composed overlays only (a rerun clears the old ones)
    ok(&explain(&["--region", "tiles"], out.path()));
    assert!(files(&dir).iter().all(|f| !f.contains("global")));
    ok(&explain(&["--region", "global"], out.path()));
    assert!(
        files(&dir).iter().all(|f| f.contains("global")),
        "{:?}",
        files(&dir)
    );
    let o = explain(&["--region", "tile"], out.path());
    assert_user_error(
        &o,
        "--region: unknown region view `tile`; use global, tiles, all",
    );
}

#[test]
fn plugins_of_abi_1_1_see_the_regions_and_abi_1_0_is_refused_in_one_line() {
    let plugins = tempfile::tempdir().unwrap();
    let legrad = dexar_tests::build_plugin("legrad", "legrad", plugins.path());
    let c = dexar_tests::build_plugin("c-image-mass", "c_image_mass", plugins.path());
    let out = tempfile::tempdir().unwrap();
    let args = [
        "--plugin",
        s(&legrad),
        "--strategy",
        "legrad",
        "--no-png",
        "--layer-index",
        "0",
    ];
    ok(&explain(&args, out.path()));
    let doc = json(&out.path().join("explain.json"));
    // LeGrad's mean of ReLU(g) is the unfiltered DEX-AR sum up to a
    // constant, on the composed map and on the global view's.
    for (field, len) in [("per_token", 64), ("global", 16)] {
        let pick = |name: &str| {
            let st = &doc["strategies"][name];
            let maps = if field == "global" {
                &st["global"]["per_token"]
            } else {
                &st["per_token"]
            };
            maps.as_array().unwrap().clone()
        };
        for (a, b) in pick("legrad").iter().zip(pick("dexar-unfiltered")) {
            let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
            assert_eq!(a.len(), len);
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5,
                    "{field}"
                );
            }
        }
    }
    // The C example is ABI 1.0: refused up front, naming both versions.
    let o = explain(
        &["--plugin", s(&c), "--strategy", "c-image-mass"],
        out.path(),
    );
    assert_user_error(
        &o,
        "--strategy c-image-mass: plugin ABI 1.0 sees one image region, but this image has 5",
    );
    assert!(text(&o.stderr).contains("rebuild the plugin against ABI 1.1"));
    // In the REPL it is a message where the map would be, and the REPL goes on.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = dexar_tests::dexar_at(home.path());
    cmd.args(["--model", s(&model()), "--image", s(&square())])
        .args(["--graphics", "ascii", "--size", "24x8"])
        .args(["--max-tokens", "2", "--no-record"]);
    let script = format!(
        "/plugin load {}\n/strategy use c-image-mass\nWhat is in the image?\n/show 0\n/strategy use dexar\n/show 0\n",
        s(&c)
    );
    let o = dexar_tests::run_with_input(&mut cmd, script.as_bytes());
    ok(&o);
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        all.contains("plugin ABI 1.0 sees one image region"),
        "{all}"
    );
    assert!(all.contains("dexar · token 0"), "{all}");
}

#[test]
fn the_repl_switches_region_views_and_records_a_session_that_replays() {
    let home = tempfile::tempdir().unwrap();
    let session = home.path().join("smol.dexar");
    let mut cmd = dexar_tests::dexar_at(home.path());
    cmd.args(["--model", s(&model()), "--image", s(&square())])
        .args(["--graphics", "ascii", "--size", "24x8", "--max-tokens", "3"])
        .args(["--session", s(&session)]);
    let script = "What is in the image?\n/show 0\n/region global\n/show 0\n/region tiles\n/show all\n/region\n/region left\n";
    let o = dexar_tests::run_with_input(&mut cmd, script.as_bytes());
    ok(&o);
    let out = text(&o.stdout);
    assert!(out.contains("· tiles | global view"), "{out}");
    assert!(
        out.contains("region global: /show draws the global view's map"),
        "{out}"
    );
    assert!(out.contains("· global view"), "{out}");
    assert!(
        out.contains("whole answer (tokens 0-2, weighted by token weight) · tiles"),
        "{out}"
    );
    assert!(
        out.contains("region tiles: /show draws the tiles' maps composed"),
        "{out}"
    );
    // A mistake is a message, and the REPL goes on (to the end of the input).
    let all = format!("{out}{}", text(&o.stderr));
    assert!(
        all.contains("/region: unknown region view `left`; use global, tiles, all"),
        "{all}"
    );

    let replay = tempfile::tempdir().unwrap();
    ok(&dexar(&[
        "replay",
        s(&session),
        "--out",
        s(replay.path()),
        "--no-png",
    ]));
    let doc = json(&replay.path().join("explain.json"));
    assert_eq!(doc["regions"].as_array().unwrap().len(), 5);
    assert_eq!(doc["model"]["grid"], serde_json::json!([8, 8]));
    assert_eq!(
        doc["strategies"]["dexar"]["global"]["grid"],
        serde_json::json!([4, 4])
    );
}

#[test]
fn eval_and_bench_run_on_smolvlm() {
    let dir = dexar_tests::eval_on_toy_data(&model());
    let bench = dir.path().join("b.json");
    let o = dexar(&[
        "bench",
        "--model",
        s(&model()),
        "--image",
        s(&square()),
        "--tokens",
        "2",
        "--repeat",
        "1",
        "--json",
        s(&bench),
    ]);
    ok(&o);
    // 4 tiles and the global view, 16 tokens each
    assert!(
        text(&o.stdout).contains("80 image tokens"),
        "{}",
        text(&o.stdout)
    );
    let doc = json(&bench);
    assert_eq!(doc["schema"], "dexar.bench/2");
    assert!(doc["traced_over_plain"].as_f64().unwrap() > 0.0);
}

#[test]
fn tiles_that_do_not_fit_the_model_are_one_line_errors() {
    let broken = dexar_tests::copy_checkpoint(&model(), |dir| {
        let path = dir.join("preprocessor_config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["max_image_size"] = serde_json::json!({"longest_edge": 24});
        std::fs::write(&path, v.to_string()).unwrap();
    });
    let out = tempfile::tempdir().unwrap();
    let o = dexar(&[
        "explain",
        "--model",
        s(broken.path()),
        "--image",
        s(&square()),
        "--prompt",
        "What?",
        "--out",
        s(out.path()),
    ]);
    assert_user_error(
        &o,
        "max_image_size.longest_edge 24 must be the vision tower's image_size 32",
    );
}
