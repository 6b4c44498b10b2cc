//! Tests of the REPL's effects on its state, on the fixture checkpoint.

use super::*;
use crate::repl::complete::Names;
use dexar_core::LayerSelection;
use dexar_model::{ModelSpec, Turn};
use dexar_render::term::{CellSize, Graphics, Terminal};
use dexar_session::Settings;
use std::sync::Mutex;

/// A REPL on the fixture checkpoint, drawing small ASCII pictures.
fn repl() -> Repl {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dexar-model/tests/fixtures/tiny-llava");
    let opts = dexar_model::LoadOptions::default();
    let mut model = dexar_session::open_model(&ModelSpec::Dir(dir), &opts).unwrap();
    model.label = "tiny".into();
    let (_, img) = dexar_toy::default_image();
    let image = LoadedImage::encode(&model.ckpt, "square".into(), img).unwrap();
    let settings = Settings {
        max_tokens: 8,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        layers: LayerSelection::new(0),
        topk: 1,
        region: Default::default(),
        trace_layers: Default::default(),
    };
    let state = AppState::new(model, image, settings, Default::default());
    let display = Display::new(
        Terminal::with_mode(Graphics::Ascii),
        Some(CellSize::new(16, 8)),
    );
    let names = Arc::new(Mutex::new(Names::default()));
    Repl::new(
        state,
        display,
        Paint::PLAIN,
        Arc::new(AtomicBool::new(false)),
        names,
    )
}

fn run(repl: &mut Repl, line: &str) -> String {
    let mut out = Vec::new();
    assert_eq!(repl.handle(line, &mut out).unwrap(), Flow::Continue);
    String::from_utf8(out).unwrap()
}

#[test]
fn turns_accumulate_and_target_replaces_the_last() {
    let mut r = repl();
    assert!(r
        .names
        .lock()
        .unwrap()
        .strategies
        .contains(&"grad-x-attn".to_string()));
    let first = run(&mut r, "What is in the image?");
    assert!(first.contains("₀") && first.contains("tok/s"), "{first}");
    let answer = r.state.answer.as_ref().unwrap().text();
    assert_eq!(
        r.state.turns,
        [Turn {
            user: "What is in the image?".into(),
            assistant: answer
        }]
    );
    run(&mut r, "What colour?");
    assert_eq!(r.state.turns.len(), 2);
    assert_eq!(r.state.turns[1].user, "What colour?");

    let out = run(&mut r, "/target a red circle");
    assert!(
        out.contains("a₀ red₁ circle₂") && out.contains("target explained"),
        "{out}"
    );
    assert_eq!(r.state.turns.len(), 2);
    assert_eq!(r.state.turns[1].assistant, "a red circle");
    assert!(r.state.answer.as_ref().unwrap().teacher_forced);
    // A word of the answer selects its tokens.
    assert!(run(&mut r, "/show circle").starts_with("dexar · token 2 \" circle\""));
    assert!(run(&mut r, "/show red circle").starts_with("dexar · tokens 1-2 \"red circle\""));

    run(&mut r, "/clear");
    assert!(r.state.turns.is_empty() && r.state.answer.is_none());
    assert!(run(&mut r, "/target x").contains("ask one first"));
}

#[test]
fn layers_and_strategy_re_explain_without_regenerating() {
    let mut r = repl();
    run(&mut r, "/target a red circle");
    assert!(r.state.answer.is_none(), "no question yet");
    run(&mut r, "What is in the image?");
    let steps = r.state.answer.as_ref().unwrap().steps.len();
    let all = r.state.shown("dexar", &Selection::Token(0)).unwrap();
    let out = run(&mut r, "/layers -1");
    assert!(out.contains("layers 3-3"), "{out}");
    let last = r.state.shown("dexar", &Selection::Token(0)).unwrap();
    assert_ne!(all.map01, last.map01);
    assert_eq!(r.state.answer.as_ref().unwrap().steps.len(), steps);
    run(&mut r, "/strategy use raw-attention");
    assert!(run(&mut r, "/show 0").starts_with("raw-attention · token 0"));
    // /compare defaults to what /show showed last.
    let out = run(&mut r, "/compare dexar grad-x-attn");
    assert!(out.starts_with("token 0"), "{out}");
    assert!(run(&mut r, "/compare dexar nope").contains("unknown strategy nope"));
    // /probe uses the strategy in use, and says how the answer changed.
    let out = run(&mut r, "/probe 0");
    assert!(out.contains("the raw-attention map's top patches"), "{out}");
    assert!(out.contains("nothing") && out.contains("50 % "), "{out}");
    assert!(run(&mut r, "/probe 99").contains("no token 99"));
}

#[test]
fn mistakes_are_one_line_and_change_nothing() {
    let mut r = repl();
    assert_eq!(
        run(&mut r, "/show 1"),
        "error: nothing to show yet: type a question about the image first\n"
    );
    run(&mut r, "What is in the image?");
    let n = r.state.answer.as_ref().unwrap().steps.len();
    assert_eq!(
        run(&mut r, "/show 99"),
        format!("error: no token 99: the answer has tokens 0-{}\n", n - 1)
    );
    assert!(run(&mut r, "/show zebra").contains("no \"zebra\" in the answer"));
    let out = run(&mut r, "/image /no/such.png");
    assert!(
        out.starts_with("error: image /no/such.png") && out.lines().count() == 1,
        "{out}"
    );
    assert_eq!(r.state.image.label, "square");
    assert_eq!(r.state.turns.len(), 1);
    assert!(run(&mut r, "/image /").contains("is a directory"));
    assert!(run(&mut r, "describe <image> please").contains("leave <image> out"));
    // A question too long for the 128-token context: an error, no turn.
    let long = "red ".repeat(200);
    let out = run(&mut r, &long);
    assert!(
        out.starts_with("error:") && out.contains("context"),
        "{out}"
    );
    assert_eq!(r.state.turns.len(), 1);
    let mut out = Vec::new();
    assert_eq!(r.handle("/quit", &mut out).unwrap(), Flow::Quit);
}
