//! Parity with transformers / PyTorch autograd on tiny random Qwen2-VL,
//! Qwen2.5-VL and Qwen3-VL checkpoints (fixtures made by
//! tests/fixtures/qwen_fixtures.py): prompts through the checkpoints' own
//! chat templates, image processing, M-RoPE positions, vision towers
//! (DeepStack included), greedy and teacher-forced traces and maps, on an
//! image already at a valid size and on one resized to a non-square grid;
//! and the incremental path against the naive one.

mod common;

use common::{fixtures, ids_of, rel_err, Fixture, Report, StepMaps};
use dexar_core::{Grid, LayerSelection};
use dexar_model::{load_image, ImageFeatures, ImageProcessing, VlModel};
use serde_json::Value;

const FAMILIES: [&str; 3] = ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl"];
const IMAGES: [&str; 2] = ["qwen-valid", "wide"];

fn pair(v: &Value) -> (usize, usize) {
    (
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

/// Image features from transformers' own pixel values of `image` (so that
/// everything downstream is compared without the resampling difference).
fn reference_features(fx: &Fixture, image: &str) -> ImageFeatures {
    let VlModel::QwenVl(model) = &fx.ckpt.model else {
        panic!("not a Qwen-VL checkpoint")
    };
    let thw = &fx.json["runs"][image]["grid_thw"];
    let grid = (
        thw[1].as_u64().unwrap() as usize,
        thw[2].as_u64().unwrap() as usize,
    );
    model
        .encode_patches(&fx.f32s(&format!("{image}.pixel_values")), grid)
        .unwrap()
}

fn own_features(fx: &Fixture, image: &str) -> ImageFeatures {
    let img = load_image(&fixtures().join(format!("images/{image}.png"))).unwrap();
    fx.ckpt.encode_image(&img).unwrap()
}

#[test]
fn prompts_match_transformers_chat_templates_and_processors() {
    for name in FAMILIES {
        let fx = Fixture::load(name);
        let ckpt = &fx.ckpt;
        let (question, turns) = common::check_templates(&fx, name);
        let multi = &fx.json["multi_turn"];
        let valid = own_features(&fx, "qwen-valid");
        let p = ckpt.prepare_chat(&turns, question, &valid).unwrap();
        assert_eq!(
            p.input_ids,
            ids_of(&multi["input_ids"]),
            "{name}: multi-turn ids"
        );
        for image in IMAGES {
            let run = &fx.json["runs"][image];
            let feats = own_features(&fx, image);
            let g = &run["grid"];
            assert_eq!(
                feats.grid,
                Grid::new(
                    g[0].as_u64().unwrap() as usize,
                    g[1].as_u64().unwrap() as usize
                ),
                "{name} {image}: merged grid"
            );
            let p = ckpt.prepare_chat(&[], question, &feats).unwrap();
            assert_eq!(
                p.input_ids,
                ids_of(&run["input_ids"]),
                "{name} {image}: ids"
            );
            assert_eq!(
                p.image_span(),
                pair(&run["image_span"]),
                "{name} {image}: span"
            );
            let raw = fx.json["raw_prompt"].as_str().unwrap();
            let r = ckpt.prepare_prompt(raw, &feats).unwrap();
            assert_eq!(
                r.input_ids,
                ids_of(&run["raw_prompt_input_ids"]),
                "{name} {image}: raw ids"
            );
            assert_eq!(r.image_span(), pair(&run["raw_prompt_image_span"]));
            // `<image>` in a raw prompt stands for the vision block
            let short = raw.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>");
            assert_eq!(
                ckpt.prepare_prompt(&short, &feats).unwrap().input_ids,
                r.input_ids
            );
        }
        let target = ckpt
            .tokenizer
            .encode(fx.json["target_text"].as_str().unwrap(), false)
            .unwrap();
        assert_eq!(target, ids_of(&fx.json["target_ids"]), "{name}: target ids");
    }
}

#[test]
fn pixel_values_match_the_qwen2_vl_image_processor() {
    for name in FAMILIES {
        let mut report = Report::default();
        let fx = Fixture::load(name);
        let ImageProcessing::Qwen(processor) = &fx.ckpt.processor else {
            panic!("{name}: not a Qwen processor")
        };
        for (image, info) in fx.json["pixels"].as_object().unwrap() {
            let img = load_image(&fixtures().join(info["file"].as_str().unwrap())).unwrap();
            let pixels = processor.preprocess(&img).unwrap();
            let (patches, (gh, gw)) = processor.patchify(&pixels).unwrap();
            let thw = ids_of(&info["grid_thw"]);
            assert_eq!(
                thw,
                [1, gh as u32, gw as u32],
                "{name} {image}: image_grid_thw"
            );
            let want = fx.f32s(&format!("pixel_values.{image}"));
            let size = ids_of(&info["size"]);
            let resized = size != [pixels.height, pixels.width];
            common::check_pixels(&mut report, &patches, &want, resized, image);
        }
        report.print(&format!("{name} pixels"));
    }
}

#[test]
fn mrope_positions_and_vision_towers_match_transformers() {
    for name in FAMILIES {
        let mut report = Report::default();
        let fx = Fixture::load(name);
        for image in IMAGES {
            let run = &fx.json["runs"][image];
            let feats = reference_features(&fx, image);
            let ids = ids_of(&run["input_ids"]);
            let span = pair(&run["image_span"]);
            let input = fx.ckpt.model.sequence_input(&ids, &[span], &feats).unwrap();
            let dexar_model::decoder::RopePositions::Multi(pos) = &input.rope else {
                panic!("{name}: no 3-D positions")
            };
            let want = run["position_ids"].as_array().unwrap();
            for (axis, row) in want.iter().enumerate() {
                let got: Vec<u32> = pos.iter().map(|p| p[axis]).collect();
                assert_eq!(
                    got,
                    ids_of(row),
                    "{name} {image}: position ids, axis {axis}"
                );
            }
            assert_eq!(
                input.rope_delta,
                run["rope_delta"].as_i64().unwrap(),
                "{name} {image}: rope delta"
            );
            let what = format!("{name} {image}");
            let tokens: Vec<f32> = feats.tokens.flatten_all().unwrap().to_vec1().unwrap();
            report.check(
                "image features rel err",
                rel_err(&tokens, &fx.f32s(&format!("{image}.image_features"))),
                1e-4,
                &what,
            );
            for (i, d) in feats.deepstack.iter().enumerate() {
                let d: Vec<f32> = d.flatten_all().unwrap().to_vec1().unwrap();
                report.check(
                    "DeepStack features rel err",
                    rel_err(&d, &fx.f32s(&format!("{image}.deepstack.{i}"))),
                    1e-4,
                    &what,
                );
            }
            let n_ds = fx
                .tensors
                .keys()
                .filter(|k| k.starts_with(&format!("{image}.deepstack.")))
                .count();
            assert_eq!(feats.deepstack.len(), n_ds, "{what}: DeepStack features");
        }
        // Our own pixels of the valid-size image give the same features.
        let own: Vec<f32> = own_features(&fx, "qwen-valid")
            .tokens
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        report.check(
            "image features rel err (own pixels)",
            rel_err(&own, &fx.f32s("qwen-valid.image_features")),
            1e-4,
            name,
        );
        report.print(&format!("{name} vision"));
    }
}

fn check_traces(mode_key: &str) {
    for name in FAMILIES {
        let mut report = Report::default();
        let fx = Fixture::load(name);
        let num_layers = fx.ckpt.text_config().num_hidden_layers;
        let lim2_start = LayerSelection::new(-2).layers(num_layers).start;
        for image in IMAGES {
            let (mode, want) = common::mode_of(&fx, image, mode_key);
            let feats = reference_features(&fx, image);
            let (steps, tokens) = common::run_question(&fx, image, &mode, &feats, want.len());
            assert_eq!(tokens, want, "{name} {image} {mode_key}: tokens");
            let mut maps = StepMaps::default();
            for (t, step) in steps.iter().enumerate() {
                assert_eq!(step.trace.regions[0].grid, feats.grid);
                let key = |k: &str| format!("{image}.{mode_key}.{t}.{k}");
                maps.check_step(
                    &fx,
                    &key,
                    step,
                    lim2_start,
                    &format!("{name} {image} {mode_key} step {t}"),
                    &mut report,
                );
            }
            maps.check_sentences(
                &fx,
                &|k: &str| format!("{image}.{mode_key}.{k}"),
                name,
                &mut report,
            );
        }
        report.print(&format!("{name} {mode_key}"));
    }
}

#[test]
fn greedy_generation_matches_pytorch_autograd() {
    check_traces("gen");
}

#[test]
fn teacher_forced_explanation_matches_pytorch_autograd() {
    check_traces("tf");
}

#[test]
fn incremental_matches_naive_for_every_family() {
    for name in FAMILIES {
        let mut report = Report::default();
        let fx = Fixture::load(name);
        for image in IMAGES {
            let feats = reference_features(&fx, image);
            common::check_incremental(&fx, image, &feats, &mut report, name);
        }
        report.print(&format!("incremental vs naive ({name})"));
    }
}
