//! End-to-end tests of the Qwen-VL families through the binary: explain
//! (the heatmap grid of a resized, non-square image), the REPL's multi-turn
//! conversation, eval on a data directory, bench on a synthetic Qwen2-VL,
//! plugins, the Hugging Face cache, and one-line errors for bad checkpoints,
//! settings and images.

use dexar_tests::{arg as s, assert_user_error, run as dexar};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const FAMILIES: [&str; 3] = ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl"];

fn fixture(name: &str) -> PathBuf {
    dexar_tests::fixtures().join(name)
}

fn explain(model: &Path, image: &Path, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "explain",
        "--model",
        s(model),
        "--image",
        s(image),
        "--out",
        s(out),
        "--max-tokens",
        "3",
    ];
    if !extra
        .iter()
        .any(|a| *a == "--raw-prompt" || *a == "--prompt")
    {
        args.extend(["--prompt", "What is in the image?"]);
    }
    args.extend(extra);
    dexar(&args)
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn explain_maps_the_merged_grid_of_a_resized_non_square_image() {
    let wide = dexar_tests::fixtures().join("images/wide.png");
    for name in FAMILIES {
        let out = tempfile::tempdir().unwrap();
        ok(&explain(&fixture(name), &wide, &[], out.path()));
        let doc = json(&out.path().join("explain.json"));
        // 57x41 is resized to 56x40: 14x10 patches, merged 2x2 into a 5x7 grid.
        assert_eq!(doc["model"]["grid"], serde_json::json!([5, 7]), "{name}");
        let family = name
            .trim_start_matches("tiny-")
            .replace("2.5", "2_5")
            .replace('-', "_");
        assert_eq!(doc["model"]["model_type"], family.as_str());
        let span = &doc["prompt"]["image_span"];
        assert_eq!(span[1].as_u64().unwrap() - span[0].as_u64().unwrap(), 35);
        for map in doc["strategies"]["dexar"]["per_token"].as_array().unwrap() {
            assert_eq!(map.as_array().unwrap().len(), 35);
        }
        let overlay = image::open(out.path().join("dexar/sentence.png")).unwrap();
        // drawn over the model's view (56x40), enlarged
        assert_eq!(
            overlay.width() * 40,
            overlay.height() * 56,
            "{name}: the overlay's aspect ratio"
        );
    }
}

#[test]
fn raw_prompts_and_plugins_see_the_same_trace() {
    let model = fixture("tiny-qwen3-vl");
    let img = dexar_tests::fixtures().join("images/qwen-valid.png");
    let out = tempfile::tempdir().unwrap();
    let raw = "<|im_start|>user\n<image>What is it?<|im_end|>\n<|im_start|>assistant\n";
    ok(&explain(
        &model,
        &img,
        &["--raw-prompt", raw, "--no-png"],
        out.path(),
    ));
    let doc = json(&out.path().join("explain.json"));
    assert_eq!(doc["model"]["grid"], serde_json::json!([4, 6]));
    assert!(doc["prompt"]["text"]
        .as_str()
        .unwrap()
        .contains("<|vision_start|><|image_pad|><|vision_end|>"));

    let plugins = tempfile::tempdir().unwrap();
    let plugin = dexar_tests::build_plugin("legrad", "legrad", plugins.path());
    ok(&explain(
        &model,
        &img,
        &dexar_tests::legrad_args(&plugin),
        out.path(),
    ));
    dexar_tests::assert_legrad_is_unfiltered(&json(&out.path().join("explain.json")));
}

