//! Parity with Hugging Face transformers / PyTorch autograd on tiny random
//! LLaVA checkpoints (fixtures made by tests/fixtures/make_fixtures.py).

mod common;

use common::{rel_err, Fixture, Report};
use dexar_core::LayerSelection;
use dexar_model::{encode_image_file, load_image, GenerationSettings, Mode, TracedStep};

fn prompt_text(fx: &Fixture) -> String {
    fx.json["prompt"].as_str().unwrap().to_string()
}

#[test]
fn input_ids_match_transformers() {
    for name in ["tiny-llava", "tiny-bakllava"] {
        let fx = Fixture::load(name);
        let n = fx.ckpt.llava_config().unwrap().num_image_tokens();
        assert_eq!(
            n,
            fx.json["num_image_tokens"].as_u64().unwrap() as usize,
            "{name}: image token count"
        );
        let tok = &fx.ckpt.tokenizer;
        let image_token = fx.ckpt.llava_config().unwrap().image_token_index;
        let p = tok.prepare(&prompt_text(&fx), image_token, n).unwrap();
        assert_eq!(p.input_ids, fx.ids("input_ids"), "{name}: chat prompt ids");
        assert_eq!(p.image_span(), fx.span("image_span"), "{name}: image span");
        let templated = fx
            .ckpt
            .template
            .render(&[], "What is in the image?")
            .unwrap();
        assert_eq!(
            templated,
            prompt_text(&fx),
            "default template reproduces the fixture prompt"
        );
        let raw = tok
            .prepare(fx.json["raw_prompt"].as_str().unwrap(), image_token, n)
            .unwrap();
        assert_eq!(
            raw.input_ids,
            fx.ids("raw_prompt_input_ids"),
            "{name}: raw prompt ids"
        );
        assert_eq!(raw.image_span(), fx.span("raw_prompt_image_span"));
        let target = tok
            .encode(fx.json["target_text"].as_str().unwrap(), false)
            .unwrap();
        assert_eq!(target, fx.ids("target_ids"), "{name}: target ids");
    }
}

#[test]
fn pixel_values_match_the_clip_processor() {
    let fx = Fixture::load("tiny-llava");
    let dir = common::fixtures().join("images");
    let mut report = Report::default();
    for (file, exact) in [
        ("square.png", true),
        ("wide.png", false),
        ("gray.png", false),
    ] {
        let img = load_image(&dir.join(file)).unwrap();
        let pixels = fx.ckpt.processor.preprocess(&img).unwrap();
        assert_eq!((pixels.height, pixels.width), (32, 32));
        let pixels = pixels.data;
        let want = fx.f32s(&format!("pixel_values.{}", file.trim_end_matches(".png")));
        common::check_pixels(&mut report, &pixels, &want, !exact, file);
    }
    report.print("pixels");
}

fn traces(
    fx: &Fixture,
    mode: &Mode,
    layers: std::ops::Range<usize>,
) -> (Vec<TracedStep>, Vec<u32>) {
    let ckpt = &fx.ckpt;
    let feats = encode_image_file(ckpt, &common::fixtures().join("images/square.png")).unwrap();
    let prompt = ckpt
        .tokenizer
        .prepare(
            &prompt_text(fx),
            ckpt.llava_config().unwrap().image_token_index,
            ckpt.llava_config().unwrap().num_image_tokens(),
        )
        .unwrap();
    let settings = GenerationSettings {
        max_tokens: 5,
        layers,
        ..Default::default()
    };
    common::traced(ckpt, &prompt, &feats, &settings, mode)
}

fn check_mode(name: &str, mode_key: &str, report: &mut Report) {
    let fx = Fixture::load(name);
    let num_layers = fx.ckpt.llava_config().unwrap().text.num_hidden_layers;
    let mode = if mode_key == "gen" {
        Mode::Generate
    } else {
        Mode::TeacherForced(fx.ids("target_ids"))
    };
    let (steps, tokens) = traces(&fx, &mode, 0..num_layers);
    let want_tokens = fx.ids(if mode_key == "gen" {
        "generated_ids"
    } else {
        "target_ids"
    });
    assert_eq!(tokens, want_tokens, "{name} {mode_key}: tokens");
    let feats = encode_image_file(&fx.ckpt, &common::fixtures().join("images/square.png")).unwrap();
    let feats: Vec<f32> = feats.tensor().flatten_all().unwrap().to_vec1().unwrap();
    report.check(
        "image features rel err",
        rel_err(&feats, &fx.f32s("image_features")),
        1e-4,
        "image features",
    );

    let lim2_start = LayerSelection::new(-2).layers(num_layers).start;
    let mut maps = common::StepMaps::default();
    for (t, step) in steps.iter().enumerate() {
        let key = |k: &str| format!("{mode_key}.{t}.{k}");
        let what = format!("{name} {mode_key} step {t}");
        maps.check_step(&fx, &key, step, lim2_start, &what, report);
    }
    maps.check_sentences(&fx, &|k: &str| format!("{mode_key}.{k}"), name, report);
}

#[test]
fn greedy_generation_matches_pytorch_autograd() {
    let mut report = Report::default();
    for name in ["tiny-llava", "tiny-bakllava"] {
        check_mode(name, "gen", &mut report);
    }
    report.print("greedy");
}

#[test]
fn teacher_forced_explanation_matches_pytorch_autograd() {
    let mut report = Report::default();
    for name in ["tiny-llava", "tiny-bakllava"] {
        check_mode(name, "tf", &mut report);
    }
    report.print("teacher-forced");
}
