//! Parity with transformers / PyTorch autograd on tiny random PaliGemma and
//! PaliGemma 2 checkpoints (fixtures made by
//! tests/fixtures/paligemma_fixtures.py): prompt
//! ids of task prefixes and a raw prompt as PaliGemmaProcessor builds them,
//! SigLIP pixels and image features, the prefix-LM mask (the prompt's full
//! layer-0 attention), greedy and teacher-forced traces and maps, and the
//! incremental path against the naive one.

mod common;

use candle_core::IndexOp;
use common::{fixtures, rel_err, Fixture, Report, StepMaps};
use dexar_core::{Grid, LayerSelection};
use dexar_model::decoder::Capture;
use dexar_model::{
    load_image, naive_step, GenerationSettings, ImageFeatures, ImageProcessing, Mode, ModelError,
    Pixels, TracedStep, VlModel,
};

const NAMES: [&str; 2] = ["tiny-paligemma", "tiny-paligemma2"];

fn features_of(fx: &Fixture, pixels_key: &str) -> ImageFeatures {
    let side = fx.json["grid"][0].as_u64().unwrap() as u32 * 8;
    let pixels = Pixels {
        data: fx.f32s(pixels_key),
        height: side,
        width: side,
        global: None,
    };
    fx.ckpt.encode_pixels(&pixels).unwrap()
}

#[test]
fn prompts_match_the_paligemma_processor() {
    for name in NAMES {
        prompts_match_the_paligemma_processor_of(name);
    }
}

fn prompts_match_the_paligemma_processor_of(name: &str) {
    let fx = Fixture::load(name);
    let ckpt = &fx.ckpt;
    assert_eq!(ckpt.model_type(), "paligemma");
    let feats = features_of(&fx, "pixel_values.square");
    assert_eq!(feats.grid, Grid::new(4, 4));
    for (prefix, ids) in fx.json["prompts"].as_object().unwrap() {
        let p = ckpt.prepare_chat(&[], prefix, &feats).unwrap();
        let want: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        assert_eq!(p.input_ids, want, "ids of `{prefix}`");
        assert_eq!(p.image_span(), (0, 16), "image span of `{prefix}`");
    }
    assert_eq!(
        ckpt.prepare_chat(&[], fx.json["prompt"].as_str().unwrap(), &feats)
            .unwrap()
            .input_ids,
        fx.ids("input_ids")
    );
    let raw = ckpt
        .prepare_prompt(fx.json["raw_prompt"].as_str().unwrap(), &feats)
        .unwrap();
    assert_eq!(raw.input_ids, fx.ids("raw_prompt_input_ids"), "raw prompt");
    let target = ckpt
        .tokenizer
        .encode(fx.json["target_text"].as_str().unwrap(), false)
        .unwrap();
    assert_eq!(target, fx.ids("target_ids"), "target ids");
    // a prompt that is not a task prefix is refused, naming the prefixes
    match ckpt.prepare_chat(&[], "What is in the image?", &feats) {
        Err(ModelError::Prompt(m)) => {
            assert!(m.contains("unknown PaliGemma task prefix `What`"), "{m}");
            assert!(
                m.contains("caption {lang}") && m.contains("segment {object}"),
                "{m}"
            );
        }
        other => panic!("expected a prompt error, got {other:?}"),
    }
}

#[test]
fn pixels_and_image_features_match_siglip() {
    for name in NAMES {
        pixels_and_image_features_match_siglip_of(name);
    }
}

fn pixels_and_image_features_match_siglip_of(name: &str) {
    let fx = Fixture::load(name);
    let mut report = Report::default();
    let ImageProcessing::Clip(processor) = &fx.ckpt.processor else {
        panic!("not a resize processor")
    };
    for (image, resized) in [("square", false), ("wide", true), ("gray", true)] {
        let img = load_image(&fixtures().join(format!("images/{image}.png"))).unwrap();
        let pixels = processor.preprocess(&img);
        assert_eq!((pixels.height, pixels.width), (32, 32), "{image}");
        let want = fx.f32s(&format!("pixel_values.{image}"));
        common::check_pixels(&mut report, &pixels.data, &want, resized, image);
    }
    let want = fx.f32s("image_features");
    for (what, feats) in [
        ("reference pixels", features_of(&fx, "pixel_values.square")),
        (
            "own pixels",
            dexar_model::encode_image_file(&fx.ckpt, &fixtures().join("images/square.png"))
                .unwrap(),
        ),
    ] {
        let got: Vec<f32> = feats.tokens.flatten_all().unwrap().to_vec1().unwrap();
        report.check("image features rel err", rel_err(&got, &want), 1e-4, what);
    }
    report.print(&format!("{name} vision"));
}

#[test]
fn the_prompt_is_a_bidirectional_prefix() {
    for name in NAMES {
        the_prompt_is_a_bidirectional_prefix_of(name);
    }
}

