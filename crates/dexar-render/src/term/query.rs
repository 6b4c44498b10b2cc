//! Asking the terminal what it can draw and how big its cells are.
//!
//! The questions and the parsing of the answers are ratatui-image's
//! (`picker::cap_parser`: kitty graphics, DA1 for sixel, the cell size in
//! pixels, then a status report every terminal answers, wrapped for tmux
//! passthrough inside tmux). The reading is ours, on `/dev/tty` with a
//! deadline: `Picker::from_query_stdio` reads stdin on a thread that it
//! leaves blocked when a terminal never answers, and that thread later takes
//! the user's first keys and puts back the terminal mode it saw at the start,
//! in the middle of a line editor or a full-screen UI. Here nothing outlives
//! the call.

use std::time::Duration;

use ratatui_image::picker::cap_parser::{Parser, QueryStdioOptions, Response};

use super::CellPixels;

/// What a terminal said about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TermAnswer {
    pub kitty: bool,
    pub sixel: bool,
    /// The cell size in pixels, when the terminal told it.
    pub cell: Option<CellPixels>,
}

/// Reads the answers in `bytes` (keys typed meanwhile may surround them):
/// `Some` once the closing status report is there, `None` before.
pub fn parse_answer(bytes: &[u8]) -> Option<TermAnswer> {
    let mut parser = Parser::new();
    let mut answer = TermAnswer::default();
    for &b in bytes {
        for response in parser.push(char::from(b)) {
            match response {
                Response::Kitty => answer.kitty = true,
                Response::Sixel => answer.sixel = true,
                Response::CellSize(Some((w, h))) if w > 0 && h > 0 => {
                    answer.cell = Some(CellPixels {
                        width: w,
                        height: h,
                    })
                }
                Response::Status => return Some(answer),
                _ => {}
            }
        }
    }
    None
}

/// Asks the controlling terminal (`/dev/tty`) and waits at most `timeout`
/// for its answers, with echo and line editing off meanwhile and the
/// terminal's settings put back before returning. `None`, never blocking or
/// panicking, when there is no terminal, the process is in the background,
/// or no complete answer came in time. Call it before anything else reads
/// the terminal, which would otherwise take the answers.
pub fn query_terminal(tmux: bool, timeout: Duration) -> Option<TermAnswer> {
    #[cfg(unix)]
    {
        unix::query(&Parser::query(tmux, QueryStdioOptions::default()), timeout)
    }
    #[cfg(not(unix))]
    {
        let _ = (tmux, timeout);
        None
    }
}

#[cfg(unix)]
mod unix {
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::{Duration, Instant};

    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::fs::{open, Mode, OFlags};
    use rustix::io::Errno;
    use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

    use super::{parse_answer, TermAnswer};

    /// Longest answer we wait for; anything longer is not one.
    const MAX_REPLY: usize = 1024;

    /// Puts the terminal settings back when dropped.
    struct Restore<'a> {
        tty: &'a OwnedFd,
        saved: Termios,
    }

    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = termios::tcsetattr(self.tty, OptionalActions::Now, &self.saved);
        }
    }

    pub(super) fn query(question: &str, timeout: Duration) -> Option<TermAnswer> {
        // O_NONBLOCK applies to this open file description only, not stdin.
        let tty = open(
            "/dev/tty",
            OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        if !termios::isatty(&tty) {
            return None;
        }
        // Changing settings from a background job would stop us (SIGTTOU).
        if termios::tcgetpgrp(&tty).ok()? != rustix::process::getpgrp() {
            return None;
        }
        let saved = termios::tcgetattr(&tty).ok()?;
        let mut raw = saved.clone();
        raw.local_modes &= !(LocalModes::ICANON | LocalModes::ECHO);
        raw.special_codes[SpecialCodeIndex::VMIN] = 0;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(&tty, OptionalActions::Now, &raw).ok()?;
        let _restore = Restore { tty: &tty, saved };

        write_all(&tty, question.as_bytes())?;
        let deadline = Instant::now() + timeout;
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            if let Some(answer) = parse_answer(&reply) {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || reply.len() > MAX_REPLY {
                return None;
            }
            let ms = left.as_millis().clamp(1, 10_000) as i32;
            let mut fds = [PollFd::new(&tty, PollFlags::IN)];
            match poll(&mut fds, ms) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => return None,
            }
            match rustix::io::read(&tty, &mut buf) {
                Ok(0) => return None,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                Err(_) => return None,
            }
        }
    }

    fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> Option<()> {
        while !bytes.is_empty() {
            match rustix::io::write(&fd, bytes) {
                Ok(0) => return None,
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::INTR) | Err(Errno::AGAIN) => {}
                Err(_) => return None,
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn parses_answers_among_typed_keys() {
        // xterm -ti vt340: DA1 with 4 (sixel), the cell size, the status.
        let xterm = b"\x1b[?63;1;2;4;6;9;15;22c\x1b[6;20;10t\x1b[0n";
        assert_eq!(
            parse_answer(xterm),
            Some(TermAnswer {
                kitty: false,
                sixel: true,
                cell: Some(CellPixels {
                    width: 10,
                    height: 20
                }),
            })
        );
        let kitty = b"\x1b_Gi=31;OK\x1b\\\x1b[?62;c\x1b[0n";
        let a = parse_answer(kitty).unwrap();
        assert!(a.kitty && !a.sixel && a.cell.is_none());
        // No graphics: only DA1 and the status.
        assert_eq!(
            parse_answer(b"\x1b[?1;2c\x1b[0n"),
            Some(TermAnswer::default())
        );
        // Incomplete (no status yet) or absent.
        assert_eq!(parse_answer(b"\x1b[?62;4;6;22c"), None);
        assert_eq!(parse_answer(b""), None);
    }

    #[test]
    fn query_without_a_terminal_returns_promptly() {
        // Under `cargo test` in CI there is no controlling terminal; on a
        // developer's terminal this sends a few harmless queries.
        let start = Instant::now();
        let _ = query_terminal(false, Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
