//! End-to-end tests of the REPL in a real pseudo-terminal: the `dexar`
//! binary on the bundled model, driven like a person at a keyboard.
//!
//! The harness (`dexar_tests::pty`) plays the terminal's part reedline needs
//! and stays silent to the graphics query, like a terminal that answers
//! none. Expectations wait for output with generous timeouts instead of
//! sleeping, so a loaded 2-core CI machine only makes them slower.

#![cfg(unix)]

use dexar_tests::pty::{PtySize, Term};
use std::time::Duration;

/// The fixture checkpoint, so answers do not change with the bundled model.
fn tiny_llava() -> String {
    let dir = dexar_tests::fixtures().join("tiny-llava");
    dir.to_str().unwrap().to_string()
}

#[test]
fn chat_streams_tokens_shows_heatmaps_and_survives_bad_input() {
    let mut t = Term::spawn(
        &[
            "--model",
            &tiny_llava(),
            "--graphics",
            "ascii",
            "--size",
            "40x12",
        ],
        &[("DEXAR_DEBUG_STEP_DELAY_MS", "300")],
    );
    t.expect("graphics ascii");
    t.prompt();
    t.send("What is in the image?\r");
    // Tokens arrive one by one, labelled with their index, long before the end.
    t.expect("₀");
    let first = t.arrival(t.mark);
    t.expect("₁");
    t.expect("tok/s");
    let done = t.arrival(t.mark);
    assert!(
        done.duration_since(first) >= Duration::from_millis(600),
        "the answer did not stream: {:?} between the first token and the status line",
        done.duration_since(first)
    );
    t.expect("strategy dexar");
    t.prompt();

    t.send("/show 1\r");
    t.expect("dexar · token 1");
    let picture = t.expect("dexar> ");
    let rows: Vec<&str> = picture
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty() && l.chars().all(|c| " .:-=+*#%@".contains(c)))
        .collect();
    assert!(rows.len() >= 10, "no ASCII heatmap in:\n{picture}");
    assert!(rows.iter().all(|r| r.len() <= 40));

    t.send("/show 99\r");
    t.expect("no token 99");
    t.prompt();
    t.send("/image /no/such/picture.png\r");
    t.expect("error: image /no/such/picture.png");
    t.prompt();
    t.send("/shwo 1\r");
    t.expect("did you mean /show?");
    t.prompt();
    // The REPL still chats after all that.
    t.send("/tokens\r");
    t.expect("δ=");
    t.prompt();
    t.send("/quit\r");
    assert_eq!(t.exit_code(), 0);
    // History is saved under the user's data directory.
    let history = std::fs::read_to_string(t.home.path().join("data/dexar/history.txt")).unwrap();
    assert!(
        history.contains("What is in the image?") && history.contains("/tokens"),
        "{history}"
    );
}

#[test]
fn sixel_heatmap_is_sent_inline() {
    let mut t = Term::spawn(
        &[
            "--model",
            &tiny_llava(),
            "--graphics",
            "sixel",
            "--size",
            "20x8",
        ],
        &[],
    );
    t.expect("graphics sixel");
    t.prompt();
    t.send("What is in the image?\r");
    t.expect("tok/s");
    t.prompt();
    t.send("/show 0\r");
    t.expect("token 0");
    let sixel = t.expect_raw("\x1bP");
    assert!(!sixel.is_empty());
    t.expect_raw("\x1b\\");
    t.prompt();
    t.send("/show all --raw\r");
    t.expect_raw("\x1bP");
    t.expect("max");
    t.prompt();
    t.send("/quit\r");
    assert_eq!(t.exit_code(), 0);
}

#[test]
fn ctrl_c_stops_an_answer_and_clears_a_line() {
    let mut t = Term::spawn(
        &[
            "--model",
            &tiny_llava(),
            "--graphics",
            "blocks",
            "--max-tokens",
            "60",
        ],
        &[("DEXAR_DEBUG_STEP_DELAY_MS", "500")],
    );
    t.prompt();
    t.send("Describe\r");
    t.expect("₀");
    // A resize mid-stream changes nothing but the size of later pictures.
    t.master
        .resize(PtySize {
            rows: 30,
            cols: 70,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    t.send("\x03");
    t.expect("stopped by Ctrl-C");
    t.prompt();
    // The partial answer stays explorable.
    t.send("/show 0\r");
    t.expect("token 0");
    t.expect("▀");
    t.prompt();
    // Ctrl-C at the prompt clears the line: were "half typed" kept, the
    // line below would be a question, not /quit.
    t.send("half typed");
    t.expect("half typed");
    t.send("\x03");
    t.prompt();
    t.send("/quit\r");
    assert_eq!(t.exit_code(), 0);
}

#[test]
fn silent_terminal_gets_a_fallback_and_odd_bytes_are_harmless() {
    // Plain `dexar` (the bundled model); no --graphics: the DA1 probe goes
    // unanswered and times out.
    // An unwritable data directory: history in memory, with a note.
    let mut t = Term::spawn(&[], &[("XDG_DATA_HOME", "/proc/dexar-cannot-write-here")]);
    t.expect("dexar · bundled:");
    t.expect("graphics blocks256");
    t.expect("history is kept for this session only");
    t.prompt();
    // Invalid UTF-8, typed (dropped) or pasted (replaced): the REPL carries on.
    t.send_bytes(b"\xff\xfe\r");
    t.prompt();
    t.send_bytes(b"\x1b[200~/image /tmp/\xff\xfe.png\x1b[201~\r");
    t.expect("error: image /tmp/\u{fffd}\u{fffd}.png");
    t.prompt();
    // Tab completes a command.
    t.send("/sh\t 3\r");
    t.expect("nothing to show yet");
    t.prompt();
    t.send("/strategy use raw-attentoin\r");
    t.expect("did you mean raw-attention?");
    t.prompt();
    // Ctrl-D leaves with status 0.
    t.send("\x04");
    assert_eq!(t.exit_code(), 0);
}
