//! Parity with transformers / PyTorch autograd on a tiny random SmolVLM
//! checkpoint (fixtures made by tests/fixtures/smolvlm_fixtures.py): the
//! checkpoint's chat template, the processor's split into tiles and a global
//! view and its `<fake_token_around_image>` / `<row_r_col_c>` / `<global-img>`
//! layout, pixels, the SigLIP tower and pixel-shuffle connector, greedy and
//! teacher-forced traces and maps region by region (2x2 tiles of a square
//! image, 2x1 of a tall one), the tiles' composed map and the global view's;
//! the incremental path against the naive one; and a checkpoint whose tiles
//! do not fit its vision tower, refused.

mod common;

use candle_core::{Device, Tensor};
use common::{cells, fixtures, ids_of, max_abs, mean_abs, rel_err, Fixture, Report, StepMaps};
use dexar_core::{
    builtin_strategy, minmax, Grid, ImageRegion, LayerSelection, RegionKind, TokenMap,
};
use dexar_model::{load_image, Checkpoint, ImageFeatures, LoadOptions, ModelError, VlModel};
use serde_json::Value;

const NAME: &str = "tiny-smolvlm";
const IMAGES: [&str; 2] = ["smol-square", "smol-tall"];

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// Features of transformers' own pixel values (tiles, then the global view).
fn reference_features(fx: &Fixture, image: &str) -> ImageFeatures {
    let VlModel::SmolVlm(model) = &fx.ckpt.model else {
        panic!("not a SmolVLM checkpoint")
    };
    let run = &fx.json["runs"][image];
    let frames = fx.tensors[&format!("{image}.pixel_values")].clone();
    model
        .features(&frames, usize_of(&run["rows"]), usize_of(&run["cols"]))
        .unwrap()
}

fn own_features(fx: &Fixture, image: &str) -> ImageFeatures {
    let img = load_image(&fixtures().join(format!("images/{image}.png"))).unwrap();
    fx.ckpt.encode_image(&img).unwrap()
}

/// The fixture's regions of a run: spans, grids, boxes, kinds.
fn fixture_regions(v: &Value) -> Vec<ImageRegion> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let span = (usize_of(&r["span"][0]), usize_of(&r["span"][1]));
            let grid = Grid::new(usize_of(&r["grid"][0]), usize_of(&r["grid"][1]));
            let b = &r["box"];
            let bbox = [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap() as f32);
            let kind = if r["kind"] == "tile" {
                RegionKind::Tile
            } else {
                RegionKind::Global
            };
            ImageRegion {
                kind,
                span,
                grid,
                bbox,
            }
        })
        .collect()
}

#[test]
fn prompts_match_the_chat_template_and_the_image_splitting() {
    let fx = Fixture::load(NAME);
    let ckpt = &fx.ckpt;
    assert_eq!(ckpt.model_type(), "smolvlm");
    let (question, turns) = common::check_templates(&fx, NAME);
    let multi = &fx.json["multi_turn"];
    let square = own_features(&fx, "smol-square");
    let p = ckpt.prepare_chat(&turns, question, &square).unwrap();
    assert_eq!(p.input_ids, ids_of(&multi["input_ids"]), "multi-turn ids");
    for image in IMAGES {
        let run = &fx.json["runs"][image];
        let feats = own_features(&fx, image);
        let (rows, cols) = (usize_of(&run["rows"]), usize_of(&run["cols"]));
        assert_eq!(feats.tiles(), (rows, cols), "{image}: tiles");
        assert_eq!(
            feats.grid,
            Grid::new(4 * rows, 4 * cols),
            "{image}: composed grid"
        );
        let p = ckpt.prepare_chat(&[], question, &feats).unwrap();
        assert_eq!(p.input_ids, ids_of(&run["input_ids"]), "{image}: ids");
        let want = fixture_regions(&run["regions"]);
        let got = feats.regions(&p.image_spans);
        assert_eq!(got, want, "{image}: regions");
        assert_eq!(p.image_span(), want[0].span);
        let raw = fx.json["raw_prompt"].as_str().unwrap();
        let r = ckpt.prepare_prompt(raw, &feats).unwrap();
        assert_eq!(
            r.input_ids,
            ids_of(&run["raw_prompt_input_ids"]),
            "{image}: raw ids"
        );
        let raw_spans: Vec<(usize, usize)> = fixture_regions(&run["raw_prompt_regions"])
            .iter()
            .map(|r| r.span)
            .collect();
        assert_eq!(r.image_spans, raw_spans, "{image}: raw regions");
    }
    let target = ckpt
        .tokenizer
        .encode(fx.json["target_text"].as_str().unwrap(), false)
        .unwrap();
    assert_eq!(target, ids_of(&fx.json["target_ids"]), "target ids");
    // A prompt needs its one image marker.
    let e = ckpt.prepare_prompt("no image here", &square).unwrap_err();
    assert!(e.to_string().contains("<image>"), "{e}");
}

