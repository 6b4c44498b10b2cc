//! A small DEC sixel encoder with a fixed 6x7x6 colour cube (252 colours).
//!
//! A fixed palette needs no per-image analysis, is deterministic (testable),
//! and is plenty for smooth colormaps; photos in overlays band slightly.

use std::fmt::Write;

use image::RgbImage;

/// Levels per channel of the palette cube: red, green (most visible), blue.
const LEVELS: [u32; 3] = [6, 7, 6];
const COLOURS: usize = (LEVELS[0] * LEVELS[1] * LEVELS[2]) as usize;

/// Palette register of a colour: `r * 42 + g * 6 + b` over rounded levels.
pub(super) fn register(rgb: [u8; 3]) -> usize {
    let [r, g, b] = level_of(rgb);
    (r * LEVELS[1] * LEVELS[2] + g * LEVELS[2] + b) as usize
}

fn level_of(rgb: [u8; 3]) -> [u32; 3] {
    std::array::from_fn(|c| (u32::from(rgb[c]) * (LEVELS[c] - 1) + 127) / 255)
}

/// The colour of a palette register in sixel's percent units.
pub(super) fn register_percent(register: usize) -> [u32; 3] {
    let reg = register as u32;
    let levels = [
        reg / (LEVELS[1] * LEVELS[2]),
        reg / LEVELS[2] % LEVELS[1],
        reg % LEVELS[2],
    ];
    std::array::from_fn(|c| (levels[c] * 100 + (LEVELS[c] - 1) / 2) / (LEVELS[c] - 1))
}

/// DCS `q`, raster attributes `"1;1;W;H` (square pixels), the used palette
/// entries `#n;2;r;g;b`, then 6-row bands separated by `-`: per colour in
/// the band, `#n` and one run-length-encoded sixel row, colours separated
/// by `$` (carriage return). Ends with ST and a newline.
pub(super) fn encode(img: &RgbImage) -> String {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let registers: Vec<u8> = img.pixels().map(|p| register(p.0) as u8).collect();
    let mut used = [false; COLOURS];
    for &r in &registers {
        used[usize::from(r)] = true;
    }

    let mut out = String::with_capacity(64 + w * h / 2);
    out.push_str("\x1bPq");
    let _ = write!(out, "\"1;1;{w};{h}");
    for reg in (0..COLOURS).filter(|&r| used[r]) {
        let [r, g, b] = register_percent(reg);
        let _ = write!(out, "#{reg};2;{r};{g};{b}");
    }

    // Per band: the colours present, in register order, and their bit rows.
    let mut slot_of = [usize::MAX; COLOURS];
    for band_top in (0..h).step_by(6) {
        if band_top > 0 {
            out.push('-');
        }
        let band_rows = (h - band_top).min(6);
        let mut present: Vec<usize> = Vec::new();
        let mut bits: Vec<Vec<u8>> = Vec::new();
        slot_of.fill(usize::MAX);
        for dy in 0..band_rows {
            let row = &registers[(band_top + dy) * w..(band_top + dy + 1) * w];
            for (x, &reg) in row.iter().enumerate() {
                let reg = usize::from(reg);
                if slot_of[reg] == usize::MAX {
                    slot_of[reg] = bits.len();
                    present.push(reg);
                    bits.push(vec![0; w]);
                }
                bits[slot_of[reg]][x] |= 1 << dy;
            }
        }
        present.sort_unstable();
        for (i, &reg) in present.iter().enumerate() {
            if i > 0 {
                out.push('$');
            }
            let _ = write!(out, "#{reg}");
            push_sixel_row(&mut out, &bits[slot_of[reg]]);
        }
    }
    out.push_str("\x1b\\\n");
    out
}