fn the_prompt_is_a_bidirectional_prefix_of(name: &str) {
    let fx = Fixture::load(name);
    let mut report = Report::default();
    let model = &fx.ckpt.model;
    assert!(matches!(model, VlModel::PaliGemma(_)));
    let feats = features_of(&fx, "pixel_values.square");
    let ids = fx.ids("input_ids");
    let span = fx.span("image_span");
    let input = model.sequence_input(&ids, &[span], &feats).unwrap();
    let out = model
        .decoder()
        .forward_at(
            &input.embeds,
            &model.whole_sequence(&input, &[span], &feats, ids.len()),
            None,
            &Capture {
                full: true,
                ..Capture::default()
            },
        )
        .unwrap();
    let got: Vec<f32> = out.attn[0]
        .i(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = fx.f32s("prefill.attn_layer0");
    report.check(
        "prompt attention (layer 0, all rows) rel err",
        rel_err(&got, &want),
        1e-4,
        "prefix",
    );
    // the first image token sees the last prompt token: not a causal mask
    let p = ids.len();
    assert!(got[p - 1] > 0.0, "row 0 attends to position {}", p - 1);
    report.print(&format!("{name} prefix"));
}

fn run(fx: &Fixture, mode: &Mode, feats: &ImageFeatures, max_tokens: usize) -> Vec<TracedStep> {
    let ckpt = &fx.ckpt;
    let prompt = ckpt
        .prepare_chat(&[], fx.json["prompt"].as_str().unwrap(), feats)
        .unwrap();
    assert_eq!(prompt.input_ids, fx.ids("input_ids"));
    let settings = GenerationSettings {
        max_tokens,
        layers: 0..ckpt.text_config().num_hidden_layers,
        ..Default::default()
    };
    let (steps, _) = common::traced(ckpt, &prompt, feats, &settings, mode);
    steps
}

fn check_traces(name: &str, mode_key: &str) {
    let fx = Fixture::load(name);
    let mut report = Report::default();
    let num_layers = fx.ckpt.text_config().num_hidden_layers;
    let lim2_start = LayerSelection::new(-2).layers(num_layers).start;
    let (mode, want) = match mode_key {
        "gen" => (Mode::Generate, fx.ids("generated_ids")),
        _ => {
            let t = fx.ids("target_ids");
            (Mode::TeacherForced(t.clone()), t)
        }
    };
    let feats = features_of(&fx, "pixel_values.square");
    let steps = run(&fx, &mode, &feats, want.len());
    let tokens: Vec<u32> = steps.iter().map(|s| s.trace.token_id).collect();
    assert_eq!(tokens, want, "{mode_key}: tokens");
    let mut maps = StepMaps::default();
    for (t, step) in steps.iter().enumerate() {
        assert_eq!(step.trace.regions.len(), 1);
        assert_eq!(step.trace.regions[0].grid, feats.grid);
        assert_eq!(step.trace.regions[0].span, (0, 16));
        let key = |k: &str| format!("{mode_key}.{t}.{k}");
        maps.check_step(
            &fx,
            &key,
            step,
            lim2_start,
            &format!("{mode_key} step {t}"),
            &mut report,
        );
    }
    maps.check_sentences(&fx, &|k: &str| format!("{mode_key}.{k}"), name, &mut report);
    report.print(&format!("{name} {mode_key}"));
}

#[test]
fn greedy_generation_matches_pytorch_autograd() {
    for name in NAMES {
        greedy_generation_matches_pytorch_autograd_of(name);
    }
}

fn greedy_generation_matches_pytorch_autograd_of(name: &str) {
    check_traces(name, "gen");
}

#[test]
fn teacher_forced_explanation_matches_pytorch_autograd() {
    for name in NAMES {
        teacher_forced_explanation_matches_pytorch_autograd_of(name);
    }
}

fn teacher_forced_explanation_matches_pytorch_autograd_of(name: &str) {
    check_traces(name, "tf");
}

#[test]
fn incremental_matches_naive() {
    for name in NAMES {
        incremental_matches_naive_of(name);
    }
}

fn incremental_matches_naive_of(name: &str) {
    let fx = Fixture::load(name);
    let mut report = Report::default();
    let feats = features_of(&fx, "pixel_values.square");
    let steps = run(&fx, &Mode::Generate, &feats, 4);
    let span = fx.span("image_span");
    common::check_against_naive(
        &fx.ckpt.model,
        &steps,
        &fx.ids("input_ids"),
        &[span],
        &feats,
        name,
        &mut report,
    );
    // The naive path with a causal mask over the prompt differs: the prefix matters.
    let layers = 0..fx.ckpt.text_config().num_hidden_layers;
    let causal = naive_step(
        &fx.ckpt.model,
        &fx.ids("input_ids"),
        0,
        &[span],
        &feats,
        layers,
        Some(steps[0].trace.token_id),
    )
    .unwrap();
    assert!(rel_err(&steps[0].logits, &causal.logits) > 1e-3);
    report.print(&format!("incremental vs naive ({name})"));
}
