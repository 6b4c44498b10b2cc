//! Each example plugin against an in-test computation of its formula.

use crate::support::*;
use dexar_core::strategy::weighted_sentence_map;
use dexar_core::{minmax, DexarStrategy, StepTrace, Strategy, TokenMap};

fn relu(x: f32) -> f32 {
    x.max(0.0)
}

fn heads(trace: &StepTrace) -> impl Iterator<Item = (usize, usize)> {
    let h = trace.num_heads;
    (0..trace.layers.len()).flat_map(move |s| (0..h).map(move |i| (s, i)))
}

/// Σ_{l,i} w(l,i) · ReLU(g[grid cell]) in the order the plugins sum.
fn weighted_grad_map(trace: &StepTrace, w: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut map = vec![0f32; trace.grid.len()];
    for (s, i) in heads(trace) {
        let g = trace.grad_row(s, i);
        for (cell, j) in map.iter_mut().zip(trace.grid_positions()) {
            *cell += w(s, i) * relu(g[j]);
        }
    }
    map
}

fn expected_legrad(trace: &StepTrace) -> (Vec<f32>, f32) {
    let count = (trace.layers.len() * trace.num_heads) as f32;
    let map = weighted_grad_map(trace, |_, _| 1.0);
    (map.into_iter().map(|v| v / count).collect(), 1.0)
}

fn topk3(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| b.total_cmp(a));
    let k = v.len().min(3);
    v[..k].iter().sum::<f32>() / k as f32
}

fn expected_dexar_top3(trace: &StepTrace) -> (Vec<f32>, f32) {
    let (start, end) = trace.image_span;
    let score = |s: usize, i: usize| {
        let g: Vec<f32> = trace.grad_row(s, i).iter().map(|&x| relu(x)).collect();
        let visual = topk3(g[start..end].to_vec());
        let text = topk3(g[..start].iter().chain(&g[end..]).copied().collect());
        (visual, text)
    };
    let map = weighted_grad_map(trace, |s, i| {
        let (v, t) = score(s, i);
        relu(v - t)
    });
    let (mut max_v, mut max_t) = (0f32, 0f32);
    for (s, i) in heads(trace) {
        let (v, t) = score(s, i);
        max_v = max_v.max(v);
        max_t = max_t.max(t);
    }
    (map, relu(max_v - max_t))
}

fn expected_entropy_filter(trace: &StepTrace) -> (Vec<f32>, f32) {
    let focus = |s: usize, i: usize| {
        let a = trace.attn_row(s, i);
        let total: f64 = a.iter().map(|&x| x as f64).sum();
        let h: f64 = a
            .iter()
            .map(|&x| x as f64 / total)
            .map(|p| -p * p.ln())
            .sum::<f64>()
            / (a.len() as f64).ln();
        let (start, end) = trace.image_span;
        let mass = a[start..end].iter().map(|&x| x as f64).sum::<f64>() / total;
        ((1.0 - h) as f32, mass as f32)
    };
    let map = weighted_grad_map(trace, |s, i| focus(s, i).0);
    let masses: f32 = heads(trace).map(|(s, i)| focus(s, i).1).sum();
    (map, masses / (trace.layers.len() * trace.num_heads) as f32)
}

fn expected_c_image_mass(trace: &StepTrace) -> (Vec<f32>, f32) {
    let (start, end) = trace.image_span;
    let map = weighted_grad_map(trace, |s, i| trace.attn_row(s, i)[start..end].iter().sum());
    (map, 1.0)
}

