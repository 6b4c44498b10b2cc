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

/// Σ_{l,i} w(l,i) · ReLU(g[grid cell]) over the cells of every region, in
/// the order the plugins sum.
fn weighted_grad_map(trace: &StepTrace, w: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut map = vec![0f32; trace.num_cells()];
    for (s, i) in heads(trace) {
        let g = trace.grad_row(s, i);
        for (cell, j) in map.iter_mut().zip(trace.cell_positions()) {
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

/// The rectified gradient of (slot, head) split into image and text positions.
fn split(trace: &StepTrace, s: usize, i: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut image, mut text) = (Vec::new(), Vec::new());
    for (j, &g) in trace.grad_row(s, i).iter().enumerate() {
        if trace.is_image_position(j) {
            image.push(relu(g));
        } else {
            text.push(relu(g));
        }
    }
    (image, text)
}

fn expected_dexar_top3(trace: &StepTrace) -> (Vec<f32>, f32) {
    let score = |s: usize, i: usize| {
        let (image, text) = split(trace, s, i);
        (topk3(image), topk3(text))
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
        let mass = (0..a.len())
            .filter(|&j| trace.is_image_position(j))
            .map(|j| a[j] as f64)
            .sum::<f64>()
            / total;
        ((1.0 - h) as f32, mass as f32)
    };
    let map = weighted_grad_map(trace, |s, i| focus(s, i).0);
    let masses: f32 = heads(trace).map(|(s, i)| focus(s, i).1).sum();
    (map, masses / (trace.layers.len() * trace.num_heads) as f32)
}

fn expected_c_image_mass(trace: &StepTrace) -> (Vec<f32>, f32) {
    let (start, end) = trace.regions[0].span;
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
    check_example_on(
        name,
        expected,
        sentence,
        &[11, 12, 13, 14].map(|seed| fixture_trace(seed, seed % 2 == 0)),
    );
}

/// [`check_example`] on the given traces.
fn check_example_on(
    name: &str,
    expected: fn(&StepTrace) -> (Vec<f32>, f32),
    sentence: fn(&[TokenMap]) -> Vec<f32>,
    traces: &[StepTrace],
) {
    let dir = private_dir();
    let file = install(&example_artifact(name), dir.path(), "plugin.so");
    let mut plugins = registry();
    let loaded = plugins.load(&file).unwrap();
    assert_eq!(loaded.name(), name);
    assert!(!loaded.help().is_empty());
    let strategy = plugins.strategy(name).unwrap();
    let mut maps = Vec::new();
    for trace in traces {
        let seed = trace.token_id - 1000;
        let map = strategy.token_map(trace).unwrap();
        let (want_cells, want_weight) = expected(trace);
        let want = TokenMap::from_cells(&trace.regions, want_cells, want_weight);
        assert_eq!(map.grid, want.grid);
        assert_close(&map.raw, &want.raw, &format!("{name} map (seed {seed})"));
        assert_eq!(map.regions.len(), want.regions.len());
        for (k, (got, want)) in map.regions.iter().zip(&want.regions).enumerate() {
            assert_eq!(
                (got.kind, got.grid, got.bbox),
                (want.kind, want.grid, want.bbox)
            );
            assert_close(
                &got.raw,
                &want.raw,
                &format!("{name} region {k} (seed {seed})"),
            );
        }
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

/// The Rust examples speak ABI 1.1: on an image of tiles and a global view
/// they fill every region's cells, and the host composes the tiles.
#[test]
fn rust_examples_explain_images_of_several_regions() {
    let traces = [41, 42, 43].map(multi_region_trace);
    check_example_on("legrad", expected_legrad, weighted_sentence_map, &traces);
    check_example_on(
        "entropy-filter",
        expected_entropy_filter,
        weighted_sentence_map,
        &traces,
    );
    check_example_on(
        "dexar-top3",
        expected_dexar_top3,
        weighted_sentence_map,
        &traces,
    );
    // dexar-top3 is DEX-AR at k = 3, regions included.
    let dir = private_dir();
    let file = install(&example_artifact("dexar-top3"), dir.path(), "top3.so");
    let mut plugins = registry();
    let loaded = plugins.load(&file).unwrap();
    assert_eq!(loaded.abi(), "1.1");
    let plugin = plugins.strategy("dexar-top3").unwrap();
    let builtin = DexarStrategy {
        filtered: true,
        topk: 3,
    };
    for trace in &traces {
        let (a, b) = (
            plugin.token_map(trace).unwrap(),
            builtin.token_map(trace).unwrap(),
        );
        assert_eq!(a.grid, dexar_core::Grid::new(4, 4));
        assert_close(&a.raw, &b.raw, "dexar-top3 vs built-in composed map");
        assert_close(
            &a.regions[4].raw,
            &b.regions[4].raw,
            "dexar-top3 vs built-in global map",
        );
    }
}

/// c-image-mass does not export `dexar_plugin_abi_minor`: an ABI 1.0 plugin.
/// It still loads and explains single-region images; an image of several
/// regions is refused, naming both versions.
#[test]
fn abi_1_0_plugins_are_refused_images_of_several_regions() {
    let dir = private_dir();
    let file = install(&example_artifact("c-image-mass"), dir.path(), "c.so");
    let mut plugins = registry();
    let loaded = plugins.load(&file).unwrap();
    assert_eq!(loaded.abi(), "1.0");
    assert!(!loaded.sees_regions());
    let plugin = plugins.strategy("c-image-mass").unwrap();
    let single = fixture_trace(51, false);
    assert_close(
        &plugin.token_map(&single).unwrap().raw,
        &expected_c_image_mass(&single).0,
        "ABI 1.0 plugin on one region",
    );
    let err = plugin
        .token_map(&multi_region_trace(52))
        .unwrap_err()
        .to_string();
    assert!(err.contains("c-image-mass"), "{err}");
    assert!(err.contains("ABI 1.0") && err.contains("ABI 1.1"), "{err}");
    assert!(err.contains("5"), "names the region count: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
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
