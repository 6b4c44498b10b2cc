//! Turning attribution maps into pictures: colormaps, PyTorch-exact bilinear
//! upsampling, image overlays, atomic PNG export, terminal pictures
//! (kitty, sixel, iTerm2, true-colour / 256-colour half-blocks through
//! ratatui-image, plain ASCII), plus a pure, testable rule for picking which
//! one a terminal understands, and a session as one self-contained HTML page
//! ([`html`]).
//!
//! It is for *drawing* maps that are already computed and normalised to
//! `[0, 1]` (see [`dexar_core::minmax`]). It is not for computing them (that
//! is `dexar-core`), for text layout, fonts or captions, for TUI layout, or
//! for managing the terminal beyond the one short query in
//! [`term::query_terminal`]. Every function returns pixels, bytes or
//! drawn buffer cells; only [`save_png_atomic`] and the query touch the
//! outside world.

mod colormap;
pub mod html;
mod overlay;
mod png;
pub mod term;
mod upsample;

use std::path::PathBuf;

pub use colormap::Colormap;
pub use dexar_core::Grid;
pub use html::{session_html, HtmlConversation, HtmlMaps, HtmlSession, HtmlTurn};
pub use overlay::{colorbar_image, heatmap_image, overlay, overlay_beside, with_colorbar};
pub use png::{png_bytes, save_png_atomic};
pub use upsample::upsample_bilinear;

/// Largest side, in pixels, of any image this crate will allocate.
pub const MAX_SIDE_PX: u32 = 16_384;

/// Everything that can go wrong while drawing or saving a map.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("heatmap has {got} values but its {}x{} grid needs {expected}", grid.height, grid.width)]
    MapSize {
        grid: Grid,
        expected: usize,
        got: usize,
    },
    #[error("heatmap grid is empty ({}x{}); nothing to draw", grid.height, grid.width)]
    EmptyGrid { grid: Grid },
    #[error("image of {width}x{height} px is too large (at most {MAX_SIDE_PX} px a side)")]
    TooLarge { width: u64, height: u64 },
    #[error("unknown colormap '{name}' (expected one of: {})", Colormap::NAMES.join(", "))]
    UnknownColormap { name: String },
    #[error("unknown graphics mode '{name}' (expected one of: {})", term::Graphics::NAMES.join(", "))]
    UnknownGraphics { name: String },
    #[error("cannot encode PNG: {0}")]
    Encode(#[source] image::ImageError),
    #[error("cannot build the HTML page: {0}")]
    Html(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `map` holds one value per cell of a non-empty `grid`.
pub(crate) fn check_map(map: &[f32], grid: Grid) -> Result<(), RenderError> {
    if grid.is_empty() {
        return Err(RenderError::EmptyGrid { grid });
    }
    if map.len() != grid.len() {
        return Err(RenderError::MapSize {
            grid,
            expected: grid.len(),
            got: map.len(),
        });
    }
    Ok(())
}

/// Checks an image size against [`MAX_SIDE_PX`], in u64 so nothing overflows.
pub(crate) fn check_size(width: u64, height: u64) -> Result<(u32, u32), RenderError> {
    let max = u64::from(MAX_SIDE_PX);
    if width > max || height > max {
        return Err(RenderError::TooLarge { width, height });
    }
    // Both fit in u32 after the check above.
    Ok((width as u32, height as u32))
}
