//! Shared helpers of the parity tests: fixture paths, loading, error measures.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use dexar_model::{Checkpoint, LoadOptions};
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
