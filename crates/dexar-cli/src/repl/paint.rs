//! Text styling: streamed tokens labelled with their index and coloured by
//! their DEX-AR token weight δ (grounded words bright, linguistic ones dim),
//! the status line after an answer, notes and one-line errors. Without
//! colour (not a terminal, `NO_COLOR`, `TERM=dumb`) the same text, plain.

use dexar_model::StopReason;
use dexar_render::Colormap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    /// ANSI styling allowed at all.
    pub colour: bool,
    /// 24-bit colour (else the xterm 256-colour palette).
    pub truecolor: bool,
}

const RESET: &str = "\x1b[0m";

impl Paint {
    #[cfg(test)]
    pub const PLAIN: Paint = Paint {
        colour: false,
        truecolor: false,
    };

    fn sgr(&self, codes: &str, text: &str) -> String {
        if self.colour && !text.is_empty() {
            format!("\x1b[{codes}m{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    pub fn dim(&self, text: &str) -> String {
        self.sgr("2", text)
    }

    pub fn bold(&self, text: &str) -> String {
        self.sgr("1", text)
    }

    /// A one-line message about bad input; the REPL goes on.
    pub fn error(&self, message: &str) -> String {
        format!(
            "{} {}",
            self.sgr("1;31", "error:"),
            crate::error::one_line(message)
        )
    }

    pub fn warning(&self, message: &str) -> String {
        format!(
            "{} {}",
            self.sgr("1;33", "warning:"),
            crate::error::one_line(message)
        )
    }

    fn rgb(&self, [r, g, b]: [u8; 3]) -> String {
        if self.truecolor {
            format!("38;2;{r};{g};{b}")
        } else {
            format!("38;5;{}", dexar_render::term::xterm256([r, g, b]))
        }
    }

    /// One streamed token: its text, coloured by `relative` weight in [0, 1]
    /// (δ over the largest δ so far; 0: no visual evidence), then its index
    /// as a dim subscript.
    pub fn token(&self, text: &str, index: usize, relative: f32) -> String {
        let text = printable(text);
        let label = self.dim(&subscript(index));
        // Colour the visible part only, so a leading line break stays plain.
        let body_start = text.len() - text.trim_start_matches('\n').len();
        let (breaks, body) = text.split_at(body_start);
        let body = if !self.colour || body.is_empty() {
            body.to_string()
        } else {
            match token_rgb(relative) {
                None => self.sgr("2", body),
                Some(rgb) => {
                    let bold = if relative >= 0.5 { "1;" } else { "" };
                    self.sgr(&format!("{bold}{}", self.rgb(rgb)), body)
                }
            }
        };
        format!("{breaks}{body}{label}")
    }

    /// The line under a finished (or stopped) answer.
    pub fn status(
        &self,
        tokens: usize,
        elapsed: Duration,
        strategy: &str,
        layers: &std::ops::Range<usize>,
        stop: Option<StopReason>,
    ) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        };
        let why = match stop {
            Some(StopReason::Eos) => "end of answer",
            Some(StopReason::MaxTokens) => "reached /max-tokens",
            Some(StopReason::TargetEnd) => "target explained",
            Some(StopReason::ContextFull) => "context full (/clear starts over)",
            Some(StopReason::Cancelled) => "stopped by Ctrl-C, partial answer kept",
            None => "failed",
        };
        let plural = if tokens == 1 { "" } else { "s" };
        self.dim(&format!(
            "── {tokens} token{plural} · {rate:.1} tok/s · strategy {strategy} · layers {}-{} · {why}",
            layers.start,
            layers.end.saturating_sub(1),
        ))
    }
}

/// The colour of a token of `relative` weight in [0, 1]: the bright part
/// of inferno, or `None` (shown dim) for no visual evidence.
pub fn token_rgb(relative: f32) -> Option<[u8; 3]> {
    if relative <= 0.0 || !relative.is_finite() {
        return None;
    }
    Some(Colormap::Inferno.rgb(0.55 + 0.45 * relative.min(1.0)))
}

/// Streamed tokens are coloured by their weight relative to the largest
/// weight seen with this model, kept across answers so that colours settle.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenColours {
    scale: f32,
}

impl TokenColours {
    /// `weight` in [0, 1] relative to the largest weight so far (this one included).
    pub fn relative(&mut self, weight: f32) -> f32 {
        self.scale = self.scale.max(weight);
        if self.scale > 0.0 {
            weight / self.scale
        } else {
            0.0
        }
    }
}

/// Control characters other than line breaks and tabs become U+FFFD, so a
/// token can never move the cursor or start an escape sequence.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// `12` as `₁₂`.
pub fn subscript(n: usize) -> String {
    n.to_string()
        .chars()
        .map(|d| match d {
            '0'..='9' => char::from_u32('₀' as u32 + (d as u32 - '0' as u32)).unwrap_or(d),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLOUR: Paint = Paint {
        colour: true,
        truecolor: true,
    };

    #[test]
    fn tokens_carry_their_index_and_weight() {
        assert_eq!(subscript(0), "₀");
        assert_eq!(subscript(109), "₁₀₉");
        assert_eq!(Paint::PLAIN.token(" red", 3, 1.0), " red₃");
        assert_eq!(Paint::PLAIN.token("\x1b[2J", 0, 0.0), "\u{fffd}[2J₀");
        let grounded = COLOUR.token(" red", 3, 1.0);
        let linguistic = COLOUR.token(" the", 4, 0.0);
        assert!(grounded.starts_with("\x1b[1;38;2;"), "{grounded:?}");
        assert!(linguistic.starts_with("\x1b[2m the"), "{linguistic:?}");
        let lines = COLOUR.token("\nNext", 5, 0.3);
        assert!(lines.starts_with("\n\x1b[38;2;"), "{lines:?}");
        let palette = Paint {
            colour: true,
            truecolor: false,
        }
        .token("x", 0, 0.7);
        assert!(palette.starts_with("\x1b[1;38;5;"), "{palette:?}");
    }

    #[test]
    fn colours_are_relative_to_the_largest_weight_so_far() {
        let mut c = TokenColours::default();
        assert_eq!(c.relative(0.0), 0.0);
        assert_eq!(c.relative(0.5), 1.0);
        assert_eq!(c.relative(0.25), 0.5);
        assert_eq!(c.relative(1.0), 1.0);
        assert_eq!(c.relative(0.5), 0.5);
    }

    #[test]
    fn status_and_messages() {
        let s = Paint::PLAIN.status(
            4,
            Duration::from_secs(2),
            "dexar",
            &(2..4),
            Some(StopReason::Eos),
        );
        assert_eq!(
            s,
            "── 4 tokens · 2.0 tok/s · strategy dexar · layers 2-3 · end of answer"
        );
        assert!(Paint::PLAIN
            .status(1, Duration::ZERO, "x", &(0..1), None)
            .contains("1 token ·"));
        assert_eq!(Paint::PLAIN.error("bad\n  thing"), "error: bad thing");
        assert!(COLOUR.error("x").contains("\x1b[1;31m"));
    }
}
