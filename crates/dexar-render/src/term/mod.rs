//! Pictures in a terminal: which graphics protocol a terminal speaks, how
//! big to draw, and the picture itself as a [`TermImage`] that draws into a
//! ratatui buffer (the TUI) or prints inline (the REPL).
//!
//! The encoders are `ratatui-image`'s (sixel through `icy_sixel`'s
//! quantiser, kitty unicode placeholders, iTerm2, half-blocks, each wrapped
//! for tmux passthrough when inside tmux); only the escape-free ASCII
//! shading and the 256-colour mapping of half-blocks are ours. Only
//! [`query_terminal`] (and [`detect_terminal`], which calls it) talks to the
//! terminal.

mod detect;
mod inline;
mod picture;
mod query;
mod text;

use std::fmt;
use std::str::FromStr;

use crate::RenderError;

pub use detect::{detect, detect_terminal, in_tmux, Terminal};
pub use picture::{half_block_colours, TermImage};
pub use query::{parse_answer, query_terminal, TermAnswer};
pub use text::xterm256;

/// How to draw an image in a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Graphics {
    /// kitty graphics protocol (kitty, ghostty, recent WezTerm/Konsole).
    Kitty,
    /// DEC sixel (xterm -ti vt340, foot, mlterm, WezTerm, Windows Terminal...).
    Sixel,
    /// iTerm2 inline images (iTerm2, WezTerm).
    Iterm,
    /// `▀` half-blocks in 24-bit colour: two pixels per character cell.
    Truecolor,
    /// `▀` half-blocks in the xterm 256-colour palette.
    Ansi256,
    /// Shaded ASCII, no escape sequences at all: safe in logs and pipes.
    Ascii,
}

impl Graphics {
    /// Every mode, in the order of [`Graphics::NAMES`].
    pub const ALL: [Graphics; 6] = [
        Graphics::Kitty,
        Graphics::Sixel,
        Graphics::Iterm,
        Graphics::Truecolor,
        Graphics::Ansi256,
        Graphics::Ascii,
    ];
    /// The names accepted by [`FromStr`] (and `DEXAR_GRAPHICS`).
    pub const NAMES: [&'static str; 6] =
        ["kitty", "sixel", "iterm", "blocks", "blocks256", "ascii"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Graphics::Kitty => "kitty",
            Graphics::Sixel => "sixel",
            Graphics::Iterm => "iterm",
            Graphics::Truecolor => "blocks",
            Graphics::Ansi256 => "blocks256",
            Graphics::Ascii => "ascii",
        }
    }

    /// Whether the terminal draws pixels (not character cells).
    pub fn is_pixels(&self) -> bool {
        matches!(self, Graphics::Kitty | Graphics::Sixel | Graphics::Iterm)
    }
}

impl fmt::Display for Graphics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Graphics {
    type Err = RenderError;

    /// Parses a name from [`Graphics::NAMES`] (ASCII case ignored). `auto`
    /// is not a mode: resolve it with [`detect`] before parsing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Graphics::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| RenderError::UnknownGraphics {
                name: s.to_string(),
            })
    }
}

/// A size in terminal character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellSize {
    pub cols: u16,
    pub rows: u16,
}

impl CellSize {
    pub fn new(cols: u16, rows: u16) -> Self {
        Self { cols, rows }
    }

    /// At least one cell each way, so every encoder has something to draw.
    fn at_least_one(self) -> Self {
        Self::new(self.cols.max(1), self.rows.max(1))
    }
}

/// The pixel size of one character cell. Terminals say it when asked
/// ([`query_terminal`]) or through the window size most Unix terminals
/// report; the default 10x20 is typical. It matters for the pixel
/// protocols, which are sent exactly as many pixels as the cells hold, and
/// for keeping pictures' aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellPixels {
    pub width: u16,
    pub height: u16,
}

impl Default for CellPixels {
    fn default() -> Self {
        Self {
            width: 10,
            height: 20,
        }
    }
}

/// The largest cell box within `max` that keeps the image's aspect ratio,
/// assuming the default 10x20 px cells. Never 0 in either direction.
pub fn fit(img_w: u32, img_h: u32, max: CellSize) -> CellSize {
    fit_with(img_w, img_h, max, CellPixels::default())
}

