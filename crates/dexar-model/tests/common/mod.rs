//! Shared helpers of the parity tests: fixture paths, loading, error measures.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use dexar_core::{builtin_strategy, HeadScores, TokenMap};
use dexar_model::{
    generate_traced, naive_step, Checkpoint, GenerationSettings, ImageFeatures, LoadOptions, Mode,
    PreparedPrompt, TracedStep, Turn, VlModel,
};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub struct Fixture {
    pub ckpt: Checkpoint,
    pub json: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let dir = fixtures();
        let ckpt = Checkpoint::load(&dir.join(name), &LoadOptions::default())
            .expect("fixture checkpoint loads");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let tensors = candle_core::safetensors::load(
            dir.join(format!("{name}.expected.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        Fixture {
            ckpt,
            json,
            tensors,
        }
    }

    pub fn f32s(&self, key: &str) -> Vec<f32> {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture tensor {key}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }

    pub fn span(&self, key: &str) -> (usize, usize) {
        let a = self.json[key].as_array().unwrap();
        (
            a[0].as_u64().unwrap() as usize,
            a[1].as_u64().unwrap() as usize,
        )
    }
}

/// `max |a - b| / max |b|`: error relative to the reference's scale.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b
        .iter()
        .fold(0f64, |m, &x| m.max((x as f64).abs()))
        .max(1e-12);
    max_abs(a, b) / scale
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
}

pub fn mean_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

/// Records the largest error seen per check and prints it (for the closing note).
#[derive(Default)]
pub struct Report(pub std::collections::BTreeMap<String, f64>);

impl Report {
    pub fn check(&mut self, name: &str, err: f64, tol: f64, what: &str) {
        assert!(err <= tol, "{what}: {name} {err:.3e} exceeds {tol:.0e}");
        let e = self.0.entry(name.to_string()).or_insert(0.0);
        *e = e.max(err);
    }

    pub fn print(&self, title: &str) {
        for (k, v) in &self.0 {
            println!("{title} max {k}: {v:.3e}");
        }
    }
}

/// Every step of a traced generation, and the tokens.
pub fn traced(
    ckpt: &Checkpoint,
    prompt: &PreparedPrompt,
    feats: &ImageFeatures,
    settings: &GenerationSettings,
    mode: &Mode,
) -> (Vec<TracedStep>, Vec<u32>) {
    let mut steps = Vec::new();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let gen = generate_traced(ckpt, prompt, feats, settings, mode, &cancel, &mut |s| {
        steps.push(s);
        true
    })
    .unwrap();
    (steps, gen.tokens)
}

/// The checkpoint's chat template renders the fixture's question, alone and
/// after the earlier turns, as transformers did; returns both.
pub fn check_templates<'a>(fx: &'a Fixture, name: &str) -> (&'a str, Vec<Turn>) {
    let question = fx.json["question"].as_str().unwrap();
    assert_eq!(
        fx.ckpt.template.render(&[], question).unwrap(),
        fx.json["prompt_text"].as_str().unwrap(),
        "{name}: template"
    );
    let multi = &fx.json["multi_turn"];
    let turns: Vec<Turn> = multi["earlier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Turn {
            user: p[0].as_str().unwrap().into(),
            assistant: p[1].as_str().unwrap().into(),
        })
        .collect();
    assert_eq!(
        fx.ckpt.template.render(&turns, question).unwrap(),
        multi["text"].as_str().unwrap(),
        "{name}: multi-turn template"
    );
    (question, turns)
}

/// The mode of a fixture run and the tokens it must give: greedy (`gen`,
/// the run's generated ids) or teacher-forced (`tf`, the fixture's target).
pub fn mode_of(fx: &Fixture, image: &str, mode_key: &str) -> (Mode, Vec<u32>) {
    if mode_key == "gen" {
        (
            Mode::Generate,
            ids_of(&fx.json["runs"][image]["generated_ids"]),
        )
    } else {
        let t = ids_of(&fx.json["target_ids"]);
        (Mode::TeacherForced(t.clone()), t)
    }
}

