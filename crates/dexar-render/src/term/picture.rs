//! [`TermImage`]: one picture encoded once for a cell box, drawn into a
//! ratatui buffer as often as a screen is redrawn, or printed inline.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::style::Color;
use ratatui::widgets::Widget;
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::protocol::iterm2::Iterm2;
use ratatui_image::protocol::kitty::Kitty;
use ratatui_image::protocol::sixel::Sixel;
use ratatui_image::protocol::Protocol;

use super::{text, CellPixels, CellSize, Graphics};

/// A picture encoded for one graphics mode and cell box.
pub struct TermImage {
    graphics: Graphics,
    size: CellSize,
    body: Body,
}

enum Body {
    /// An image with no pixels: nothing to draw.
    Empty,
    Protocol(Protocol),
    /// One string per row, no escape sequences.
    Ascii(Vec<String>),
}

impl TermImage {
    /// Encodes `img` stretched to `size` cells (pick `size` with
    /// [`super::fit_with`] to keep the aspect ratio) of `cell` pixels; 0
    /// cells count as 1. Pixel protocols get exactly the pixels the cells
    /// hold, half-blocks `cols x 2*rows` and ASCII `cols x rows` samples;
    /// upscaling is nearest-neighbour (crisp patch blocks), downscaling is
    /// filtered. `tmux` wraps escapes for tmux passthrough. An encoder that
    /// fails falls back to half-blocks, so something is always drawn.
    pub fn new(
        img: &RgbImage,
        graphics: Graphics,
        size: CellSize,
        cell: CellPixels,
        tmux: bool,
    ) -> Self {
        let size = size.at_least_one();
        if img.width() == 0 || img.height() == 0 {
            return Self {
                graphics,
                size,
                body: Body::Empty,
            };
        }
        let (cols, rows) = (u32::from(size.cols), u32::from(size.rows));
        let cell_w = u32::from(cell.width.max(1));
        let cell_h = u32::from(cell.height.max(1));
        let cells = Size::new(size.cols, size.rows);
        let pixels = |w, h| DynamicImage::ImageRgb8(scale_to(img, w, h).into_owned());
        let protocol = match graphics {
            Graphics::Ascii => {
                return Self {
                    graphics,
                    size,
                    body: Body::Ascii(text::ascii(&scale_to(img, cols, rows))),
                }
            }
            Graphics::Truecolor | Graphics::Ansi256 => None,
            Graphics::Sixel => Sixel::new(pixels(cols * cell_w, rows * cell_h), cells, false)
                .ok()
                .map(|s| Protocol::Sixel(if tmux { tmux_sixel(s) } else { s })),
            Graphics::Iterm => Iterm2::new(pixels(cols * cell_w, rows * cell_h), cells, tmux)
                .ok()
                .map(Protocol::ITerm2),
            Graphics::Kitty => Kitty::new(
                pixels(cols * cell_w, rows * cell_h),
                cells,
                next_kitty_id(),
                tmux,
                false,
            )
            .ok()
            .map(Protocol::Kitty),
        };
        let protocol = match protocol {
            Some(p) => p,
            // Half-blocks only resample the image in memory; they do not fail.
            None => match Halfblocks::new(pixels(cols, rows * 2), cells) {
                Ok(h) => Protocol::Halfblocks(h),
                Err(_) => {
                    return Self {
                        graphics,
                        size,
                        body: Body::Empty,
                    }
                }
            },
        };
        Self {
            graphics,
            size,
            body: Body::Protocol(protocol),
        }
    }

    /// The cells the picture covers.
    pub fn size(&self) -> CellSize {
        self.size
    }

    pub fn graphics(&self) -> Graphics {
        self.graphics
    }

    /// Draws the picture at the top-left of `area`; a picture larger than
    /// `area` is not drawn (pixel protocols cannot be cut), so size it for
    /// the area it goes in.
    pub fn render(&self, area: Rect, buf: &mut Buffer) {
        let area = area.intersection(buf.area);
        match &self.body {
            Body::Empty => {}
            Body::Ascii(rows) => {
                for (dy, row) in rows.iter().enumerate().take(usize::from(area.height)) {
                    buf.set_stringn(
                        area.x,
                        area.y + dy as u16,
                        row,
                        usize::from(area.width),
                        ratatui::style::Style::default(),
                    );
                }
            }
            Body::Protocol(p) => {
                ratatui_image::Image::new(p).render(area, buf);
                if self.graphics == Graphics::Ansi256 {
                    to_palette(buf, area);
                }
            }
        }
    }

    /// The bytes that print the picture where the cursor is, ending with a
    /// newline on the line below it, so a prompt can follow.
    pub fn inline(&self) -> String {
        match &self.body {
            Body::Empty => "\n".to_string(),
            Body::Ascii(rows) => rows.iter().map(|r| format!("{r}\n")).collect(),
            Body::Protocol(_) => {
                let area = Rect::new(0, 0, self.size.cols, self.size.rows);
                let mut buf = Buffer::empty(area);
                self.render(area, &mut buf);
                super::inline::to_ansi(&buf, self.graphics.is_pixels())
            }
        }
    }
}

/// What the terminal shows in a half-block cell: (upper, lower) colours,
/// whichever of `▀`, `▄` or a blank the encoder chose. `None` for other
/// symbols or colours that are not RGB.
pub fn half_block_colours(symbol: &str, fg: Color, bg: Color) -> Option<([u8; 3], [u8; 3])> {
    let rgb = |c: Color| match c {
        Color::Rgb(r, g, b) => Some([r, g, b]),
        _ => None,
    };
    match symbol {
        "▀" => Some((rgb(fg)?, rgb(bg)?)),
        "▄" => Some((rgb(bg)?, rgb(fg)?)),
        " " => Some((rgb(bg)?, rgb(bg)?)),
        _ => None,
    }
}

