//! Choosing a graphics mode from the environment, and the sixel DA1 probe.

use std::io::IsTerminal;
use std::time::Duration;

use super::Graphics;

/// Picks the best graphics mode; pure, so every rule is unit-tested.
///
/// Rules, first match wins:
/// 1. `DEXAR_GRAPHICS` names a mode (see [`Graphics::NAMES`]): that mode.
/// 2. Not a TTY, or `TERM=dumb`: ASCII.
/// 3. Outside tmux (`TMUX` unset and `TERM_PROGRAM` not `tmux`), since tmux
///    does not pass these escapes through:
///    `KITTY_WINDOW_ID` set, `TERM` containing `kitty`, or
///    `TERM_PROGRAM=ghostty`: kitty; `TERM_PROGRAM` `iTerm.app` or
///    `WezTerm`: iTerm2.
/// 4. `probe_sixel()` says the terminal answers DA1 with attribute 4: sixel.
///    It is only called when the rules above did not decide.
/// 5. `COLORTERM` `truecolor` or `24bit`: true-colour half-blocks.
/// 6. `TERM` containing `256color`: 256-colour half-blocks.
/// 7. Otherwise ASCII.
pub fn detect(
    env: &dyn Fn(&str) -> Option<String>,
    is_tty: bool,
    probe_sixel: &dyn Fn() -> Option<bool>,
) -> Graphics {
    // Empty variables count as unset.
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(mode) = var("DEXAR_GRAPHICS").and_then(|v| v.parse().ok()) {
        return mode;
    }
    let term = var("TERM").unwrap_or_default();
    if !is_tty || term == "dumb" {
        return Graphics::Ascii;
    }
    let program = var("TERM_PROGRAM").unwrap_or_default();
    let in_tmux = var("TMUX").is_some() || program == "tmux";
    if !in_tmux {
        if var("KITTY_WINDOW_ID").is_some() || term.contains("kitty") || program == "ghostty" {
            return Graphics::Kitty;
        }
        if program == "iTerm.app" || program == "WezTerm" {
            return Graphics::Iterm;
        }
    }
    if probe_sixel() == Some(true) {
        return Graphics::Sixel;
    }
    let colorterm = var("COLORTERM").unwrap_or_default();
    if colorterm.eq_ignore_ascii_case("truecolor") || colorterm.eq_ignore_ascii_case("24bit") {
        return Graphics::Truecolor;
    }
    if term.contains("256color") {
        return Graphics::Ansi256;
    }
    Graphics::Ascii
}

/// [`detect`] for this process: its environment, whether stdout is a
/// terminal, and a real DA1 probe with a 250 ms timeout.
pub fn detect_terminal() -> Graphics {
    detect(
        &|name| std::env::var(name).ok(),
        std::io::stdout().is_terminal(),
        &|| probe_sixel_da1(Duration::from_millis(250)),
    )
}

/// Asks the controlling terminal for its primary device attributes
/// (`ESC [ c`) and reports whether the reply lists attribute 4 (sixel).
///
/// Uses `/dev/tty` in non-canonical, no-echo mode for at most `timeout`,
/// restoring the previous terminal settings before returning (so it is safe
/// whether or not the caller already has raw mode on). Returns `None`, never
/// blocking or panicking, when there is no controlling terminal, the process
/// is in the background, or no complete reply arrives in time. Call it
/// before starting a reader of stdin, which would otherwise eat the reply.
pub fn probe_sixel_da1(timeout: Duration) -> Option<bool> {
    #[cfg(unix)]
    {
        unix::probe(timeout)
    }
    #[cfg(not(unix))]
    {
        let _ = timeout;
        None
    }
}

/// Parses a DA1 reply `ESC [ ? Ps ; ... c` anywhere in `bytes` (keys typed
/// during the probe may surround it): `Some(has attribute 4)` once a whole
/// reply is there, `None` before.
fn parse_da1(bytes: &[u8]) -> Option<bool> {
    let start = bytes.windows(3).position(|w| w == b"\x1b[?")? + 3;
    let rest = &bytes[start..];
    let end = rest.iter().position(|&b| b == b'c')?;
    let params = &rest[..end];
    if !params.iter().all(|&b| b.is_ascii_digit() || b == b';') {
        return Some(false);
    }
    Some(params.split(|&b| b == b';').any(|p| p == b"4"))
}