#[test]
fn pixel_values_match_the_smolvlm_image_processor() {
    let mut report = Report::default();
    let fx = Fixture::load(NAME);
    let dexar_model::ImageProcessing::Smol(processor) = &fx.ckpt.processor else {
        panic!("not a SmolVLM processor")
    };
    for (image, info) in fx.json["pixels"].as_object().unwrap() {
        let img = load_image(&fixtures().join(info["file"].as_str().unwrap())).unwrap();
        let pixels = processor.preprocess(&img);
        let t = processor.tile as usize;
        let (rows, cols) = (usize_of(&info["rows"]), usize_of(&info["cols"]));
        let whole = Tensor::from_slice(
            &pixels.data,
            (3, pixels.height as usize, pixels.width as usize),
            &Device::Cpu,
        )
        .unwrap();
        let want = &fx.tensors[&format!("pixel_values.{image}")];
        assert_eq!(want.dims(), &[rows * cols + 1, 3, t, t], "{image}: frames");
        // The tiles are crops of the image resized to whole tiles: exact when
        // that resize keeps the size (the square image), else resampled.
        let resized = [pixels.width, pixels.height] != [64, 64];
        for r in 0..rows {
            for c in 0..cols {
                let got: Vec<f32> = whole
                    .narrow(1, r * t, t)
                    .unwrap()
                    .narrow(2, c * t, t)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let w: Vec<f32> = want
                    .get(r * cols + c)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                common::check_pixels(&mut report, &got, &w, resized, image);
            }
        }
        // The global view is always resampled (Lanczos; PIL's and image's differ slightly).
        let global = pixels
            .global
            .as_ref()
            .expect("a split image has a global view");
        let w: Vec<f32> = want
            .get(rows * cols)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        report.check(
            "global view pixel mean abs err",
            mean_abs(&global.data, &w),
            0.02,
            image,
        );
    }
    report.print("smolvlm pixels");
}

#[test]
fn vision_tower_and_connector_match_transformers() {
    let mut report = Report::default();
    let fx = Fixture::load(NAME);
    for image in IMAGES {
        let feats = reference_features(&fx, image);
        let tokens: Vec<f32> = feats.tokens.flatten_all().unwrap().to_vec1().unwrap();
        report.check(
            "image features rel err",
            rel_err(&tokens, &fx.f32s(&format!("{image}.image_features"))),
            1e-4,
            image,
        );
    }
    // Our own pixels of the square image: its tiles are exact, so are their tokens.
    let own = own_features(&fx, "smol-square");
    let d = fx.ckpt.text_config().hidden_size;
    let tiles = 4 * 16 * d;
    let own: Vec<f32> = own.tokens.flatten_all().unwrap().to_vec1().unwrap();
    let want = fx.f32s("smol-square.image_features");
    report.check(
        "tile features rel err (own pixels)",
        rel_err(&own[..tiles], &want[..tiles]),
        1e-4,
        "smol-square",
    );
    report.print("smolvlm vision");
}

/// The composed and global maps of one step and each region's, against the fixture.
fn check_regions(
    fx: &Fixture,
    key: &dyn Fn(&str) -> String,
    m: &TokenMap,
    what: &str,
    report: &mut Report,
) {
    let want = fx.f32s(&key("dexar"));
    let mut at = 0;
    for (k, r) in m.regions.iter().enumerate() {
        let n = r.grid.len();
        report.check(
            "dexar map abs err, region by region",
            max_abs(&r.raw, &want[at..at + n]),
            1e-4,
            &format!("{what} region {k}"),
        );
        at += n;
    }
    assert_eq!(at, want.len(), "{what}: every cell in a region");
    report.check(
        "composed map abs err",
        max_abs(&m.raw, &fx.f32s(&key("dexar_composed"))),
        1e-4,
        what,
    );
    let (_, global) = m.global().unwrap();
    report.check(
        "global view map abs err",
        max_abs(global, &fx.f32s(&key("dexar_global"))),
        1e-4,
        what,
    );
}

