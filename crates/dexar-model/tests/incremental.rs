//! The incremental (KV cache + local backward) path against the naive path
//! (full recompute + candle autograd), and loading variants of a checkpoint.

mod common;

use candle_core::{Device, Tensor};
use common::{fixtures, rel_err, Report};
use dexar_model::{
    encode_image_file, generate_traced, naive_step, Checkpoint, GenerationSettings, LoadOptions,
    Mode,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

const PROMPT: &str = "USER: <image>\nWhat is in the image? ASSISTANT:";

/// Incremental traces vs the naive path at every step; returns the max rel errors.
fn compare_paths(ckpt: &Checkpoint, mode: Mode, max_tokens: usize, report: &mut Report) {
    let cfg = ckpt.llava_config().unwrap();
    let feats = encode_image_file(ckpt, &fixtures().join("images/square.png")).unwrap();
    let prompt = ckpt
        .tokenizer
        .prepare(PROMPT, cfg.image_token_index, cfg.num_image_tokens())
        .unwrap();
    let layers = 0..cfg.text.num_hidden_layers;
    let settings = GenerationSettings {
        max_tokens,
        layers: layers.clone(),
        ..Default::default()
    };
    let mut steps = Vec::new();
    generate_traced(
        ckpt,
        &prompt,
        &feats,
        &settings,
        &mode,
        &AtomicBool::new(false),
        &mut |s| {
            steps.push(s);
            true
        },
    )
    .unwrap();
    assert!(!steps.is_empty());
    let mut ids = prompt.input_ids.clone();
    for step in &steps {
        let tr = &step.trace;
        let naive = naive_step(
            &ckpt.model,
            &ids,
            prompt.input_ids.len(),
            &prompt.image_spans,
            &feats,
            layers.clone(),
            Some(tr.token_id),
        )
        .unwrap();
        report.check(
            "logits",
            rel_err(&step.logits, &naive.logits),
            1e-4,
            "logits",
        );
        report.check(
            "attention",
            rel_err(&tr.attn, &naive.attn),
            1e-4,
            "attention",
        );
        report.check(
            "gradients",
            rel_err(&tr.grads, &naive.grads),
            1e-4,
            "gradients",
        );
        ids.push(tr.token_id);
    }
}

#[test]
fn incremental_matches_naive_on_gqa_mistral() {
    let ckpt =
        Checkpoint::load(&fixtures().join("tiny-bakllava"), &LoadOptions::default()).unwrap();
    assert_eq!(ckpt.llava_config().unwrap().text.model_type, "mistral");
    assert!(
        ckpt.llava_config().unwrap().text.num_key_value_heads
            < ckpt.llava_config().unwrap().text.num_attention_heads
    );
    let mut report = Report::default();
    compare_paths(&ckpt, Mode::Generate, 6, &mut report);
    let target = ckpt
        .tokenizer
        .encode("a red circle above a blue square", false)
        .unwrap();
    compare_paths(&ckpt, Mode::TeacherForced(target), 0, &mut report);
    report.print("incremental vs naive (GQA, mistral)");
}

#[test]
fn incremental_matches_naive_with_a_sliding_window() {
    // Same weights, a window shorter than the sequence: old keys drop out.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-bakllava"), dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["text_config"]["sliding_window"] = serde_json::json!(12);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let ckpt = Checkpoint::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(ckpt.llava_config().unwrap().text.sliding_window, Some(12));
    let mut report = Report::default();
    compare_paths(&ckpt, Mode::Generate, 4, &mut report);
    report.print("incremental vs naive (sliding window)");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn first_logits(dir: &Path) -> Vec<f32> {
    let ckpt = Checkpoint::load(dir, &LoadOptions::default()).unwrap();
    let feats = encode_image_file(&ckpt, &fixtures().join("images/square.png")).unwrap();
    let cfg = ckpt.llava_config().unwrap();
    let prompt = ckpt
        .tokenizer
        .prepare(PROMPT, cfg.image_token_index, cfg.num_image_tokens())
        .unwrap();
    naive_step(
        &ckpt.model,
        &prompt.input_ids,
        prompt.input_ids.len(),
        &prompt.image_spans,
        &feats,
        0..1,
        None,
    )
    .unwrap()
    .logits
}

/// transformers-5 names for a classic llava-hf tensor name.
fn modern_name(k: &str) -> String {
    if let Some(rest) = k.strip_prefix("language_model.model.") {
        format!("model.language_model.{rest}")
    } else if let Some(rest) = k.strip_prefix("language_model.lm_head.") {
        format!("lm_head.{rest}")
    } else {
        format!("model.{k}")
    }
}

#[test]
fn both_weight_layouts_and_sharded_checkpoints_load_identically() {
    let src = fixtures().join("tiny-llava");
    let want = first_logits(&src);
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();

    let modern = tempfile::tempdir().unwrap();
    copy_dir(&src, modern.path());
    let renamed: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (modern_name(k), v.clone()))
        .collect();
    candle_core::safetensors::save(&renamed, modern.path().join("model.safetensors")).unwrap();
    assert_eq!(first_logits(modern.path()), want, "transformers-5 layout");

    let sharded = tempfile::tempdir().unwrap();
    copy_dir(&src, sharded.path());
    std::fs::remove_file(sharded.path().join("model.safetensors")).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (k, v)) in tensors.iter().enumerate() {
        let (shard, name) = if i % 2 == 0 {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        shard.insert(k.clone(), v.clone());
        weight_map.insert(k.clone(), serde_json::json!(name));
    }
    candle_core::safetensors::save(&a, sharded.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&b, sharded.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    assert_eq!(first_logits(sharded.path()), want, "sharded checkpoint");
}

#[test]
fn answer_logprobs_match_the_traced_logits() {
    // Scoring by one full forward equals the log-softmax of the logits the
    // KV-cached teacher-forced generation sees at each step.
    let ckpt = Checkpoint::load(&fixtures().join("tiny-llava"), &LoadOptions::default()).unwrap();
    let cfg = ckpt.llava_config().unwrap();
    let feats = encode_image_file(&ckpt, &fixtures().join("images/square.png")).unwrap();
    let prompt = ckpt
        .tokenizer
        .prepare(PROMPT, cfg.image_token_index, cfg.num_image_tokens())
        .unwrap();
    let target = ckpt
        .tokenizer
        .encode("a red circle above a blue square", false)
        .unwrap();
    let scores = dexar_model::answer_logprobs(&ckpt, &prompt, &feats, &target).unwrap();
    let settings = GenerationSettings {
        layers: 0..1,
        ..Default::default()
    };
    let mut steps = Vec::new();
    generate_traced(
        &ckpt,
        &prompt,
        &feats,
        &settings,
        &Mode::TeacherForced(target.clone()),
        &AtomicBool::new(false),
        &mut |s| {
            steps.push(s);
            true
        },
    )
    .unwrap();
    assert_eq!(scores.len(), target.len());
    for ((step, &t), &lp) in steps.iter().zip(&target).zip(&scores) {
        let max = step
            .logits
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = step
            .logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        let want = step.logits[t as usize] as f64 - lse;
        assert!((lp - want).abs() < 1e-4, "{lp} vs {want}");
    }
}

#[test]
fn half_precision_runs_and_stays_close_to_f32() {
    // f16 / bf16 weights, gradients accumulated in f32: same greedy tokens,
    // gradients within the precision of the format (f16 ~1e-3, bf16 ~8e-3 per op).
    let f32_ckpt =
        Checkpoint::load(&fixtures().join("tiny-llava"), &LoadOptions::default()).unwrap();
    let reference = run_steps(&f32_ckpt);
    for (dtype, tol) in [
        (candle_core::DType::F16, 2e-2),
        (candle_core::DType::BF16, 1e-1),
    ] {
        let ckpt = Checkpoint::load(
            &fixtures().join("tiny-llava"),
            &LoadOptions {
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        let steps = run_steps(&ckpt);
        assert_eq!(
            steps.iter().map(|s| s.trace.token_id).collect::<Vec<_>>(),
            reference
                .iter()
                .map(|s| s.trace.token_id)
                .collect::<Vec<_>>(),
            "{dtype:?} greedy tokens"
        );
        for (a, b) in steps.iter().zip(&reference) {
            let err = rel_err(&a.trace.grads, &b.trace.grads);
            assert!(err < tol, "{dtype:?} gradient rel err {err}");
            println!("{dtype:?} gradient rel err {err:.2e}");
        }
    }
}

fn run_steps(ckpt: &Checkpoint) -> Vec<dexar_model::TracedStep> {
    let cfg = ckpt.llava_config().unwrap();
    let feats = encode_image_file(ckpt, &fixtures().join("images/square.png")).unwrap();
    let prompt = ckpt
        .tokenizer
        .prepare(PROMPT, cfg.image_token_index, cfg.num_image_tokens())
        .unwrap();
    let settings = GenerationSettings {
        max_tokens: 5,
        layers: 0..cfg.text.num_hidden_layers,
        ..Default::default()
    };
    let mut steps = Vec::new();
    generate_traced(
        ckpt,
        &prompt,
        &feats,
        &settings,
        &Mode::Generate,
        &AtomicBool::new(false),
        &mut |s| {
            steps.push(s);
            true
        },
    )
    .unwrap();
    steps
}
