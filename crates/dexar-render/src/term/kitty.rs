//! The two PNG-carrying protocols: kitty graphics and iTerm2 inline images.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::CellSize;

/// Largest base64 payload per kitty escape, as the protocol requires.
const KITTY_CHUNK: usize = 4096;

/// kitty graphics protocol: transmit-and-display (`a=T`) a PNG (`f=100`)
/// scaled into `c x r` cells, quietly (`q=2`: no OK/error replies landing
/// in the REPL's input), base64 in chunks of at most 4096 bytes with `m=1`
/// on all but the last chunk. Only the first chunk carries the keys.
pub(super) fn encode_kitty(png: &[u8], size: CellSize) -> String {
    let payload = STANDARD.encode(png);
    let chunks: Vec<&[u8]> = payload.as_bytes().chunks(KITTY_CHUNK).collect();
    let mut out = String::with_capacity(payload.len() + chunks.len() * 16 + 64);
    for (i, chunk) in chunks.iter().enumerate() {
        let more = u8::from(i + 1 < chunks.len());
        if i == 0 {
            out.push_str(&format!(
                "\x1b_Ga=T,f=100,q=2,c={},r={},m={more};",
                size.cols, size.rows
            ));
        } else {
            out.push_str(&format!("\x1b_Gm={more};"));
        }
        // base64 is ASCII, so bytes are chars.
        out.extend(chunk.iter().map(|&b| char::from(b)));
        out.push_str("\x1b\\");
    }
    out.push('\n');
    out
}

/// iTerm2 inline image (OSC 1337): the PNG sized to `width x height` cells.
pub(super) fn encode_iterm(png: &[u8], size: CellSize) -> String {
    format!(
        "\x1b]1337;File=inline=1;size={};width={};height={};preserveAspectRatio=1:{}\x07\n",
        png.len(),
        size.cols,
        size.rows,
        STANDARD.encode(png)
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{encode, encode_with, CellPixels, CellSize, Graphics};
    use super::*;
    use image::RgbImage;

    fn decode_png(b64: &str) -> RgbImage {
        let png = STANDARD.decode(b64).expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"));
        image::load_from_memory(&png).expect("valid PNG").to_rgb8()
    }

    /// Splits kitty output into (control keys, payload) per APC escape.
    fn kitty_escapes(out: &str) -> Vec<(String, String)> {
        let body = out.strip_suffix('\n').expect("ends with newline");
        let mut escapes = Vec::new();
        for part in body.split("\x1b\\").filter(|p| !p.is_empty()) {
            let apc = part.strip_prefix("\x1b_G").expect("APC introducer");
            let (keys, payload) = apc.split_once(';').expect("keys;payload");
            escapes.push((keys.to_string(), payload.to_string()));
        }
        escapes
    }

    #[test]
    fn kitty_single_chunk_decodes_to_the_image() {
        let img = known_heatmap();
        let out = encode(&img, Graphics::Kitty, CellSize::new(8, 4));
        let escapes = kitty_escapes(&out);
        assert_eq!(escapes.len(), 1);
        assert_eq!(escapes[0].0, "a=T,f=100,q=2,c=8,r=4,m=0");
        let back = decode_png(&escapes[0].1);
        assert_eq!(back, img);
        assert_eq!(back.get_pixel(0, 0).0, cell_colour(0, 0));
        assert_eq!(back.get_pixel(3, 0).0, cell_colour(0, 1));
        assert_eq!(back.get_pixel(0, 3).0, cell_colour(1, 0));
        assert_eq!(back.get_pixel(3, 3).0, cell_colour(1, 1));
    }

    #[test]
    fn kitty_chunks_at_4096_with_more_flags() {
        // Noise compresses badly, so the PNG needs several chunks.
        let mut state = 0x1234_5678_u32;
        let img = RgbImage::from_fn(64, 64, |_, _| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            image::Rgb([(state >> 24) as u8, (state >> 16) as u8, (state >> 8) as u8])
        });
        let cell = CellPixels {
            width: 10,
            height: 20,
        };
        let out = encode_with(&img, Graphics::Kitty, CellSize::new(10, 5), cell);
        let escapes = kitty_escapes(&out);
        assert!(escapes.len() >= 3, "{} chunks", escapes.len());
        assert_eq!(escapes[0].0, "a=T,f=100,q=2,c=10,r=5,m=1");
        for (keys, payload) in &escapes[1..escapes.len() - 1] {
            assert_eq!(keys, "m=1");
            assert_eq!(payload.len(), 4096);
        }
        assert_eq!(escapes[0].1.len(), 4096);
        let (last_keys, last_payload) = escapes.last().unwrap();
        assert_eq!(last_keys, "m=0");
        assert!(!last_payload.is_empty() && last_payload.len() <= 4096);
        let joined: String = escapes.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(decode_png(&joined), img);
    }

    #[test]
    fn pixel_payload_is_capped_to_the_cell_box() {
        let img = RgbImage::from_pixel(400, 400, image::Rgb([9, 9, 9]));
        // 3x2 cells of 10x20 px: at most 30x40 px are sent.
        let out = encode(&img, Graphics::Kitty, CellSize::new(3, 2));
        let payload: String = kitty_escapes(&out).into_iter().map(|(_, p)| p).collect();
        assert_eq!(decode_png(&payload).dimensions(), (30, 40));
    }

    #[test]
    fn iterm_header_fields_and_payload() {
        let img = known_heatmap();
        let out = encode(&img, Graphics::Iterm, CellSize::new(8, 4));
        let body = out
            .strip_prefix("\x1b]1337;File=")
            .and_then(|s| s.strip_suffix("\x07\n"))
            .expect("OSC 1337 ... BEL newline");
        let (args, b64) = body.split_once(':').expect("args:payload");
        let png = STANDARD.decode(b64).unwrap();
        let want = format!(
            "inline=1;size={};width=8;height=4;preserveAspectRatio=1",
            png.len()
        );
        assert_eq!(args, want);
        assert_eq!(decode_png(b64), img);
    }
}