/// Loads the example, runs it on fixture traces (with and without a CLS
/// token) and compares maps, weights and the sentence map.
fn check_example(
    name: &str,
    expected: fn(&StepTrace) -> (Vec<f32>, f32),
    sentence: fn(&[TokenMap]) -> Vec<f32>,
) {
    let dir = private_dir();
    let file = install(&example_artifact(name), dir.path(), "plugin.so");
    let mut plugins = registry();
    let loaded = plugins.load(&file).unwrap();
    assert_eq!(loaded.name(), name);
    assert!(!loaded.help().is_empty());
    let strategy = plugins.strategy(name).unwrap();
    let mut maps = Vec::new();
    for (seed, cls) in [(11, false), (12, true), (13, false), (14, true)] {
        let trace = fixture_trace(seed, cls);
        let map = strategy.token_map(&trace).unwrap();
        let (want_map, want_weight) = expected(&trace);
        assert_eq!(map.grid, trace.grid);
        assert_close(&map.raw, &want_map, &format!("{name} map (seed {seed})"));
        assert_close(&[map.weight], &[want_weight], &format!("{name} weight"));
        assert!(
            !map.is_degenerate(),
            "{name}: fixture map should not be flat"
        );
        maps.push(map);
    }
    let got = strategy.sentence_map(&maps).unwrap();
    assert_close(&got, &sentence(&maps), &format!("{name} sentence map"));
}

#[test]
fn legrad_matches_its_formula() {
    check_example("legrad", expected_legrad, weighted_sentence_map);
}

#[test]
fn entropy_filter_matches_its_formula() {
    check_example(
        "entropy-filter",
        expected_entropy_filter,
        weighted_sentence_map,
    );
}

#[test]
fn dexar_top3_matches_its_formula() {
    check_example("dexar-top3", expected_dexar_top3, weighted_sentence_map);
}

#[test]
fn dexar_top3_agrees_with_builtin_dexar_at_topk_3() {
    let dir = private_dir();
    let file = install(&example_artifact("dexar-top3"), dir.path(), "top3.so");
    let mut plugins = registry();
    plugins.load(&file).unwrap();
    let plugin = plugins.strategy("dexar-top3").unwrap();
    let builtin = DexarStrategy {
        filtered: true,
        topk: 3,
    };
    let (mut kept, mut dropped, mut grounded) = (0, 0, 0);
    for (seed, cls) in [(21, false), (22, true), (23, false), (24, true)] {
        let trace = fixture_trace(seed, cls);
        let scores = dexar_core::HeadScores::compute(&trace, 3);
        kept += scores.weights.iter().filter(|&&w| w > 0.0).count();
        dropped += scores.weights.iter().filter(|&&w| w == 0.0).count();
        let (a, b) = (
            plugin.token_map(&trace).unwrap(),
            builtin.token_map(&trace).unwrap(),
        );
        assert_close(&a.raw, &b.raw, "dexar-top3 vs built-in map");
        assert_close(&[a.weight], &[b.weight], "dexar-top3 vs built-in weight");
        grounded += usize::from(a.weight > 0.0);
    }
    // The fixture exercises both sides of the head and token filters.
    assert!(
        kept > 0 && dropped > 0,
        "heads kept {kept}, dropped {dropped}"
    );
    assert!(grounded > 0, "no token with a positive weight");
}

#[test]
fn c_image_mass_matches_its_formula_and_max_pools_sentences() {
    fn max_pool(maps: &[TokenMap]) -> Vec<f32> {
        let mut out = vec![f32::NEG_INFINITY; maps[0].raw.len()];
        for m in maps {
            for (o, v) in out.iter_mut().zip(&m.raw) {
                *o = o.max(m.weight * v);
            }
        }
        minmax(&out).0
    }
    check_example("c-image-mass", expected_c_image_mass, max_pool);
    let dir = private_dir();
    let file = install(&example_artifact("c-image-mass"), dir.path(), "c.so");
    let mut plugins = registry();
    assert!(plugins.load(&file).unwrap().has_sentence_map());
}

#[test]
fn c_plugin_source_builds_standalone_with_cc() {
    // The C example is a complete plugin on its own, without the Rust crate.
    let dir = private_dir();
    let out = dir.path().join("libc_image_mass.so");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/c-image-mass/src/c_image_mass.c");
    compile_c_library(&source, &out, &[]);
    let mut plugins = registry();
    plugins.load(&out).unwrap();
    let trace = fixture_trace(31, true);
    let map = plugins
        .strategy("c-image-mass")
        .unwrap()
        .token_map(&trace)
        .unwrap();
    assert_close(
        &map.raw,
        &expected_c_image_mass(&trace).0,
        "standalone C map",
    );
}
