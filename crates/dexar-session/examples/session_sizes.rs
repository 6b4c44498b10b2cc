//! Measures what a token costs in a session file, and what f16 traces do to
//! the maps: `cargo run --release -p dexar-session --example session_sizes`.
//!
//! Two sources of traces: the bundled demo model (trained; every layer
//! traced, as the REPL records) and a randomly initialised model shaped like
//! LLaVA-1.5-7B's traces (32 layers x 32 heads, 576 image tokens, about 650
//! positions; its heads are 8-dimensional so it runs anywhere, which does
//! not change a trace's shape). For each: the bytes of one token record
//! (frame, JSON, grads, attention, kinds) per dtype and encoding, the time to
//! encode it, and the largest change f16 storage makes to every built-in
//! strategy's min-max-normalised token and sentence maps. The figures are
//! in docs/SESSION_FORMAT.md.

use dexar_core::{builtin_strategy, StepTrace, TokenMap, BUILTIN_NAMES};
use dexar_model::{
    Checkpoint, GenerationSettings, LoadOptions, Mode, SyntheticFamily, SyntheticSpec,
};
use dexar_session::format::{encode_record, Dtype, Encoding};
use dexar_session::records::{token_record_as, Record};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn traces(ckpt: &Checkpoint, questions: &[&str], max_tokens: usize) -> Vec<StepTrace> {
    let (_, img) = dexar_toy::default_image();
    let features = ckpt.encode_image(&img).expect("image encodes");
    let mut all = Vec::new();
    for q in questions {
        let prompt = ckpt.prepare_chat(&[], q, &features).expect("prompt");
        let settings = GenerationSettings {
            max_tokens,
            layers: 0..ckpt.text_config().num_hidden_layers,
            ..GenerationSettings::default()
        };
        let cancel = AtomicBool::new(false);
        let outcome = dexar_session::generate(
            ckpt,
            &prompt,
            &features,
            &settings,
            &Mode::Generate,
            &cancel,
            &mut |_| {},
        );
        outcome.result.expect("generation");
        all.extend(outcome.steps);
    }
    all
}

fn record_bytes(trace: &StepTrace, dtype: Dtype, encoding: Encoding) -> (usize, f64) {
    let start = Instant::now();
    let (record, blobs) = token_record_as(1, trace, dtype, encoding);
    let bytes = encode_record(Record::to_json(&record), blobs).expect("encodes");
    (bytes.len(), start.elapsed().as_secs_f64() * 1e3)
}

/// The trace as an f16 file gives it back.
fn through_f16(trace: &StepTrace) -> StepTrace {
    let (record, blobs) = token_record_as(1, trace, Dtype::F16, Encoding::Raw);
    let Record::Token(mut t) = record else {
        unreachable!("a token record")
    };
    t.blobs = blobs.info;
    t.trace(&blobs.payload).expect("reads back")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn report(name: &str, traces: &[StepTrace]) {
    let t = &traces[0];
    let positions: Vec<usize> = traces.iter().map(|t| t.num_positions).collect();
    println!(
        "\n## {name}: {} layers x {} heads x {}-{} positions, {} tokens",
        t.layers.len(),
        t.num_heads,
        positions.iter().min().unwrap(),
        positions.iter().max().unwrap(),
        traces.len()
    );
    println!("| dtype | encoding | bytes/token | of raw f32 | encode ms/token |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let mut raw_f32 = 0.0;
    for dtype in [Dtype::F32, Dtype::F16] {
        for encoding in [Encoding::Raw, Encoding::Deflate, Encoding::ShuffleDeflate] {
            let (mut bytes, mut ms) = (0usize, 0.0);
            for t in traces {
                let (b, m) = record_bytes(t, dtype, encoding);
                bytes += b;
                ms += m;
            }
            let per = bytes as f64 / traces.len() as f64;
            if dtype == Dtype::F32 && encoding == Encoding::Raw {
                raw_f32 = per;
            }
            println!(
                "| {dtype:?} | {encoding:?} | {per:.0} | {:.1}% | {:.2} |",
                100.0 * per / raw_f32,
                ms / traces.len() as f64
            );
        }
    }
    println!("\nf16 storage, largest change of a min-max-normalised map (and of a token weight, relative to the answer's largest):");
    println!("| strategy | token maps | sentence map | token weights |");
    println!("| --- | ---: | ---: | ---: |");
    let halves: Vec<StepTrace> = traces.iter().map(through_f16).collect();
    for name in BUILTIN_NAMES {
        let s = builtin_strategy(name, 1).expect("built-in");
        let maps = |ts: &[StepTrace]| -> Vec<TokenMap> {
            ts.iter().map(|t| s.token_map(t).expect("map")).collect()
        };
        let (full, half) = (maps(traces), maps(&halves));
        let token = full
            .iter()
            .zip(&half)
            .map(|(a, b)| max_diff(&a.normalized(), &b.normalized()))
            .fold(0.0, f32::max);
        let sentence = max_diff(
            &s.sentence_map(&full).expect("sentence"),
            &s.sentence_map(&half).expect("sentence"),
        );
        let top = full
            .iter()
            .map(|m| m.weight.abs())
            .fold(0.0, f32::max)
            .max(1e-30);
        let weight = full
            .iter()
            .zip(&half)
            .map(|(a, b)| (a.weight - b.weight).abs() / top)
            .fold(0.0, f32::max);
        println!("| {name} | {token:.2e} | {sentence:.2e} | {weight:.2e} |");
    }
}

fn main() {
    let opts = LoadOptions::default();
    let bundled = dexar_toy::load_bundled(&opts).expect("bundled model");
    let questions = [
        "describe the image",
        "what color is the circle ?",
        "how many shapes ?",
        "where is the square ?",
    ];
    report("bundled demo model", &traces(&bundled, &questions, 16));

    let tokens: usize = std::env::var("DEXAR_SIZES_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let spec = SyntheticSpec {
        family: SyntheticFamily::Llava,
        layers: 32,
        hidden: 256,
    };
    let shaped = dexar_model::synthetic_checkpoint_with_heads(spec, 32, bundled.tokenizer, &opts)
        .expect("synthetic model");
    // A long prompt brings the sequence to LLaVA-1.5's usual ~650 positions.
    let long = "describe the image , the circle and the square and the triangle . ".repeat(6);
    let mut t = traces(&shaped, &[&long], tokens);
    // Random weights may stop early; a token's size depends only on its shape.
    t.truncate(tokens);
    report("LLaVA-1.5-7B-shaped, random weights", &t);
}