/// [`fit`] for a known cell pixel size.
pub fn fit_with(img_w: u32, img_h: u32, max: CellSize, cell: CellPixels) -> CellSize {
    let max = max.at_least_one();
    if img_w == 0 || img_h == 0 || cell.width == 0 || cell.height == 0 {
        return max;
    }
    // Aspect of the image in cells: (w / cell_w) / (h / cell_h).
    let aspect =
        (f64::from(img_w) * f64::from(cell.height)) / (f64::from(img_h) * f64::from(cell.width));
    let (max_cols, max_rows) = (f64::from(max.cols), f64::from(max.rows));
    let (cols, rows) = if max_cols / aspect <= max_rows {
        (max_cols, max_cols / aspect)
    } else {
        (max_rows * aspect, max_rows)
    };
    let clamp = |v: f64, hi: u16| (v.round() as u16).clamp(1, hi);
    CellSize::new(clamp(cols, max.cols), clamp(rows, max.rows))
}

/// The bytes that print `img` inline in `size` cells with `graphics`,
/// assuming 10x20 px cells and no tmux; see [`TermImage::inline`].
pub fn encode(img: &image::RgbImage, graphics: Graphics, size: CellSize) -> String {
    encode_with(img, graphics, size, CellPixels::default(), false)
}

/// [`encode`] for a known cell pixel size, inside tmux or not.
pub fn encode_with(
    img: &image::RgbImage,
    graphics: Graphics,
    size: CellSize,
    cell: CellPixels,
    tmux: bool,
) -> String {
    TermImage::new(img, graphics, size, cell, tmux).inline()
}

#[cfg(test)]
pub(crate) mod test_support {
    use dexar_core::Grid;
    use image::RgbImage;

    use crate::{heatmap_image, Colormap};

    /// The 2x2 map [0, 1/3; 2/3, 1] as a 4x4 inferno image (2x2 px cells).
    pub fn known_heatmap() -> RgbImage {
        let map = [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        heatmap_image(&map, Grid::new(2, 2), Colormap::Inferno, 2).expect("valid map")
    }

    /// Colour of the known heatmap's cell (row, col) of the 2x2 grid.
    pub fn cell_colour(row: usize, col: usize) -> [u8; 3] {
        Colormap::Inferno.rgb((row * 2 + col) as f32 / 3.0)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use image::RgbImage;

    #[test]
    fn names_round_trip() {
        for (g, name) in Graphics::ALL.iter().zip(Graphics::NAMES) {
            assert_eq!(g.as_str(), name);
            assert_eq!(name.parse::<Graphics>().ok(), Some(*g));
            assert_eq!(g.to_string(), name);
        }
        assert_eq!("SIXEL".parse::<Graphics>().ok(), Some(Graphics::Sixel));
        let err = "auto".parse::<Graphics>().unwrap_err().to_string();
        assert!(
            err.contains("kitty, sixel, iterm, blocks, blocks256, ascii"),
            "{err}"
        );
    }

    #[test]
    fn fit_keeps_aspect_with_tall_cells() {
        // Square image: twice as many columns as rows.
        assert_eq!(fit(336, 336, CellSize::new(80, 60)), CellSize::new(80, 40));
        assert_eq!(fit(336, 336, CellSize::new(80, 24)), CellSize::new(48, 24));
        // Wide image limited by width, tall image limited by height.
        assert_eq!(fit(400, 100, CellSize::new(40, 40)), CellSize::new(40, 5));
        assert_eq!(fit(100, 400, CellSize::new(40, 40)), CellSize::new(20, 40));
        // Degenerate inputs never give 0 cells.
        assert_eq!(fit(1, 10_000, CellSize::new(80, 24)), CellSize::new(1, 24));
        assert_eq!(fit(0, 0, CellSize::new(0, 0)), CellSize::new(1, 1));
        let square = CellPixels {
            width: 10,
            height: 10,
        };
        assert_eq!(
            fit_with(50, 50, CellSize::new(30, 20), square),
            CellSize::new(20, 20)
        );
    }

    #[test]
    fn every_mode_ends_with_a_newline_and_survives_odd_sizes() {
        let img = known_heatmap();
        let empty = RgbImage::new(0, 3);
        for g in Graphics::ALL {
            for size in [
                CellSize::new(0, 0),
                CellSize::new(3, 1),
                CellSize::new(7, 5),
            ] {
                let out = encode(&img, g, size);
                assert!(out.ends_with('\n'), "{g} {size:?}");
            }
            assert_eq!(encode(&empty, g, CellSize::new(4, 4)), "\n");
        }
    }
}