#[test]
fn the_repl_keeps_a_multi_turn_conversation_in_the_chat_template() {
    let home = tempfile::tempdir().unwrap();
    let script = "What is in the image?\nAnd where is it?\n/show 0\n/show all\n";
    let mut child = dexar_tests::dexar()
        .args([
            "--model",
            s(&fixture("tiny-qwen2.5-vl")),
            "--graphics",
            "ascii",
            "--size",
            "24x8",
            "--max-tokens",
            "3",
        ])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .env_remove("DEXAR_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("reached /max-tokens").count(), 2, "{out}");
    assert!(
        out.contains("dexar · token 0") && out.contains("whole answer"),
        "{out}"
    );
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn eval_and_bench_run_on_qwen_models() {
    let dir = dexar_tests::eval_on_toy_data(&fixture("tiny-qwen2-vl"));

    let args = ["--synthetic", "qwen2-vl:1x64", "--max-pixels", "50176"];
    let (out, doc) = dexar_tests::bench_quick(&args, dir.path());
    // --max-pixels 224x224: 8x8 merged tokens (without it, about 672x672 pixels and 576 tokens)
    assert!(out.contains("64 image tokens"), "{out}");
    assert_eq!(doc["schema"], "dexar.bench/2");
    assert!(doc["traced_over_plain"].as_f64().unwrap() > 0.0);
}

#[cfg(unix)]
#[test]
fn a_hugging_face_id_finds_a_cached_qwen_snapshot() {
    let hf_home = tempfile::tempdir().unwrap();
    let repo = hf_home.path().join("hub/models--Qwen--Qwen3-VL-tiny");
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::os::unix::fs::symlink(fixture("tiny-qwen3-vl"), repo.join("snapshots/abc")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc").unwrap();
    let out = tempfile::tempdir().unwrap();
    let img = dexar_tests::fixtures().join("images/qwen-valid.png");
    let o = dexar_tests::dexar()
        .args([
            "explain",
            "--model",
            "Qwen/Qwen3-VL-tiny",
            "--image",
            s(&img),
            "--prompt",
            "What?",
        ])
        .args(["--max-tokens", "2", "--no-png", "--out", s(out.path())])
        .env("HF_HOME", hf_home.path())
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        json(&out.path().join("explain.json"))["model"]["model_type"],
        "qwen3_vl"
    );
}

/// A copy of a fixture checkpoint, changed by `edit`.
fn broken(name: &str, edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    dexar_tests::copy_checkpoint(&fixture(name), edit)
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v = json(path);
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn bad_checkpoints_settings_and_images_are_one_line_errors() {
    let out = tempfile::tempdir().unwrap();
    let img = dexar_tests::fixtures().join("images/qwen-valid.png");
    let run = |model: &Path, extra: &[&str]| {
        explain(model, &img, &[&["--no-png"], extra].concat(), out.path())
    };

    let m = broken("tiny-qwen2-vl", |d| {
        edit_json(&d.join("config.json"), |v| {
            v["model_type"] = "gemma3".into()
        })
    });
    let o = run(m.path(), &[]);
    assert_user_error(&o, "unsupported model_type `gemma3`");
    assert_user_error(&o, "qwen2_vl (Qwen2VLForConditionalGeneration), qwen2_5_vl (Qwen2_5_VLForConditionalGeneration), qwen3_vl (Qwen3VLForConditionalGeneration), smolvlm");

    let m = broken("tiny-qwen2-vl", |d| {
        std::fs::remove_file(d.join("chat_template.json")).unwrap()
    });
    assert_user_error(&run(m.path(), &[]), "has no chat template");
    let raw = "<|im_start|>user\n<image>Hi<|im_end|>\n<|im_start|>assistant\n";
    ok(&run(m.path(), &["--raw-prompt", raw]));

    let m = broken("tiny-qwen2-vl", |d| {
        std::fs::write(
            d.join("chat_template.json"),
            "{\"chat_template\": \"{% for %}\"}",
        )
        .unwrap()
    });
    assert_user_error(&run(m.path(), &[]), "chat template does not parse");
    let m = broken("tiny-qwen3-vl", |d| {
        std::fs::write(
            d.join("chat_template.jinja"),
            "{{ raise_exception('roles must alternate') }}",
        )
        .unwrap()
    });
    assert_user_error(&run(m.path(), &[]), "roles must alternate");

    let m = broken("tiny-qwen2-vl", |d| {
        edit_json(&d.join("preprocessor_config.json"), |v| {
            v["min_pixels"] = 5000.into()
        })
    });
    assert_user_error(
        &run(m.path(), &[]),
        "min_pixels (5000) is larger than max_pixels (2560)",
    );
    assert_user_error(
        &run(&fixture("tiny-qwen2-vl"), &["--max-pixels", "100"]),
        "min_pixels (256) is larger than max_pixels (100)",
    );
    // A lower bound lets fewer pixels through: a 48x32 image becomes 24x16 (3x2 tokens).
    ok(&run(&fixture("tiny-qwen2-vl"), &["--max-pixels", "400"]));
    assert_eq!(
        json(&out.path().join("explain.json"))["model"]["grid"],
        serde_json::json!([2, 3])
    );

    let m = broken("tiny-qwen2-vl", |d| {
        edit_json(&d.join("preprocessor_config.json"), |v| {
            v["min_pixels"] = 0.into()
        })
    });
    let tiny = out.path().join("tiny.png");
    image::RgbImage::new(3, 3).save(&tiny).unwrap();
    let o = explain(m.path(), &tiny, &["--no-png"], out.path());
    assert_user_error(&o, "3x3 is too small for one merged patch of 8x8 pixels");

    let m = broken("tiny-qwen2-vl", |d| {
        edit_json(&d.join("config.json"), |v| {
            v["rope_scaling"]["mrope_section"] = serde_json::json!([2, 2, 2])
        })
    });
    assert_user_error(
        &run(m.path(), &[]),
        "mrope_section [2, 2, 2] sums to 6, not half the head dimension (8)",
    );
}

#[test]
fn max_pixels_is_offered_wherever_a_model_is_chosen() {
    for cmd in [
        &["--help"][..],
        &["explain", "--help"],
        &["eval", "--help"],
        &["bench", "--help"],
    ] {
        let o = dexar(cmd);
        assert!(o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("--max-pixels"),
            "{cmd:?}"
        );
    }
}
