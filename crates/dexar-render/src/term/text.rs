//! Character-cell renderings: `▀` half-blocks (24-bit or 256 colours) and
//! escape-free ASCII shading.

use std::fmt::Write;

use image::RgbImage;

/// Shading ramp from dark to bright.
const ASCII_RAMP: &[u8] = b" .:-=+*#%@";

/// One text line per two pixel rows: `▀` with the upper pixel as foreground
/// and the lower as background. Colours are only re-sent when they change
/// within a line, and every line ends with a reset (`\x1b[0m`) and `\n`.
/// An odd last pixel row gets a black lower half.
pub(super) fn half_blocks(img: &RgbImage, palette256: bool) -> String {
    let (w, h) = img.dimensions();
    let mut out = String::with_capacity((w as usize * 24 + 8) * h.div_ceil(2) as usize);
    for y in (0..h).step_by(2) {
        let (mut fg, mut bg) = (None, None);
        for x in 0..w {
            let top = img.get_pixel(x, y).0;
            let bottom = if y + 1 < h {
                img.get_pixel(x, y + 1).0
            } else {
                [0, 0, 0]
            };
            if fg != Some(top) {
                push_colour(&mut out, 38, top, palette256);
                fg = Some(top);
            }
            if bg != Some(bottom) {
                push_colour(&mut out, 48, bottom, palette256);
                bg = Some(bottom);
            }
            out.push('▀');
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

/// SGR 38 (foreground) or 48 (background), as `;2;r;g;b` or `;5;n`.
fn push_colour(out: &mut String, layer: u8, [r, g, b]: [u8; 3], palette256: bool) {
    let _ = if palette256 {
        write!(out, "\x1b[{layer};5;{}m", xterm256([r, g, b]))
    } else {
        write!(out, "\x1b[{layer};2;{r};{g};{b}m")
    };
}

/// Nearest colour of the xterm 256 palette, choosing between the 6x6x6 cube
/// (16..=231, levels 0, 95, 135, 175, 215, 255) and the grey ramp
/// (232..=255, 8 + 10 i) by squared RGB distance; the system colours 0..16
/// are skipped because terminals theme them.
pub fn xterm256(rgb: [u8; 3]) -> u8 {
    const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];
    let level = |v: u8| -> usize {
        match v {
            0..48 => 0,
            48..115 => 1,
            _ => usize::from((v - 35) / 40),
        }
    };
    let [ri, gi, bi] = rgb.map(level);
    let cube = [CUBE[ri], CUBE[gi], CUBE[bi]];
    let avg = (u32::from(rgb[0]) + u32::from(rgb[1]) + u32::from(rgb[2])) / 3;
    let grey_i = if avg > 238 {
        23
    } else {
        avg.saturating_sub(3) / 10
    };
    let grey_v = (8 + 10 * grey_i) as u8;
    let dist = |c: [u8; 3]| -> u32 {
        (0..3)
            .map(|i| (i32::from(c[i]) - i32::from(rgb[i])).unsigned_abs().pow(2))
            .sum()
    };
    if dist([grey_v; 3]) < dist(cube) {
        232 + grey_i as u8
    } else {
        (16 + 36 * ri + 6 * gi + bi) as u8
    }
}

/// One character per pixel from [`ASCII_RAMP`] by Rec. 709 luma, one line
/// per pixel row; no escape sequences.
pub(super) fn ascii(img: &RgbImage) -> String {
    let (w, h) = img.dimensions();
    let mut out = String::with_capacity((w as usize + 1) * h as usize);
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = img.get_pixel(x, y).0;
            let luma = 0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b);
            let steps = (ASCII_RAMP.len() - 1) as f32;
            let i = ((luma / 255.0 * steps).round() as usize).min(ASCII_RAMP.len() - 1);
            out.push(char::from(ASCII_RAMP[i]));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{encode, CellSize, Graphics};
    use super::*;

    /// Replays half-block output: per line, the (fg, bg) SGR parameter
    /// strings in effect at each `▀`.
    fn parse_cells(out: &str) -> Vec<Vec<(String, String)>> {
        let mut lines = Vec::new();
        for line in out.lines() {
            let body = line.strip_suffix("\x1b[0m").expect("reset at line end");
            let (mut fg, mut bg) = (String::new(), String::new());
            let mut cells = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                if let Some(r) = rest.strip_prefix('▀') {
                    cells.push((fg.clone(), bg.clone()));
                    rest = r;
                    continue;
                }
                let r = rest.strip_prefix("\x1b[").expect("SGR or ▀");
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

    fn truecolor(c: [u8; 3]) -> String {
        format!("2;{};{};{}", c[0], c[1], c[2])
    }

    #[test]
    fn truecolor_half_blocks_show_known_cells() {
        // 4 cols x 2 rows = 4x4 px: no resampling.
        let out = encode(&known_heatmap(), Graphics::Truecolor, CellSize::new(4, 2));
        assert!(out.ends_with("\x1b[0m\n"));
        let cells = parse_cells(&out);
        assert_eq!(cells.len(), 2);
        assert!(cells.iter().all(|line| line.len() == 4));
        for (row, line) in cells.iter().enumerate() {
            for (col, (fg, bg)) in line.iter().enumerate() {
                let want = truecolor(cell_colour(row, col / 2));
                assert_eq!((fg, bg), (&want, &want), "cell ({row},{col})");
            }
        }
        // Colours are not repeated while unchanged.
        let first = out.lines().next().unwrap();
        assert_eq!(first.matches("\x1b[38;").count(), 2);
    }

    #[test]
    fn half_blocks_split_upper_and_lower_pixels() {
        // 1 col x 1 row of a 4x4 image would resample; use a 1x2 image.
        let img = RgbImage::from_fn(1, 2, |_, y| {
            image::Rgb(if y == 0 { [255, 0, 0] } else { [0, 0, 255] })
        });
        let out = encode(&img, Graphics::Truecolor, CellSize::new(1, 1));
        assert_eq!(out, "\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m▀\x1b[0m\n");
        let out = encode(&img, Graphics::Ansi256, CellSize::new(1, 1));
        assert_eq!(out, "\x1b[38;5;196m\x1b[48;5;21m▀\x1b[0m\n");
    }

    #[test]
    fn ansi256_half_blocks_show_known_cells() {
        let out = encode(&known_heatmap(), Graphics::Ansi256, CellSize::new(4, 2));
        let cells = parse_cells(&out);
        for (row, line) in cells.iter().enumerate() {
            for (col, (fg, bg)) in line.iter().enumerate() {
                let want = format!("5;{}", xterm256(cell_colour(row, col / 2)));
                assert_eq!((fg, bg), (&want, &want), "cell ({row},{col})");
            }
        }
        // inferno(0) = [0, 0, 4] is black in the cube; inferno(1) is pale yellow.
        assert_eq!(cells[0][0].0, "5;16");
        assert_eq!(cells[1][3].0, format!("5;{}", 16 + 36 * 5 + 6 * 5 + 3));
    }

    #[test]
    fn xterm256_mapping() {
        assert_eq!(xterm256([0, 0, 0]), 16);
        assert_eq!(xterm256([255, 255, 255]), 231);
        assert_eq!(xterm256([255, 0, 0]), 196);
        assert_eq!(xterm256([95, 135, 175]), 16 + 36 + 12 + 3);
        // Mid grey is closer to the ramp (128 -> 232 + 12 = 128) than the cube.
        assert_eq!(xterm256([128, 128, 128]), 244);
        assert_eq!(xterm256([8, 8, 8]), 232);
    }

    #[test]
    fn ascii_is_plain_and_shaded() {
        let out = encode(&known_heatmap(), Graphics::Ascii, CellSize::new(4, 4));
        assert!(!out.contains('\x1b'));
        assert!(out.is_ascii());
        let rows: Vec<&[u8]> = out.lines().map(str::as_bytes).collect();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.len() == 4));
        // Darkest cell top-left, brightest bottom-right, ordered in between.
        assert_eq!(rows[0][0], b' ');
        assert_eq!(rows[3][3], b'@');
        let rank = |c: u8| ASCII_RAMP.iter().position(|&r| r == c).unwrap();
        assert!(rank(rows[0][0]) < rank(rows[0][3]));
        assert!(rank(rows[0][3]) < rank(rows[3][0]));
        assert!(rank(rows[3][0]) < rank(rows[3][3]));
    }
}
