//! End-to-end tests of the REPL in a real pseudo-terminal: the `dexar`
//! binary on the bundled model, driven like a person at a keyboard.
//!
//! The harness plays the terminal's part reedline needs (it answers cursor
//! position queries from a vt100 screen model) and stays silent to the
//! graphics query, like a terminal that answers none. Expectations wait for
//! output with generous timeouts instead of sleeping, so a loaded 2-core CI
//! machine only makes them slower.

#![cfg(unix)]

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// What the terminal received, with when each chunk arrived.
#[derive(Default)]
struct Screen {
    raw: Vec<u8>,
    /// (offset where a chunk ends, arrival time)
    arrivals: Vec<(usize, Instant)>,
}

struct Term {
    master: Box<dyn MasterPty + Send>,
    child: Box<dyn Child + Send + Sync>,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    screen: Arc<Mutex<Screen>>,
    /// Raw offset up to which output has been matched.
    mark: usize,
    /// The child's HOME (and data directory).
    home: tempfile::TempDir,
}

impl Term {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Term {
        let home = tempfile::tempdir().unwrap();
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 100,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(dexar_tests::dexar_bin());
        cmd.args(args);
        for k in [
            "DEXAR_GRAPHICS",
            "COLORTERM",
            "TERM_PROGRAM",
            "TMUX",
            "KITTY_WINDOW_ID",
            "NO_COLOR",
            "DEXAR_PLUGIN_PATH",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("TERM", "xterm-256color");
        cmd.env("HOME", home.path());
        cmd.env("XDG_DATA_HOME", home.path().join("data"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.cwd(home.path());
        let child = pty.slave.spawn_command(cmd).expect("dexar starts");
        drop(pty.slave);
        let writer = Arc::new(Mutex::new(pty.master.take_writer().unwrap()));
        let mut reader = pty.master.try_clone_reader().unwrap();
        let screen = Arc::new(Mutex::new(Screen::default()));
        let (screen2, writer2) = (screen.clone(), writer.clone());
        std::thread::spawn(move || {
            let size = |n| std::num::NonZeroU16::new(n).expect("non-zero");
            let mut vt = vt100::Parser::new(size(40), size(100), 0);
            let mut buf = [0u8; 8192];
            let mut tail: Vec<u8> = Vec::new();
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                vt.process(chunk);
                // Answer "where is the cursor?" (reedline asks before each prompt).
                tail.extend_from_slice(chunk);
                let queries = tail.windows(4).filter(|w| w == b"\x1b[6n").count();
                if queries > 0 {
                    let (row, col) = vt.screen().cursor_position();
                    let answer = format!("\x1b[{};{}R", row + 1, col + 1).repeat(queries);
                    let _ = writer2.lock().unwrap().write_all(answer.as_bytes());
                }
                let keep = tail.len().saturating_sub(3);
                tail.drain(..keep);
                let mut s = screen2.lock().unwrap();
                s.raw.extend_from_slice(chunk);
                let end = s.raw.len();
                s.arrivals.push((end, Instant::now()));
            }
        });
        Term {
            master: pty.master,
            child,
            writer,
            screen,
            mark: 0,
            home,
        }
    }

    fn send(&self, keys: &str) {
        self.send_bytes(keys.as_bytes());
    }

    fn send_bytes(&self, bytes: &[u8]) {
        let mut w = self.writer.lock().unwrap();
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    /// Waits for `needle` in the output after the mark, as text without
    /// escape sequences; returns that text and moves the mark past it.
    fn expect(&mut self, needle: &str) -> String {
        self.wait_for(needle, true)
    }

    /// Like [`Term::expect`] on the raw bytes, escape sequences included.
    fn expect_raw(&mut self, needle: &str) -> String {
        self.wait_for(needle, false)
    }

    fn wait_for(&mut self, needle: &str, stripped: bool) -> String {
        let start = Instant::now();
        loop {
            {
                let s = self.screen.lock().unwrap();
                let raw = &s.raw[self.mark..];
                let (text, ends) = if stripped {
                    strip(raw)
                } else {
                    (raw.to_vec(), (1..=raw.len()).collect())
                };
                if let Some(i) = find(&text, needle.as_bytes()) {
                    let upto = i + needle.len();
                    let found = String::from_utf8_lossy(&text[..upto]).into_owned();
                    self.mark += ends[upto - 1];
                    return found;
                }
                if start.elapsed() > TIMEOUT {
                    let all = String::from_utf8_lossy(&strip(raw).0).into_owned();
                    panic!("timed out waiting for {needle:?}; output since the last match:\n{all}");
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last output.
                std::thread::sleep(Duration::from_millis(200));
                let s = self.screen.lock().unwrap();
                let rest = &s.raw[self.mark..];
                if find(&strip(rest).0, needle.as_bytes()).is_none() {
                    let all = String::from_utf8_lossy(&strip(rest).0).into_owned();
                    panic!("dexar exited ({status:?}) before {needle:?}; output:\n{all}");
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// When the chunk holding byte offset `at` (raw) arrived.
    fn arrival(&self, at: usize) -> Instant {
        let s = self.screen.lock().unwrap();
        s.arrivals
            .iter()
            .find(|(end, _)| *end >= at)
            .map(|(_, t)| *t)
            .expect("offset received")
    }

    /// Waits for the prompt, the sign that the REPL takes input again.
    fn prompt(&mut self) {
        self.expect("dexar> ");
    }

    fn exit_code(&mut self) -> u32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!("dexar did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Output without escape sequences (CSI, OSC, DCS such as sixel, APC such
/// as kitty) or carriage returns, and for each kept byte the raw offset just
/// after it.
fn strip(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let (mut text, mut ends) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            0x1b if i + 1 < raw.len() => {
                i += 2;
                match raw[i - 1] {
                    b'[' => {
                        while i < raw.len() && !(0x40..=0x7e).contains(&raw[i]) {
                            i += 1;
                        }
                        i += 1;
                    }
                    b']' | b'P' | b'_' => {
                        while i < raw.len()
                            && raw[i] != 0x07
                            && !(raw[i] == 0x1b && raw.get(i + 1) == Some(&b'\\'))
                        {
                            i += 1;
                        }
                        i += if raw.get(i) == Some(&0x07) { 1 } else { 2 };
                    }
                    _ => {}
                }
            }
            b'\r' => i += 1,
            b => {
                text.push(b);
                i += 1;
                ends.push(i);
            }
        }
    }
    (text, ends)
}

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