#[cfg(unix)]
mod unix {
    use std::fs::{File, OpenOptions};
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, Instant};

    /// Longest reply we wait for; anything longer is not a DA1 answer.
    const MAX_REPLY: usize = 256;

    /// Puts the terminal settings back when dropped.
    struct Restore<'a> {
        tty: &'a File,
        saved: libc::termios,
    }

    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            // SAFETY: valid open fd and a termios filled by tcgetattr.
            unsafe { libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSANOW, &self.saved) };
        }
    }

    pub(super) fn probe(timeout: Duration) -> Option<bool> {
        // O_NONBLOCK applies to this open file description only, not stdin.
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open("/dev/tty")
            .ok()?;
        let fd = tty.as_raw_fd();
        // SAFETY: plain libc queries on an fd we own.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            // Changing settings from a background job would stop us (SIGTTOU).
            if libc::tcgetpgrp(fd) != libc::getpgrp() {
                return None;
            }
        }
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: valid fd and termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        let _restore = Restore { tty: &tty, saved };

        (&tty).write_all(b"\x1b[c").ok()?;
        let deadline = Instant::now() + timeout;
        let mut reply = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            if let Some(answer) = super::parse_da1(&reply) {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || reply.len() > MAX_REPLY {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 10_000) as libc::c_int;
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                0 => return None,
                n if n < 0 => {
                    if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                        continue;
                    }
                    return None;
                }
                _ => {}
            }
            match (&tty).read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Instant;

    fn run(vars: &[(&str, &str)], is_tty: bool, sixel: Option<bool>) -> Graphics {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        detect(&env, is_tty, &|| sixel)
    }

    /// (environment, is a TTY, sixel probe answer, expected mode)
    type Case<'a> = (&'a [(&'a str, &'a str)], bool, Option<bool>, Graphics);

    #[test]
    fn detection_rules() {
        use Graphics::*;
        let xterm = ("TERM", "xterm-256color");
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Override wins, even off a TTY; invalid or "auto" is ignored.
            (&[("DEXAR_GRAPHICS", "sixel")], false, None, Sixel),
            (&[("DEXAR_GRAPHICS", "blocks256"), ("KITTY_WINDOW_ID", "1")], true, None, Ansi256),
            (&[("DEXAR_GRAPHICS", "auto"), ("KITTY_WINDOW_ID", "1")], true, None, Kitty),
            (&[("DEXAR_GRAPHICS", "bogus")], false, None, Ascii),
            // Not a TTY or a dumb terminal.
            (&[("KITTY_WINDOW_ID", "1"), ("COLORTERM", "truecolor")], false, Some(true), Ascii),
            (&[("TERM", "dumb"), ("COLORTERM", "truecolor")], true, Some(true), Ascii),
            // kitty family.
            (&[("KITTY_WINDOW_ID", "3"), xterm], true, Some(true), Kitty),
            (&[("TERM", "xterm-kitty")], true, None, Kitty),
            (&[("TERM_PROGRAM", "ghostty"), xterm], true, None, Kitty),
            (&[("KITTY_WINDOW_ID", ""), xterm], true, None, Ansi256),
            // iTerm2 protocol.
            (&[("TERM_PROGRAM", "iTerm.app"), xterm], true, Some(true), Iterm),
            (&[("TERM_PROGRAM", "WezTerm"), xterm], true, None, Iterm),
            // Inside tmux, kitty/iTerm2 escapes are not passed through.
            (&[("TMUX", "/tmp/tmux-0/default,1,0"), ("KITTY_WINDOW_ID", "1"), xterm], true, None, Ansi256),
            (&[("TERM_PROGRAM", "tmux"), ("TERM", "xterm-kitty"), ("COLORTERM", "truecolor")], true, None, Truecolor),
            (&[("TMUX", "x"), ("TERM_PROGRAM", "iTerm.app"), xterm], true, Some(true), Sixel),
            // Sixel probe, then colour depth.
            (&[xterm, ("COLORTERM", "truecolor")], true, Some(true), Sixel),
            (&[xterm, ("COLORTERM", "truecolor")], true, Some(false), Truecolor),
            (&[xterm, ("COLORTERM", "24bit")], true, None, Truecolor),
            (&[xterm], true, None, Ansi256),
            (&[("TERM", "xterm")], true, None, Ascii),
            (&[], true, None, Ascii),
        ];
        for (i, (vars, tty, sixel, want)) in cases.iter().enumerate() {
            assert_eq!(
                run(vars, *tty, *sixel),
                *want,
                "case {i}: {vars:?} tty={tty} sixel={sixel:?}"
            );
        }
    }

    #[test]
    fn probe_runs_only_when_needed() {
        let calls = Cell::new(0);
        let probe = || {
            calls.set(calls.get() + 1);
            Some(true)
        };
        let env = |name: &str| (name == "KITTY_WINDOW_ID").then(|| "1".to_string());
        assert_eq!(detect(&env, true, &probe), Graphics::Kitty);
        assert_eq!(detect(&env, false, &probe), Graphics::Ascii);
        assert_eq!(calls.get(), 0);
        assert_eq!(detect(&|_| None, true, &probe), Graphics::Sixel);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn parses_da1_replies() {
        assert_eq!(parse_da1(b"\x1b[?62;4;6;22c"), Some(true));
        assert_eq!(parse_da1(b"\x1b[?64;1;2;6;9;15;18;21;22c"), Some(false));
        assert_eq!(parse_da1(b"\x1b[?4c"), Some(true));
        assert_eq!(parse_da1(b"\x1b[?1;2c"), Some(false));
        // Keys typed around the reply; 44 is not 4.
        assert_eq!(parse_da1(b"ab\x1b[?62;44c"), Some(false));
        assert_eq!(parse_da1(b"x\x1b[?65;4;1cyz"), Some(true));
        // Incomplete or absent.
        assert_eq!(parse_da1(b"\x1b[?62;4"), None);
        assert_eq!(parse_da1(b""), None);
        assert_eq!(parse_da1(b"\x1b[A"), None);
    }

    #[test]
    fn probe_without_a_terminal_returns_promptly() {
        // Under `cargo test` in CI there is no controlling terminal; on a
        // developer's terminal this sends one harmless DA1 query.
        let start = Instant::now();
        let _ = probe_sixel_da1(Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
