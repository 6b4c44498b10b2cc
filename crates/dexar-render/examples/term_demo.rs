//! Draws a synthetic heatmap in the terminal, to eyeball each graphics mode.
//!
//! `cargo run -p dexar-render --example term_demo [MODE|all] [COLORMAP]`
//! MODE defaults to what `detect_terminal()` picks.

use dexar_core::Grid;
use dexar_render::term::{detect_terminal, encode, fit, CellSize, Graphics};
use dexar_render::{heatmap_image, with_colorbar, RenderError};

fn main() -> Result<(), RenderError> {
    let mut args = std::env::args().skip(1);
    let modes = match args.next().as_deref() {
        None => vec![detect_terminal().graphics],
        Some("all") => Graphics::ALL.to_vec(),
        Some(name) => vec![name.parse()?],
    };
    let colormap = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_default();

    // A radial blob on a 24x24 patch grid.
    let grid = Grid::new(24, 24);
    let map: Vec<f32> = (0..grid.len())
        .map(|i| {
            let (y, x) = ((i / 24) as f32 - 8.0, (i % 24) as f32 - 14.0);
            (-(x * x + y * y) / 40.0).exp()
        })
        .collect();
    let img = with_colorbar(&heatmap_image(&map, grid, colormap, 14)?, colormap)?;
    let size = fit(img.width(), img.height(), CellSize::new(60, 20));
    for mode in modes {
        println!("{mode} ({colormap}, {}x{} cells):", size.cols, size.rows);
        print!("{}", encode(&img, mode, size));
    }
    Ok(())
}
