//! Choosing a graphics mode from the environment and the terminal's answers.

use std::io::IsTerminal;
use std::time::Duration;

use super::{query_terminal, CellPixels, Graphics, TermAnswer};

/// How long [`detect_terminal`] waits for a terminal to answer; a terminal
/// that says nothing gets the environment's guess after this.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// The terminal pictures are drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    pub graphics: Graphics,
    /// The cell size in pixels the terminal told, if it was asked and did.
    pub cell: Option<CellPixels>,
    /// Inside tmux: escapes go through tmux passthrough.
    pub tmux: bool,
}

impl Terminal {
    /// A mode the user chose, for this process's environment (inside tmux,
    /// pictures are let through, see [`detect_terminal`]).
    pub fn with_mode(graphics: Graphics) -> Self {
        let tmux = in_tmux(&|name| std::env::var(name).ok());
        if tmux && graphics.is_pixels() {
            allow_tmux_passthrough();
        }
        Self {
            graphics,
            cell: None,
            tmux,
        }
    }
}

/// Whether the environment says tmux runs this process.
pub fn in_tmux(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    var("TMUX").is_some()
        || var("TERM_PROGRAM").as_deref() == Some("tmux")
        || var("TERM").is_some_and(|t| t.starts_with("tmux"))
}

/// Picks the best graphics mode; pure, so every rule is unit-tested.
///
/// Rules, first match wins:
/// 1. `DEXAR_GRAPHICS` names a mode (see [`Graphics::NAMES`]): that mode.
/// 2. Not a TTY, or `TERM=dumb`: ASCII.
/// 3. Outside tmux (where these variables may be stale): `KITTY_WINDOW_ID`
///    set, `TERM` containing `kitty`, or `TERM_PROGRAM=ghostty`: kitty;
///    `TERM_PROGRAM` `iTerm.app` or `WezTerm`: iTerm2.
/// 4. `query()` (only called when the rules above did not decide) answers
///    kitty graphics: kitty; DA1 attribute 4: sixel. Inside tmux the
///    questions go through passthrough to the terminal around it.
/// 5. `COLORTERM` `truecolor` or `24bit`: true-colour half-blocks.
/// 6. `TERM` containing `256color`: 256-colour half-blocks.
/// 7. Otherwise ASCII.
pub fn detect(
    env: &dyn Fn(&str) -> Option<String>,
    is_tty: bool,
    query: &dyn Fn() -> Option<TermAnswer>,
) -> Terminal {
    // Empty variables count as unset.
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let tmux = in_tmux(env);
    let pick = |graphics| Terminal {
        graphics,
        cell: None,
        tmux,
    };
    if let Some(mode) = var("DEXAR_GRAPHICS").and_then(|v| v.parse().ok()) {
        return pick(mode);
    }
    let term = var("TERM").unwrap_or_default();
    if !is_tty || term == "dumb" {
        return pick(Graphics::Ascii);
    }
    let program = var("TERM_PROGRAM").unwrap_or_default();
    if !tmux {
        if var("KITTY_WINDOW_ID").is_some() || term.contains("kitty") || program == "ghostty" {
            return pick(Graphics::Kitty);
        }
        if program == "iTerm.app" || program == "WezTerm" {
            return pick(Graphics::Iterm);
        }
    }
    let answer = query();
    let cell = answer.and_then(|a| a.cell);
    let graphics = match answer {
        Some(a) if a.kitty => Graphics::Kitty,
        Some(a) if a.sixel => Graphics::Sixel,
        _ => {
            let colorterm = var("COLORTERM").unwrap_or_default();
            if colorterm.eq_ignore_ascii_case("truecolor")
                || colorterm.eq_ignore_ascii_case("24bit")
            {
                Graphics::Truecolor
            } else if term.contains("256color") {
                Graphics::Ansi256
            } else {
                Graphics::Ascii
            }
        }
    };
    Terminal {
        graphics,
        cell,
        tmux,
    }
}

/// [`detect`] for this process: its environment, whether stdout is a
/// terminal, and a real query with a [`QUERY_TIMEOUT`]. Inside tmux it
/// first lets escapes pass through tmux for this pane (`allow-passthrough`,
/// as ratatui-image's picker does), which the pictures need.
pub fn detect_terminal() -> Terminal {
    let env = |name: &str| std::env::var(name).ok();
    let tmux = in_tmux(&env);
    detect(&env, std::io::stdout().is_terminal(), &|| {
        if tmux {
            allow_tmux_passthrough();
        }
        query_terminal(tmux, QUERY_TIMEOUT)
    })
}