/// One sixel row: char `63 + bits` per column, runs of 4+ as `!N<char>`,
/// trailing empty columns dropped.
fn push_sixel_row(out: &mut String, bits: &[u8]) {
    let end = bits.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut x = 0;
    while x < end {
        let run = bits[x..end].iter().take_while(|&&b| b == bits[x]).count();
        let c = char::from(63 + bits[x]);
        if run >= 4 {
            let _ = write!(out, "!{run}{c}");
        } else {
            out.extend(std::iter::repeat_n(c, run));
        }
        x += run;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{encode as encode_term, CellSize, Graphics};
    use super::*;

    #[test]
    fn palette_cube_corners() {
        assert_eq!(register([0, 0, 0]), 0);
        assert_eq!(register([255, 255, 255]), COLOURS - 1);
        assert_eq!(register_percent(0), [0, 0, 0]);
        assert_eq!(register_percent(COLOURS - 1), [100, 100, 100]);
        // Pure green: level 6 of 7 -> 6 * 6 = 36.
        assert_eq!(register([0, 255, 0]), 36);
        assert_eq!(register_percent(36), [0, 100, 0]);
        // Green levels land on 0, 17, 33, 50, 67, 83, 100 percent.
        let greens: Vec<u32> = (0..7).map(|g| register_percent(g * 6)[1]).collect();
        assert_eq!(greens, [0, 17, 33, 50, 67, 83, 100]);
    }

    #[test]
    fn run_length_encoding() {
        let mut s = String::new();
        push_sixel_row(&mut s, &[1, 1, 1, 1, 1, 2, 2, 0, 0, 63, 0, 0]);
        assert_eq!(s, "!5@AA??~");
    }

    #[test]
    fn known_heatmap_structure() {
        // 4x4 heatmap in 2x1 cells of 10x20 px: 20x20 px, each 2x2 grid
        // cell a 10x10 block (nearest-neighbour upscale).
        let out = encode_term(&known_heatmap(), Graphics::Sixel, CellSize::new(2, 1));
        let body = out
            .strip_prefix("\x1bPq\"1;1;20;20")
            .and_then(|s| s.strip_suffix("\x1b\\\n"))
            .expect("DCS q, raster attributes, ST, newline");
        let regs: Vec<usize> = (0..4)
            .map(|i| register(cell_colour(i / 2, i % 2)))
            .collect();
        // The palette lists exactly the four cell colours, in register order.
        let mut sorted = regs.clone();
        sorted.sort_unstable();
        let palette: String = sorted
            .iter()
            .map(|&r| {
                let [pr, pg, pb] = register_percent(r);
                format!("#{r};2;{pr};{pg};{pb}")
            })
            .collect();
        let data = body.strip_prefix(palette.as_str()).expect("palette first");
        // 20 rows = 4 bands (6, 6, 6, 2).
        let bands: Vec<&str> = data.split('-').collect();
        assert_eq!(bands.len(), 4);
        // Band 0 (rows 0-5) is all top cells: full sixels ('~' = 63 + 0b111111).
        let (a, b) = (regs[0], regs[1]);
        let (lo, hi) = (a.min(b), a.max(b));
        let expect_top = |reg: usize| if reg == a { "!10~" } else { "!10?!10~" };
        assert_eq!(
            bands[0],
            format!("#{lo}{}$#{hi}{}", expect_top(lo), expect_top(hi))
        );
        // Band 1 (rows 6-11): rows 6-9 top cells (bits 0-3 = 'N'),
        // rows 10-11 bottom cells (bits 4-5 = 'o').
        assert!(
            bands[1].contains(&format!("#{}!10N", regs[0])),
            "{}",
            bands[1]
        );
        assert!(
            bands[1].contains(&format!("#{}!10o", regs[2])),
            "{}",
            bands[1]
        );
        assert!(
            bands[1].contains(&format!("#{}!10?!10o", regs[3])),
            "{}",
            bands[1]
        );
        // Last band has only rows 18-19 (bits 0-1 = 'B').
        assert!(
            bands[3].contains(&format!("#{}!10B", regs[2])),
            "{}",
            bands[3]
        );
        assert!(
            bands[3].contains(&format!("#{}!10?!10B", regs[3])),
            "{}",
            bands[3]
        );
    }
}
