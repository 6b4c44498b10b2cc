//! End-to-end tests of `dexar tui` and the REPL's `/view` in a real
//! pseudo-terminal that answers no graphics query: keys in, the screen (a
//! vt100 model) read back.

#![cfg(unix)]

use dexar_tests::pty::{find, Term};
use std::process::Stdio;

fn tiny_llava() -> String {
    let dir = dexar_tests::fixtures().join("tiny-llava");
    dir.to_str().unwrap().to_string()
}

/// Raw output contains the sequence that leaves the alternate screen.
fn left_full_screen(t: &Term) -> bool {
    find(&t.raw(), b"\x1b[?1049l").is_some()
}

#[test]
fn an_answer_streams_stops_with_ctrl_c_and_stays_explorable() {
    let mut t = Term::spawn(
        &[
            "tui",
            "--model",
            &tiny_llava(),
            "--graphics",
            "blocks",
            "--max-tokens",
            "40",
        ],
        &[("DEXAR_DEBUG_STEP_DELAY_MS", "250")],
    );
    t.wait_screen(" conversation ");
    t.wait_screen("graphics blocks");
    t.send("/");
    t.send("What is in the image?");
    t.wait_screen("ask> What is in the image?");
    t.send("\r");
    t.wait_screen("answering…");
    // Tokens appear while the answer is still coming, the image follows
    // the newest one.
    t.wait_screen("dexar · token 1 ");
    let screen = t.wait_screen("dexar · token 2 ");
    assert!(screen.contains("answering…"), "{screen}");
    // Resizing mid-answer: the layout follows, the answer goes on.
    t.resize(30, 90);
    t.wait_screen("dexar · token 3 ");
    // Ctrl-C stops it; the partial answer stays explorable.
    t.send("\x03");
    let screen = t.wait_screen("stopped by Ctrl-C");
    assert!(!screen.contains("answering…"), "{screen}");
    let last = (0..40)
        .rev()
        .find(|i| screen.contains(&format!("dexar · token {i} ")))
        .expect("a token's map is shown");
    t.send("\x1b[D");
    t.wait_screen(&format!("dexar · token {} ", last - 1));
    // Non-UTF-8 bytes and odd keys change nothing.
    t.send_bytes(b"\xff\xfe\x1b[1;9Z");
    t.send("\t");
    t.wait_screen(&format!("dexar-unfiltered · token {} ", last - 1));
    // Too small says so; growing again draws it all.
    t.resize(10, 40);
    t.wait_screen("terminal too small (40x10)");
    t.resize(30, 90);
    t.wait_screen(" conversation ");
    t.send("q");
    assert_eq!(t.exit_code(), 0);
    assert!(left_full_screen(&t), "the terminal was not put back");
}

#[test]
fn view_from_the_repl_comes_back_with_its_choices() {
    let mut t = Term::spawn(
        &[
            "--model",
            &tiny_llava(),
            "--graphics",
            "blocks",
            "--size",
            "20x8",
        ],
        &[],
    );
    t.prompt();
    t.send("What is in the image?\r");
    t.expect("tok/s");
    t.prompt();
    t.send("/view\r");
    t.wait_screen(" conversation ");
    t.wait_screen("you: What is in the image?");
    t.send("\t");
    t.wait_screen("dexar-unfiltered · token");
    t.send("q");
    t.expect("back from the TUI · strategy dexar-unfiltered");
    t.prompt();
    t.send("/probe 0\r");
    t.expect("probe of token 0");
    t.expect("nothing");
    t.prompt();
    t.send("/quit\r");
    assert_eq!(t.exit_code(), 0);
}

#[test]
fn a_panic_puts_the_terminal_back_first() {
    let mut t = Term::spawn(
        &["tui", "--model", &tiny_llava(), "--graphics", "ascii"],
        &[("DEXAR_DEBUG_TUI_PANIC", "1")],
    );
    t.expect("DEXAR_DEBUG_TUI_PANIC is set");
    assert_ne!(t.exit_code(), 0);
    let raw = t.raw();
    let restored = find(&raw, b"\x1b[?1049l").expect("left the alternate screen");
    let message = find(&raw, b"DEXAR_DEBUG_TUI_PANIC is set").unwrap();
    assert!(
        restored < message,
        "the message came before the terminal was put back"
    );
}

#[test]
fn no_terminal_or_a_session_file_is_refused_in_one_line() {
    for (args, needle) in [
        (vec!["tui"], "needs a terminal"),
        (
            vec!["tui", "--session", "/no/such.dexar"],
            "session /no/such.dexar",
        ),
    ] {
        let out = dexar_tests::dexar()
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle) && err.lines().count() == 1, "{err}");
    }
}

#[test]
fn a_recorded_session_opens_without_its_model_and_is_explored() {
    let example = dexar_tests::workspace().join("sessions/example.dexar");
    // The session was recorded with the bundled model; with another model
    // loaded it opens without one: shown and re-explained, not continued.
    let mut t = Term::spawn(
        &[
            "tui",
            "--session",
            example.to_str().unwrap(),
            "--model",
            &tiny_llava(),
            "--graphics",
            "blocks",
        ],
        &[],
    );
    t.wait_screen("opened without its model");
    t.wait_screen("where is the red circle");
    let screen = t.wait_screen("dexar · token 0 ");
    assert!(screen.contains("(bundled:toy)"), "{screen}");
    // Another strategy re-explains the recorded traces.
    t.send("\t");
    t.wait_screen("dexar-unfiltered · token 0 ");
    // Asking needs the model.
    t.send("/");
    t.send("how many shapes ?\r");
    t.wait_screen("the model is not loaded");
    t.send("\x1b");
    t.send("q");
    assert_eq!(t.exit_code(), 0);
}
