//! What is ours in character cells: escape-free ASCII shading, and the
//! xterm 256-colour mapping that half-blocks and streamed tokens use on
//! terminals without 24-bit colour.

use image::RgbImage;

/// Shading ramp from dark to bright.
const ASCII_RAMP: &[u8] = b" .:-=+*#%@";

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

/// One character per pixel from [`ASCII_RAMP`] by Rec. 709 luma, one
/// string per pixel row; no escape sequences.
pub(super) fn ascii(img: &RgbImage) -> Vec<String> {
    let (w, h) = img.dimensions();
    let mut rows = Vec::with_capacity(h as usize);
    for y in 0..h {
        let mut out = String::with_capacity(w as usize);
        for x in 0..w {
            let [r, g, b] = img.get_pixel(x, y).0;
            let luma = 0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b);
            let steps = (ASCII_RAMP.len() - 1) as f32;
            let i = ((luma / 255.0 * steps).round() as usize).min(ASCII_RAMP.len() - 1);
            out.push(char::from(ASCII_RAMP[i]));
        }
        rows.push(out);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{encode, CellSize, Graphics};
    use super::*;

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
