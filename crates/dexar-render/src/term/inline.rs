//! A drawn ratatui buffer as the bytes that print it inline, at the cursor,
//! in a scrolling terminal (the REPL), instead of at fixed screen positions.

use std::fmt::Write;

use ratatui::buffer::{Buffer, CellDiffOption};
use ratatui::style::Color;

/// The bytes that print `buf` row by row from the cursor, ending on the line
/// below it. Cells whose symbol carries an escape sequence (a sixel, kitty or
/// iTerm2 picture) are sent with the cursor saved and restored around them,
/// so where a terminal leaves its cursor after a picture does not matter;
/// cells the picture covers are stepped over. With `reserve`, the rows are
/// first made to exist below the cursor (the screen scrolls now, not in the
/// middle of a picture).
pub(super) fn to_ansi(buf: &Buffer, reserve: bool) -> String {
    let area = buf.area;
    let mut out = String::new();
    if reserve && area.height > 0 {
        out.push_str(&"\n".repeat(usize::from(area.height)));
        let _ = write!(out, "\x1b[{}A", area.height);
    }
    for y in area.top()..area.bottom() {
        out.push('\r');
        let (mut fg, mut bg) = (Color::Reset, Color::Reset);
        let mut pending_skip = 0u16;
        for x in area.left()..area.right() {
            let cell = &buf[(x, y)];
            if cell.diff_option == CellDiffOption::Skip {
                pending_skip += 1;
                continue;
            }
            if pending_skip > 0 {
                let _ = write!(out, "\x1b[{pending_skip}C");
                pending_skip = 0;
            }
            if cell.fg != fg {
                push_colour(&mut out, 38, cell.fg);
                fg = cell.fg;
            }
            if cell.bg != bg {
                push_colour(&mut out, 48, cell.bg);
                bg = cell.bg;
            }
            let symbol = cell.symbol();
            if symbol.contains('\x1b') {
                let _ = write!(out, "\x1b7{symbol}\x1b8\x1b[1C");
            } else {
                out.push_str(symbol);
            }
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

/// SGR 38 (foreground) or 48 (background) for a ratatui colour.
fn push_colour(out: &mut String, layer: u8, colour: Color) {
    let _ = match colour {
        Color::Rgb(r, g, b) => write!(out, "\x1b[{layer};2;{r};{g};{b}m"),
        Color::Indexed(i) => write!(out, "\x1b[{layer};5;{i}m"),
        // Only RGB and indexed colours come from the encoders; anything else
        // falls back to the terminal's default colour.
        _ => write!(out, "\x1b[{}m", layer + 1),
    };
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{encode, CellPixels, CellSize, Graphics, TermImage};

    /// Replays half-block output: per line, the (fg, bg) SGR parameters in
    /// effect at each cell and the cell's symbol.
    fn replay(out: &str) -> Vec<Vec<(String, String, char)>> {
        let mut lines = Vec::new();
        for line in out.lines() {
            let body = line
                .strip_prefix('\r')
                .and_then(|l| l.strip_suffix("\x1b[0m"))
                .expect("a row starts at column 0 and ends with a reset");
            let (mut fg, mut bg) = (String::new(), String::new());
            let mut cells = Vec::new();
            let mut rest = body;
            while let Some(c) = rest.chars().next() {
                if c != '\x1b' {
                    cells.push((fg.clone(), bg.clone(), c));
                    rest = &rest[c.len_utf8()..];
                    continue;
                }
                let r = rest.strip_prefix("\x1b[").expect("SGR");
                let end = r.find('m').expect("SGR terminator");
                let params = &r[..end];
                if let Some(p) = params.strip_prefix("38;") {
                    fg = p.to_string();
                } else if let Some(p) = params.strip_prefix("48;") {
                    bg = p.to_string();
                } else {
                    panic!("unexpected SGR {params}");
                }
                rest = &r[end + 1..];
            }
            lines.push(cells);
        }
        lines
    }

    fn shown(fg: &str, bg: &str, c: char) -> (String, String) {
        match c {
            '▀' => (fg.to_string(), bg.to_string()),
            '▄' => (bg.to_string(), fg.to_string()),
            _ => (bg.to_string(), bg.to_string()),
        }
    }

    #[test]
    fn half_blocks_print_known_cells_in_both_colour_depths() {
        for (g, colour) in [
            (
                Graphics::Truecolor,
                (|c: [u8; 3]| format!("2;{};{};{}", c[0], c[1], c[2])) as fn([u8; 3]) -> String,
            ),
            (Graphics::Ansi256, |c| {
                format!("5;{}", super::super::xterm256(c))
            }),
        ] {
            let out = encode(&known_heatmap(), g, CellSize::new(4, 2));
            assert!(out.ends_with("\x1b[0m\n"));
            let rows = replay(&out);
            assert_eq!(rows.len(), 2);
            for (row, line) in rows.iter().enumerate() {
                assert_eq!(line.len(), 4);
                for (col, (fg, bg, c)) in line.iter().enumerate() {
                    let want = colour(cell_colour(row, col / 2));
                    assert_eq!(shown(fg, bg, *c), (want.clone(), want), "{g} ({row},{col})");
                }
            }
        }
    }

    #[test]
    fn pictures_reserve_their_rows_and_keep_the_cursor_in_place() {
        let img = TermImage::new(
            &known_heatmap(),
            Graphics::Sixel,
            CellSize::new(3, 2),
            CellPixels {
                width: 2,
                height: 4,
            },
            false,
        );
        let out = img.inline();
        assert!(out.starts_with("\n\n\x1b[2A\r\x1b7"), "{out:?}");
        // A DCS sixel sequence of exactly the cells' pixels (3x2 cells of 2x4).
        assert!(
            out.contains("\x1bP") && out.contains("q\"1;1;6;8"),
            "{out:?}"
        );
        // Saved, drawn, restored, then past the picture's cells.
        assert!(out.ends_with("\x1b8\x1b[1C\x1b[0m\n\r\x1b[0m\n"), "{out:?}");
    }
}