fn allow_tmux_passthrough() {
    let _ = std::process::Command::new("tmux")
        .args(["set", "-p", "allow-passthrough", "on"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const SIXEL: TermAnswer = TermAnswer {
        kitty: false,
        sixel: true,
        cell: Some(CellPixels {
            width: 9,
            height: 18,
        }),
    };
    const KITTY: TermAnswer = TermAnswer {
        kitty: true,
        sixel: false,
        cell: None,
    };
    const PLAIN: TermAnswer = TermAnswer {
        kitty: false,
        sixel: false,
        cell: None,
    };

    fn run(vars: &[(&str, &str)], is_tty: bool, answer: Option<TermAnswer>) -> Graphics {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        detect(&env, is_tty, &|| answer).graphics
    }

    /// (environment, is a TTY, the terminal's answer, expected mode)
    type Case<'a> = (&'a [(&'a str, &'a str)], bool, Option<TermAnswer>, Graphics);

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
            (&[("KITTY_WINDOW_ID", "1"), ("COLORTERM", "truecolor")], false, Some(SIXEL), Ascii),
            (&[("TERM", "dumb"), ("COLORTERM", "truecolor")], true, Some(SIXEL), Ascii),
            // kitty family from the environment.
            (&[("KITTY_WINDOW_ID", "3"), xterm], true, Some(SIXEL), Kitty),
            (&[("TERM", "xterm-kitty")], true, None, Kitty),
            (&[("TERM_PROGRAM", "ghostty"), xterm], true, None, Kitty),
            (&[("KITTY_WINDOW_ID", ""), xterm], true, None, Ansi256),
            // iTerm2 protocol.
            (&[("TERM_PROGRAM", "iTerm.app"), xterm], true, Some(SIXEL), Iterm),
            (&[("TERM_PROGRAM", "WezTerm"), xterm], true, None, Iterm),
            // Inside tmux the environment may be stale: the answers decide.
            (&[("TMUX", "/tmp/tmux-0/default,1,0"), ("KITTY_WINDOW_ID", "1"), xterm], true, None, Ansi256),
            (&[("TMUX", "x"), ("KITTY_WINDOW_ID", "1"), xterm], true, Some(KITTY), Kitty),
            (&[("TERM_PROGRAM", "tmux"), ("TERM", "xterm-kitty"), ("COLORTERM", "truecolor")], true, None, Truecolor),
            (&[("TMUX", "x"), ("TERM_PROGRAM", "iTerm.app"), xterm], true, Some(SIXEL), Sixel),
            // The answers, then colour depth.
            (&[xterm, ("COLORTERM", "truecolor")], true, Some(SIXEL), Sixel),
            (&[xterm], true, Some(KITTY), Kitty),
            (&[xterm, ("COLORTERM", "truecolor")], true, Some(PLAIN), Truecolor),
            (&[xterm, ("COLORTERM", "24bit")], true, None, Truecolor),
            (&[xterm], true, None, Ansi256),
            (&[("TERM", "xterm")], true, None, Ascii),
            (&[], true, None, Ascii),
        ];
        for (i, (vars, tty, answer, want)) in cases.iter().enumerate() {
            assert_eq!(
                run(vars, *tty, *answer),
                *want,
                "case {i}: {vars:?} tty={tty} answer={answer:?}"
            );
        }
    }

    #[test]
    fn query_runs_only_when_needed_and_gives_the_cell_size() {
        let calls = Cell::new(0);
        let query = || {
            calls.set(calls.get() + 1);
            Some(SIXEL)
        };
        let kitty_env = |name: &str| (name == "KITTY_WINDOW_ID").then(|| "1".to_string());
        assert_eq!(detect(&kitty_env, true, &query).graphics, Graphics::Kitty);
        assert_eq!(detect(&kitty_env, false, &query).graphics, Graphics::Ascii);
        assert_eq!(calls.get(), 0);
        let found = detect(&|_| None, true, &query);
        assert_eq!(calls.get(), 1);
        assert_eq!(found.graphics, Graphics::Sixel);
        assert_eq!(found.cell, SIXEL.cell);
        assert!(!found.tmux);
        let tmux_env = |name: &str| (name == "TERM").then(|| "tmux-256color".to_string());
        assert!(detect(&tmux_env, true, &query).tmux);
    }
}
