//! Heatmaps as images: blended over the input image, as raw blocks, and with
//! a colour bar.

use dexar_core::Grid;
use image::{Rgb, RgbImage};

use crate::{check_map, check_size, upsample_bilinear, Colormap, RenderError};

/// Blends the colour-mapped heatmap over `image`.
///
/// `map01` is the map at grid resolution, already in `[0, 1]` (values outside
/// are clamped, NaN counts as 0). It is upsampled bilinearly (PyTorch
/// semantics, see [`upsample_bilinear`]) to the image size, coloured, and
/// blended with a constant opacity: `out = alpha * colour + (1 - alpha) * pixel`,
/// `alpha` clamped to `[0, 1]` (NaN counts as 0). There is deliberately no
/// extra dimming of low-attention regions: with a dark-at-zero colormap such
/// as inferno the blend already darkens them, and a constant alpha keeps the
/// picture honest (alpha 0 is the image, alpha 1 is the map).
pub fn overlay(
    image: &RgbImage,
    map01: &[f32],
    grid: Grid,
    colormap: Colormap,
    alpha: f32,
) -> Result<RgbImage, RenderError> {
    let up = upsample_bilinear(map01, grid, image.width(), image.height())?;
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let mut out = image.clone();
    for (pixel, &t) in out.pixels_mut().zip(&up) {
        let colour = colormap.rgb(t);
        for (p, c) in pixel.0.iter_mut().zip(colour) {
            let v = alpha * f32::from(c) + (1.0 - alpha) * f32::from(*p);
            *p = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(out)
}

/// [`overlay`] of `map01`, and when `beside` holds a second map (the global
/// view of an image split into tiles) its overlay on the same image to the
/// right, after a dark gap of an eighth of the image's width.
pub fn overlay_beside(
    image: &RgbImage,
    map01: &[f32],
    grid: Grid,
    beside: Option<(Grid, &[f32])>,
    colormap: Colormap,
    alpha: f32,
) -> Result<RgbImage, RenderError> {
    let main = overlay(image, map01, grid, colormap, alpha)?;
    let Some((g, m)) = beside else {
        return Ok(main);
    };
    let second = overlay(image, m, g, colormap, alpha)?;
    let gap = (main.width() / 8).max(1);
    let mut out = RgbImage::from_pixel(
        main.width() + gap + second.width(),
        main.height().max(second.height()),
        image::Rgb([16, 16, 16]),
    );
    image::imageops::replace(&mut out, &main, 0, 0);
    image::imageops::replace(&mut out, &second, i64::from(main.width() + gap), 0);
    Ok(out)
}

/// The raw map as nearest-neighbour blocks: each grid cell becomes a
/// `cell_px x cell_px` square of its colour (`cell_px` 0 counts as 1), so the
/// patch structure stays visible.
pub fn heatmap_image(
    map01: &[f32],
    grid: Grid,
    colormap: Colormap,
    cell_px: u32,
) -> Result<RgbImage, RenderError> {
    check_map(map01, grid)?;
    let cell = u64::from(cell_px.max(1));
    let (w, h) = check_size(grid.width as u64 * cell, grid.height as u64 * cell)?;
    let cell = cell as u32;
    Ok(RgbImage::from_fn(w, h, |x, y| {
        let (row, col) = ((y / cell) as usize, (x / cell) as usize);
        Rgb(colormap.rgb(map01[row * grid.width + col]))
    }))
}

/// A vertical colour bar, `width x height`, with 1.0 at the top and 0.0 at
/// the bottom.
pub fn colorbar_image(
    colormap: Colormap,
    width: u32,
    height: u32,
) -> Result<RgbImage, RenderError> {
    let (w, h) = check_size(u64::from(width), u64::from(height))?;
    let span = h.saturating_sub(1).max(1) as f32;
    Ok(RgbImage::from_fn(w, h, |_, y| {
        Rgb(colormap.rgb(1.0 - y as f32 / span))
    }))
}

/// Background of the gap between an image and its colour bar.
const GAP_COLOUR: Rgb<u8> = Rgb([0, 0, 0]);

/// `img` with a colour bar on its right: a black gap of `max(2, w / 64)` px,
/// then a bar `max(6, w / 24)` px wide and as tall as the image.
pub fn with_colorbar(img: &RgbImage, colormap: Colormap) -> Result<RgbImage, RenderError> {
    let (w, h) = img.dimensions();
    let gap = (w / 64).max(2);
    let bar_w = (w / 24).max(6);
    let (total_w, h) = check_size(u64::from(w) + u64::from(gap + bar_w), u64::from(h))?;
    let bar = colorbar_image(colormap, bar_w, h)?;
    let mut out = RgbImage::from_pixel(total_w, h, GAP_COLOUR);
    image::imageops::replace(&mut out, img, 0, 0);
    image::imageops::replace(&mut out, &bar, i64::from(w + gap), 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 30) as u8, (y * 40) as u8, 200]))
    }

    const MAP: [f32; 4] = [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];

    #[test]
    fn overlay_alpha_zero_is_the_image_and_one_is_the_map() {
        let img = photo(6, 4);
        let grid = Grid::new(2, 2);
        assert_eq!(
            overlay(&img, &MAP, grid, Colormap::Inferno, 0.0).unwrap(),
            img
        );
        assert_eq!(
            overlay(&img, &MAP, grid, Colormap::Inferno, f32::NAN).unwrap(),
            img
        );
        let full = overlay(&img, &MAP, grid, Colormap::Viridis, 1.0).unwrap();
        let up = upsample_bilinear(&MAP, grid, 6, 4).unwrap();
        for (i, p) in full.pixels().enumerate() {
            assert_eq!(p.0, Colormap::Viridis.rgb(up[i]), "pixel {i}");
        }
        // Corners are exactly the corner cells (edge clamp).
        assert_eq!(full.get_pixel(0, 0).0, Colormap::Viridis.rgb(0.0));
        assert_eq!(full.get_pixel(5, 3).0, Colormap::Viridis.rgb(1.0));
    }

    #[test]
    fn the_global_view_is_drawn_beside_the_composed_map() {
        let img = photo(16, 4);
        let grid = Grid::new(2, 2);
        let alone = overlay_beside(&img, &MAP, grid, None, Colormap::Inferno, 1.0).unwrap();
        assert_eq!(
            alone,
            overlay(&img, &MAP, grid, Colormap::Inferno, 1.0).unwrap()
        );
        let global = [1.0];
        let both = overlay_beside(
            &img,
            &MAP,
            grid,
            Some((Grid::new(1, 1), &global)),
            Colormap::Inferno,
            1.0,
        )
        .unwrap();
        // 16 + a gap of 2 + 16 pixels wide; the right part is the global map.
        assert_eq!((both.width(), both.height()), (34, 4));
        assert_eq!(both.get_pixel(0, 0).0, alone.get_pixel(0, 0).0);
        assert_eq!(both.get_pixel(16, 0).0, [16, 16, 16]);
        assert_eq!(both.get_pixel(18, 0).0, Colormap::Inferno.rgb(1.0));
    }

    #[test]
    fn overlay_half_alpha_blends() {
        let img = RgbImage::from_pixel(2, 2, Rgb([100, 100, 100]));
        let out = overlay(&img, &[1.0], Grid::new(1, 1), Colormap::Inferno, 0.5).unwrap();
        // inferno(1) = [252, 255, 164]; (x + 100) / 2, rounded.
        assert_eq!(out.get_pixel(1, 1).0, [176, 178, 132]);
    }

    #[test]
    fn overlay_rejects_mismatched_map() {
        let err = overlay(
            &photo(4, 4),
            &MAP[..3],
            Grid::new(2, 2),
            Colormap::Inferno,
            0.5,
        );
        assert!(matches!(err, Err(RenderError::MapSize { .. })));
    }

    #[test]
    fn heatmap_image_paints_cells() {
        let img = heatmap_image(&MAP, Grid::new(2, 2), Colormap::Inferno, 3).unwrap();
        assert_eq!(img.dimensions(), (6, 6));
        for (x, y, v) in [
            (0, 0, 0.0),
            (5, 0, 1.0 / 3.0),
            (2, 3, 2.0 / 3.0),
            (3, 3, 1.0),
        ] {
            assert_eq!(img.get_pixel(x, y).0, Colormap::Inferno.rgb(v), "({x},{y})");
        }
        assert_eq!(img.get_pixel(2, 2).0, Colormap::Inferno.rgb(0.0));
        // cell_px 0 behaves as 1; absurd sizes are refused, not allocated.
        let one = heatmap_image(&MAP, Grid::new(2, 2), Colormap::Inferno, 0).unwrap();
        assert_eq!(one.dimensions(), (2, 2));
        assert!(matches!(
            heatmap_image(&MAP, Grid::new(2, 2), Colormap::Inferno, u32::MAX),
            Err(RenderError::TooLarge { .. })
        ));
    }

    #[test]
    fn colorbar_runs_from_top_one_to_bottom_zero() {
        let bar = colorbar_image(Colormap::Inferno, 3, 11).unwrap();
        assert_eq!(bar.get_pixel(0, 0).0, Colormap::Inferno.rgb(1.0));
        assert_eq!(bar.get_pixel(2, 10).0, Colormap::Inferno.rgb(0.0));
        assert_eq!(bar.get_pixel(1, 5).0, Colormap::Inferno.rgb(0.5));
        let img = photo(48, 10);
        let out = with_colorbar(&img, Colormap::Inferno).unwrap();
        // gap 2, bar max(6, 2) = 6.
        assert_eq!(out.dimensions(), (56, 10));
        assert_eq!(out.get_pixel(47, 9), img.get_pixel(47, 9));
        assert_eq!(out.get_pixel(49, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(50, 0).0, Colormap::Inferno.rgb(1.0));
        assert_eq!(out.get_pixel(55, 9).0, Colormap::Inferno.rgb(0.0));
    }
}