/// A sixel wrapped for tmux passthrough with every escape doubled.
/// ratatui-image 11.1 doubles only the first, so the sixel's closing ST ends
/// the passthrough early and the terminal never draws the picture (seen in
/// xterm through tmux 3.3a, tests/xterm.rs).
fn tmux_sixel(plain: Sixel) -> Sixel {
    Sixel {
        data: format!("\x1bPtmux;{}\x1b\\", plain.data.replace('\x1b', "\x1b\x1b")),
        size: plain.size,
        is_tmux: true,
    }
}

/// Kitty image ids: distinct within a process and, with the process id
/// mixed in, unlikely to clash with another program's images.
fn next_kitty_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id().wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503)) | 1
}

/// RGB colours of `area` mapped to the xterm 256-colour palette.
fn to_palette(buf: &mut Buffer, area: Rect) {
    let indexed = |c: Color| match c {
        Color::Rgb(r, g, b) => Color::Indexed(super::xterm256([r, g, b])),
        other => other,
    };
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            if let Some(cell) = buf.cell_mut((x, y)) {
                cell.fg = indexed(cell.fg);
                cell.bg = indexed(cell.bg);
            }
        }
    }
}

/// `img` resized to `w x h`: borrowed when already that size, nearest when
/// growing both ways, triangle-filtered otherwise.
fn scale_to(img: &RgbImage, w: u32, h: u32) -> Cow<'_, RgbImage> {
    if img.dimensions() == (w, h) {
        return Cow::Borrowed(img);
    }
    let filter = if w >= img.width() && h >= img.height() {
        FilterType::Nearest
    } else {
        FilterType::Triangle
    };
    Cow::Owned(image::imageops::resize(img, w, h, filter))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn cells(img: &TermImage) -> Buffer {
        let s = img.size();
        let mut buf = Buffer::empty(Rect::new(0, 0, s.cols, s.rows));
        img.render(buf.area, &mut buf);
        buf
    }

    #[test]
    fn half_blocks_show_known_cells() {
        // 4 cols x 2 rows = 4x4 px: no resampling.
        let img = TermImage::new(
            &known_heatmap(),
            Graphics::Truecolor,
            CellSize::new(4, 2),
            CellPixels::default(),
            false,
        );
        let buf = cells(&img);
        for row in 0..2u16 {
            for col in 0..4u16 {
                let cell = &buf[(col, row)];
                let (upper, lower) = half_block_colours(cell.symbol(), cell.fg, cell.bg)
                    .unwrap_or_else(|| panic!("cell ({row},{col}) {cell:?}"));
                let want = cell_colour(usize::from(row), usize::from(col / 2));
                assert_eq!((upper, lower), (want, want), "cell ({row},{col})");
            }
        }
    }

    #[test]
    fn palette_mode_uses_indexed_colours() {
        let img = TermImage::new(
            &known_heatmap(),
            Graphics::Ansi256,
            CellSize::new(4, 2),
            CellPixels::default(),
            false,
        );
        let buf = cells(&img);
        // Blank cells show their background: inferno(0) is black in the cube.
        assert_eq!(buf[(0, 0)].bg, Color::Indexed(16));
        assert_eq!(
            buf[(3, 1)].bg,
            Color::Indexed(super::super::xterm256(cell_colour(1, 1)))
        );
    }

    #[test]
    fn pixel_protocols_carry_their_escapes_and_tmux_wraps_them() {
        let heat = known_heatmap();
        let small = CellPixels {
            width: 2,
            height: 4,
        };
        for (g, start) in [
            (Graphics::Sixel, "\x1bP"),
            (Graphics::Kitty, "\x1b_G"),
            (Graphics::Iterm, "\x1b]1337;File="),
        ] {
            let plain = TermImage::new(&heat, g, CellSize::new(3, 2), small, false);
            let first = cells(&plain)[(0, 0)].symbol().to_string();
            assert!(first.contains(start), "{g}: {first:?}");
            let wrapped = TermImage::new(&heat, g, CellSize::new(3, 2), small, true);
            let first = cells(&wrapped)[(0, 0)].symbol().to_string();
            assert!(first.starts_with("\x1bPtmux;"), "{g}: {first:?}");
            if g == Graphics::Sixel {
                // Inside, every escape doubled; the only single one ends it.
                let inner = &first["\x1bPtmux;".len()..first.len() - 2];
                assert!(first.ends_with("\x1b\\"));
                assert_eq!(inner.replace("\x1b\x1b", "").matches('\x1b').count(), 0);
                assert!(inner.ends_with("\x1b\x1b\\"), "{inner:?}");
            }
        }
        // Sixel sends exactly the cells' pixels: 3x2 cells of 2x4 px.
        let sixel = TermImage::new(&heat, Graphics::Sixel, CellSize::new(3, 2), small, false);
        let data = cells(&sixel)[(0, 0)].symbol().to_string();
        assert!(data.contains("\"1;1;6;8"), "{data:?}");
    }

    #[test]
    fn ascii_is_plain_and_shaded_and_clipped_to_its_area() {
        let img = TermImage::new(
            &known_heatmap(),
            Graphics::Ascii,
            CellSize::new(4, 4),
            CellPixels::default(),
            false,
        );
        let out = img.inline();
        assert!(out.is_ascii() && !out.contains('\x1b'));
        let mut buf = Buffer::empty(Rect::new(0, 0, 2, 2));
        img.render(Rect::new(0, 0, 4, 4), &mut buf);
        assert_eq!(buf[(0, 0)].symbol(), " ");
    }
}
