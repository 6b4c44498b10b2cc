//! The Python reader that docs/SESSION_FORMAT.md shows reads what dexar
//! writes: the snippet is taken from the document as it is, run on real
//! sessions (f32 and f16, whole and torn), and its values compared with
//! dexar's own. Skipped, with the reason printed, where `python3` with
//! `numpy` is not installed.

mod common;

use dexar_session::{Session, TraceDtype};
use std::path::Path;
use std::process::Command;

/// The first ```python block of the format document.
fn snippet() -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SESSION_FORMAT.md"),
    )
    .unwrap();
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let end = doc[start..].find("```").unwrap() + start;
    doc[start..end].to_string()
}

fn python_with_numpy() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn record(dir: &Path, dtype: TraceDtype) -> std::path::PathBuf {
    let mut s = common::recording(dir, dtype);
    for q in ["describe the image", "what color is the circle ?"] {
        common::ask(&mut s, q);
    }
    s.recording_path().unwrap()
}

/// Turn, step and sampled values of one token, as Python printed them.
type Values = (usize, usize, Vec<f64>);

/// Runs the document's snippet on `path`, plus a loop printing every 7th
/// gradient and attention value of each token.
fn run(path: &Path) -> (Vec<String>, Vec<Values>) {
    let script = format!(
        "{}\nfor record, payload in records(sys.argv[1]):\n    if record['type'] == 'token':\n        \
         values = [float(v) for name in ('grads', 'attn') for v in array(record, payload, name).ravel()[::7]]\n        \
         print('VALUES', record['turn'], record['step'], *map(repr, values))\n",
        snippet()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .arg(path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut shown = Vec::new();
    let mut values = Vec::new();
    for line in out.lines() {
        match line.strip_prefix("VALUES ") {
            Some(rest) => {
                let mut parts = rest.split(' ');
                let mut next = || parts.next().unwrap().parse::<usize>().unwrap();
                let (turn, step) = (next(), next());
                let v = parts.map(|x| x.parse::<f64>().unwrap()).collect();
                values.push((turn, step, v));
            }
            None => shown.push(line.to_string()),
        }
    }
    (shown, values)
}

#[test]
fn the_documented_python_reader_reads_dexar_sessions() {
    if !python_with_numpy() {
        println!("skipped: python3 with numpy is not installed (pip install numpy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for dtype in [TraceDtype::F32, TraceDtype::F16] {
        let path = record(dir.path(), dtype);
        let session = Session::open(&path).unwrap();
        let (shown, values) = run(&path);
        let steps: Vec<(usize, &dexar_core::StepTrace)> = session
            .turns
            .iter()
            .flat_map(|t| t.steps.iter().map(move |s| (t.record.turn, s)))
            .collect();
        assert_eq!(shown.len(), steps.len(), "{shown:?}");
        assert_eq!(values.len(), steps.len());
        for ((line, (turn, step, v)), (want_turn, trace)) in shown.iter().zip(&values).zip(&steps) {
            assert!(!trace.token_text.contains('\''), "a simple repr");
            let want = format!(
                "{} {} '{}' ({}, {}, {})",
                want_turn,
                trace.step,
                trace.token_text,
                trace.layers.len(),
                trace.num_heads,
                trace.num_positions
            );
            assert_eq!(line, &want);
            assert_eq!((*turn, *step), (*want_turn, trace.step));
            // Python sees exactly the values dexar reads back.
            let expected: Vec<f64> = [&trace.grads, &trace.attn]
                .iter()
                .flat_map(|b| b.iter().step_by(7).map(|&x| x as f64))
                .collect();
            assert_eq!(v, &expected, "{dtype:?}");
        }
        // A torn tail: Python, like dexar, stops before the torn record.
        let bytes = std::fs::read(&path).unwrap();
        let torn = dir.path().join("torn.dexar");
        std::fs::write(&torn, &bytes[..bytes.len() - 50]).unwrap();
        let dexar_tokens: usize = Session::open(&torn)
            .unwrap()
            .turns
            .iter()
            .map(|t| t.steps.len())
            .sum();
        assert_eq!(run(&torn).1.len(), dexar_tokens);
    }
}