fn check_traces(mode_key: &str) {
    let mut report = Report::default();
    let fx = Fixture::load(NAME);
    let num_layers = fx.ckpt.text_config().num_hidden_layers;
    let lim2_start = LayerSelection::new(-2).layers(num_layers).start;
    for image in IMAGES {
        let runinfo = &fx.json["runs"][image];
        let (mode, want) = common::mode_of(&fx, image, mode_key);
        let feats = reference_features(&fx, image);
        let (steps, tokens) = common::run_question(&fx, image, &mode, &feats, want.len());
        assert_eq!(tokens, want, "{image} {mode_key}: tokens");
        let regions = fixture_regions(&runinfo["regions"]);
        let mut maps = StepMaps::default();
        for (t, step) in steps.iter().enumerate() {
            let spans: Vec<(usize, usize)> = step.trace.regions.iter().map(|r| r.span).collect();
            assert_eq!(spans, regions.iter().map(|r| r.span).collect::<Vec<_>>());
            let key = |k: &str| format!("{image}.{mode_key}.{t}.{k}");
            let what = format!("{image} {mode_key} step {t}");
            maps.check_step(&fx, &key, step, lim2_start, &what, &mut report);
            check_regions(&fx, &key, maps.dexar.last().unwrap(), &what, &mut report);
            assert_eq!(
                cells(maps.dexar.last().unwrap()).len(),
                step.trace.num_cells()
            );
        }
        let sentence_key = |k: &str| format!("{image}.{mode_key}.{k}");
        maps.check_sentences(&fx, &sentence_key, image, &mut report);
        let global = minmax(&dexar_core::maps::weighted_global_sum(&maps.dexar)).0;
        report.check(
            "global view sentence map abs err",
            max_abs(&global, &fx.f32s(&sentence_key("sentence_dexar_global"))),
            1e-4,
            image,
        );
        // The built-in sentence map is the composed one.
        let sentence = builtin_strategy("dexar", 1)
            .unwrap()
            .sentence_map(&maps.dexar)
            .unwrap();
        assert_eq!(sentence.len(), feats.grid.len());
    }
    report.print(&format!("smolvlm {mode_key}"));
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
fn incremental_matches_naive() {
    let mut report = Report::default();
    let fx = Fixture::load(NAME);
    for image in IMAGES {
        let feats = reference_features(&fx, image);
        common::check_incremental(&fx, image, &feats, &mut report, image);
    }
    report.print("incremental vs naive (smolvlm)");
}

/// A copy of the fixture checkpoint with one file's JSON edited.
fn edited_checkpoint(file: &str, edit: impl Fn(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join(NAME);
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join(file);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    dir
}

#[test]
fn tiles_that_do_not_fit_the_vision_tower_are_refused() {
    // 24 is not the tower's 32-pixel image_size: the tiles would not give the
    // image tokens the prompt announces.
    let dir = edited_checkpoint("preprocessor_config.json", |v| {
        v["max_image_size"] = serde_json::json!({"longest_edge": 24});
    });
    let e = Checkpoint::load(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, ModelError::BadFile { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("max_image_size.longest_edge 24") && msg.contains("image_size 32"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    // An image_seq_len the tiles do not make.
    let dir = edited_checkpoint("processor_config.json", |v| v["image_seq_len"] = 64.into());
    let msg = Checkpoint::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("image_seq_len 64") && msg.contains("16 tokens"),
        "{msg}"
    );
    // A scale factor that does not divide the tower's 8 patches a side.
    let dir = edited_checkpoint("config.json", |v| v["scale_factor"] = 3.into());
    let msg = Checkpoint::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("scale_factor (3)"), "{msg}");
}

#[test]
fn an_idefics3_checkpoint_loads_as_the_same_architecture() {
    // SmolVLM-256M/500M were published as Idefics3ForConditionalGeneration:
    // the same weights, processor and prompt under another model_type.
    let dir = edited_checkpoint("config.json", |v| {
        v["model_type"] = "idefics3".into();
        v["architectures"] = serde_json::json!(["Idefics3ForConditionalGeneration"]);
        v["vision_config"]["model_type"] = "idefics3_vision".into();
    });
    let ckpt = Checkpoint::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(ckpt.model_type(), "idefics3");
    let fx = Fixture::load(NAME);
    let img = load_image(&fixtures().join("images/smol-square.png")).unwrap();
    let question = fx.json["question"].as_str().unwrap();
    let p = ckpt
        .prepare_chat(&[], question, &ckpt.encode_image(&img).unwrap())
        .unwrap();
    assert_eq!(
        p.input_ids,
        ids_of(&fx.json["runs"]["smol-square"]["input_ids"])
    );
    // Another vision tower is named as such.
    let dir = edited_checkpoint("config.json", |v| {
        v["vision_config"]["model_type"] = "clip_vision_model".into();
    });
    let e = Checkpoint::load(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("vision tower clip_vision_model"),
        "{e}"
    );
}