/// Four greedy steps of the fixture's question about `image`, each against
/// the naive path (full recompute and autograd) on the same image regions.
pub fn check_incremental(
    fx: &Fixture,
    image: &str,
    feats: &ImageFeatures,
    report: &mut Report,
    what: &str,
) {
    let (steps, _) = run_question(fx, image, &Mode::Generate, feats, 4);
    let spans: Vec<(usize, usize)> = steps[0].trace.regions.iter().map(|r| r.span).collect();
    check_against_naive(
        &fx.ckpt.model,
        &steps,
        &ids_of(&fx.json["runs"][image]["input_ids"]),
        &spans,
        feats,
        what,
        report,
    );
}

/// Token ids of a JSON array.
pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The fixture's question about `image` in the chat template (its ids as
/// the fixture's run records them), answered or explained with every layer
/// traced.
pub fn run_question(
    fx: &Fixture,
    image: &str,
    mode: &Mode,
    feats: &ImageFeatures,
    max_tokens: usize,
) -> (Vec<TracedStep>, Vec<u32>) {
    let ckpt = &fx.ckpt;
    let prompt = ckpt
        .prepare_chat(&[], fx.json["question"].as_str().unwrap(), feats)
        .unwrap();
    assert_eq!(
        prompt.input_ids,
        ids_of(&fx.json["runs"][image]["input_ids"])
    );
    let settings = GenerationSettings {
        max_tokens,
        layers: 0..ckpt.text_config().num_hidden_layers,
        ..Default::default()
    };
    traced(ckpt, &prompt, feats, &settings, mode)
}

/// Pixel values against the reference: to 1e-5 when the image needed no
/// resizing, else in the mean (resamplers differ), 0.02.
pub fn check_pixels(report: &mut Report, got: &[f32], want: &[f32], resized: bool, what: &str) {
    if resized {
        report.check(
            "pixel mean abs err (resized)",
            mean_abs(got, want),
            0.02,
            what,
        );
    } else {
        report.check("pixel abs err (input size)", max_abs(got, want), 1e-5, what);
    }
}

/// The grid cells of a map over the image span (a leading CLS value dropped).
pub fn grid_part(v: &[f32], grid_len: usize) -> &[f32] {
    &v[v.len() - grid_len..]
}

/// A token map's values cell by cell over every region, region after region.
pub fn cells(map: &TokenMap) -> Vec<f32> {
    if map.regions.is_empty() {
        return map.raw.clone();
    }
    map.regions
        .iter()
        .flat_map(|r| r.raw.iter().copied())
        .collect()
}

/// Checks traced steps against the fixture's PyTorch / NumPy values and
/// keeps their maps for the sentence maps.
#[derive(Default)]
pub struct StepMaps {
    pub dexar: Vec<TokenMap>,
    pub unfiltered: Vec<TokenMap>,
}

