//! A pseudo-terminal to run dexar in, driven like a person at a keyboard:
//! the harness plays the terminal's part (it keeps a vt100 model of the
//! screen and answers cursor-position queries from it) and stays silent to
//! every other query, like a terminal that answers none.

pub use portable_pty::PtySize;
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What the terminal received, with when each chunk arrived.
#[derive(Default)]
struct Screen {
    raw: Vec<u8>,
    /// The screen as a terminal shows it.
    vt: Option<vt100::Parser>,
    /// (offset where a chunk ends, arrival time)
    arrivals: Vec<(usize, Instant)>,
}

pub struct Term {
    pub master: Box<dyn MasterPty + Send>,
    child: Box<dyn Child + Send + Sync>,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    screen: Arc<Mutex<Screen>>,
    /// Raw offset up to which output has been matched.
    pub mark: usize,
    /// The child's HOME (and data directory).
    pub home: tempfile::TempDir,
}

impl Term {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Term {
        let home = tempfile::tempdir().unwrap();
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 100,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(crate::dexar_bin());
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
        let size = |n| std::num::NonZeroU16::new(n).expect("non-zero");
        let screen = Arc::new(Mutex::new(Screen {
            vt: Some(vt100::Parser::new(size(40), size(100), 0)),
            ..Screen::default()
        }));
        let (screen2, writer2) = (screen.clone(), writer.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut tail: Vec<u8> = Vec::new();
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                let mut s = screen2.lock().unwrap();
                let vt = s.vt.as_mut().expect("a screen model");
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

    /// The screen as a terminal shows it now, one string per row.
    pub fn contents(&self) -> String {
        let s = self.screen.lock().unwrap();
        s.vt.as_ref()
            .map(|vt| vt.screen().contents())
            .unwrap_or_default()
    }

    /// Waits until the screen shows `needle`; returns the screen.
    pub fn wait_screen(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.contents();
            if text.contains(needle) {
                return text;
            }
            if start.elapsed() > TIMEOUT {
                panic!("timed out waiting for {needle:?} on screen:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resizes the terminal (the program gets SIGWINCH) and its screen model.
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = |n| std::num::NonZeroU16::new(n).expect("non-zero");
        if let Some(vt) = self.screen.lock().unwrap().vt.as_mut() {
            vt.set_size(size(rows), size(cols));
        }
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
    }

    /// Everything received so far, escapes included.
    pub fn raw(&self) -> Vec<u8> {
        self.screen.lock().unwrap().raw.clone()
    }

    pub fn send(&self, keys: &str) {
        self.send_bytes(keys.as_bytes());
    }

    pub fn send_bytes(&self, bytes: &[u8]) {
        let mut w = self.writer.lock().unwrap();
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    /// Waits for `needle` in the output after the mark, as text without
    /// escape sequences; returns that text and moves the mark past it.
    pub fn expect(&mut self, needle: &str) -> String {
        self.wait_for(needle, true)
    }

    /// Like [`Term::expect`] on the raw bytes, escape sequences included.
    pub fn expect_raw(&mut self, needle: &str) -> String {
        self.wait_for(needle, false)
    }

    pub fn wait_for(&mut self, needle: &str, stripped: bool) -> String {
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
    pub fn arrival(&self, at: usize) -> Instant {
        let s = self.screen.lock().unwrap();
        s.arrivals
            .iter()
            .find(|(end, _)| *end >= at)
            .map(|(_, t)| *t)
            .expect("offset received")
    }

    /// Waits for the prompt, the sign that the REPL takes input again.
    pub fn prompt(&mut self) {
        self.expect("dexar> ");
    }

    pub fn exit_code(&mut self) -> u32 {
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

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Output without escape sequences (CSI, OSC, DCS such as sixel, APC such
/// as kitty) or carriage returns, and for each kept byte the raw offset just
/// after it.
pub fn strip(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
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
