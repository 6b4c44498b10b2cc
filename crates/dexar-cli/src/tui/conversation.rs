//! The conversation as lines of a given width: earlier turns as text, the
//! current answer token by token, wrapped so that each token keeps its
//! place (for colouring, selecting and clicking).

use unicode_width::UnicodeWidthChar;

/// What a piece of text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A question ("you: ...").
    Question,
    /// An earlier answer, kept as text only.
    Earlier,
    /// Answer token `t` of the current answer.
    Token(usize),
}

/// A run of text on one line, starting at column `x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub kind: Kind,
    pub x: u16,
    pub text: String,
}

impl Piece {
    pub fn width(&self) -> u16 {
        text_width(&self.text)
    }
}

/// Text the conversation is made of, in order.
pub struct Item<'a> {
    pub kind: Kind,
    pub text: &'a str,
}

/// Lays `items` out in lines of `width` columns: `\n` breaks a line; a
/// piece that does not fit starts a new line, and one wider than a line is
/// cut. Control characters show as U+FFFD, tabs as a space, so no token can
/// move the cursor.
pub fn lay_out(items: &[Item], width: u16) -> Vec<Vec<Piece>> {
    let width = width.max(1);
    let mut lines: Vec<Vec<Piece>> = vec![Vec::new()];
    let mut x = 0u16;
    for item in items {
        let text = printable(item.text);
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                lines.push(Vec::new());
                x = 0;
            }
            let mut rest = part;
            while !rest.is_empty() {
                let w = text_width(rest);
                if x > 0 && x + w > width && w <= width {
                    lines.push(Vec::new());
                    x = 0;
                }
                let (head, tail) = split_at_width(rest, width - x);
                let (head, tail) = if head.is_empty() {
                    // Not even one character fits here: next line.
                    lines.push(Vec::new());
                    x = 0;
                    split_at_width(rest, width)
                } else {
                    (head, tail)
                };
                if let Some(line) = lines.last_mut() {
                    line.push(Piece {
                        kind: item.kind,
                        x,
                        text: head.to_string(),
                    });
                }
                x += text_width(head);
                rest = tail;
                if !rest.is_empty() {
                    lines.push(Vec::new());
                    x = 0;
                }
            }
        }
    }
    lines
}

/// The first line to show so that `line` is visible in `height` rows,
/// keeping the end of the conversation in view when it can.
pub fn first_visible(total: usize, height: usize, line: Option<usize>) -> usize {
    let bottom = total.saturating_sub(height);
    match line {
        Some(l) if l < bottom => l,
        _ => bottom,
    }
}

pub fn text_width(s: &str) -> u16 {
    s.chars().map(|c| c.width().unwrap_or(0) as u16).sum()
}

/// The longest prefix of `s` at most `width` columns wide, and the rest.
fn split_at_width(s: &str, width: u16) -> (&str, &str) {
    let mut used = 0u16;
    for (i, c) in s.char_indices() {
        let w = c.width().unwrap_or(0) as u16;
        if used + w > width {
            return s.split_at(i);
        }
        used += w;
    }
    (s, "")
}

fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(texts: &[&'static str]) -> Vec<Item<'static>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Item {
                kind: Kind::Token(i),
                text: t,
            })
            .collect()
    }

    fn rows(lines: &[Vec<Piece>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.iter().map(|p| p.text.as_str()).collect())
            .collect()
    }

    #[test]
    fn tokens_wrap_whole_and_keep_their_columns() {
        let items = tokens(&["a", " red", " circle", " and", "\n", "blue"]);
        let lines = lay_out(&items, 10);
        assert_eq!(rows(&lines), ["a red", " circle", " and", "blue"]);
        assert_eq!(lines[0][1].kind, Kind::Token(1));
        assert_eq!(lines[0][1].x, 1);
        assert_eq!(lines[2][0].kind, Kind::Token(3));
        // A word wider than the line is cut; control characters are made harmless.
        let lines = lay_out(&tokens(&["abcdefgh", "\x1b[2J"]), 3);
        assert_eq!(rows(&lines), ["abc", "def", "gh\u{fffd}", "[2J"]);
        // Wide characters count two columns.
        let lines = lay_out(&tokens(&["日本", "語"]), 4);
        assert_eq!(rows(&lines), ["日本", "語"]);
        assert_eq!(lines[0][0].width(), 4);
        assert_eq!(rows(&lay_out(&tokens(&["x"]), 0)), ["x"]);
    }

    #[test]
    fn scrolling_keeps_the_focus_in_view() {
        assert_eq!(first_visible(5, 10, Some(4)), 0);
        assert_eq!(first_visible(30, 10, None), 20);
        assert_eq!(first_visible(30, 10, Some(25)), 20);
        assert_eq!(first_visible(30, 10, Some(3)), 3);
    }
}