impl StepMaps {
    /// Logits, attention and gradients (1e-4 relative), head scores, token
    /// weights and the maps of every built-in strategy (1e-4 absolute) of one
    /// step; `key(name)` is the fixture tensor of that quantity.
    pub fn check_step(
        &mut self,
        fx: &Fixture,
        key: &dyn Fn(&str) -> String,
        step: &TracedStep,
        lim2_start: usize,
        what: &str,
        report: &mut Report,
    ) {
        let tr = &step.trace;
        tr.validate().unwrap();
        assert_eq!(tr.query_position + 1, tr.num_positions);
        // Maps are compared cell by cell over every region (region after
        // region, as the fixtures store them); the displayed map is the
        // tiles composed (or the one region).
        let grid_len = tr.num_cells();
        let f = |k: &str| fx.f32s(&key(k));
        report.check(
            "logits rel err",
            rel_err(&step.logits, &f("logits")),
            1e-4,
            &format!("{what} logits"),
        );
        report.check(
            "attention rel err",
            rel_err(&tr.attn, &f("attn")),
            1e-4,
            &format!("{what} attention"),
        );
        report.check(
            "gradient rel err",
            rel_err(&tr.grads, &f("grad")),
            1e-4,
            &format!("{what} gradients"),
        );
        let scores = HeadScores::compute(tr, 1);
        report.check(
            "S_v abs err",
            max_abs(&scores.visual, &f("s_v")),
            1e-4,
            what,
        );
        report.check(
            "S_text abs err",
            max_abs(&scores.text, &f("s_text")),
            1e-4,
            what,
        );
        report.check(
            "head weight abs err",
            max_abs(&scores.weights, &f("head_weights")),
            1e-4,
            what,
        );
        let strategy = |name: &str| builtin_strategy(name, 1).unwrap();
        let m = strategy("dexar").token_map(tr).unwrap();
        report.check(
            "delta abs err",
            max_abs(&[m.weight], &f("delta")),
            1e-4,
            what,
        );
        let map_err = |map: &TokenMap, k: &str| max_abs(&cells(map), grid_part(&f(k), grid_len));
        report.check("dexar map abs err", map_err(&m, "dexar"), 1e-4, what);
        let shown = m.normalized();
        report.check(
            "dexar normalised map abs err",
            max_abs(&shown, grid_part(&f("dexar_norm"), shown.len())),
            1e-4,
            what,
        );
        for (name, tensor, check) in [
            (
                "dexar-unfiltered",
                "dexar_unfiltered",
                "unfiltered map abs err",
            ),
            (
                "raw-attention",
                "raw_attention",
                "raw attention map abs err",
            ),
            ("grad-x-attn", "grad_x_attn", "grad-x-attn map abs err"),
        ] {
            let map = strategy(name).token_map(tr).unwrap();
            report.check(check, map_err(&map, tensor), 1e-4, what);
            if name == "dexar-unfiltered" {
                self.unfiltered.push(map);
            }
        }
        let lim2 = strategy("dexar")
            .token_map(&tr.restricted_to_layers_from(lim2_start))
            .unwrap();
        report.check(
            "dexar layer_index=-2 map abs err",
            map_err(&lim2, "dexar_lim2"),
            1e-4,
            what,
        );
        report.check(
            "delta layer_index=-2 abs err",
            max_abs(&[lim2.weight], &f("delta_lim2")),
            1e-4,
            what,
        );
        self.dexar.push(m);
    }

    /// The sentence maps of the steps checked so far (`key("sentence_dexar")`, ...).
    pub fn check_sentences(
        &self,
        fx: &Fixture,
        key: &dyn Fn(&str) -> String,
        what: &str,
        report: &mut Report,
    ) {
        let grid_len = self.dexar.first().map_or(0, |m| m.grid.len());
        for (strategy, maps, name, tensor) in [
            (
                "dexar",
                &self.dexar,
                "sentence map abs err",
                "sentence_dexar",
            ),
            (
                "dexar-unfiltered",
                &self.unfiltered,
                "unfiltered sentence map abs err",
                "sentence_unfiltered",
            ),
        ] {
            let got = builtin_strategy(strategy, 1)
                .unwrap()
                .sentence_map(maps)
                .unwrap();
            let want = fx.f32s(&key(tensor));
            report.check(name, max_abs(&got, grid_part(&want, grid_len)), 1e-4, what);
        }
    }
}

/// Checks traced steps of an answer to the prompt `prompt_ids` against the
/// naive full-recompute autograd path on the same tokens: logits, attention
/// and gradients of every layer, 1e-4 relative.
pub fn check_against_naive(
    model: &VlModel,
    steps: &[TracedStep],
    prompt_ids: &[u32],
    image_spans: &[(usize, usize)],
    feats: &ImageFeatures,
    what: &str,
    report: &mut Report,
) {
    let layers = 0..model.text_config().num_hidden_layers;
    let mut ids = prompt_ids.to_vec();
    for step in steps {
        let tr = &step.trace;
        let naive = naive_step(
            model,
            &ids,
            prompt_ids.len(),
            image_spans,
            feats,
            layers.clone(),
            Some(tr.token_id),
        )
        .unwrap();
        report.check("logits", rel_err(&step.logits, &naive.logits), 1e-4, what);
        report.check("attention", rel_err(&tr.attn, &naive.attn), 1e-4, what);
        report.check("gradients", rel_err(&tr.grads, &naive.grads), 1e-4, what);
        ids.push(tr.token_id);
    }
}
