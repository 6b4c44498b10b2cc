//! Heatmaps printed inline: `/show` (the map over the image the model saw),
//! `/show --raw` (the map alone at grid resolution, with a colour bar and
//! its range) and `/compare` (two maps side by side), in whichever graphics
//! mode the terminal speaks, a third of the terminal high unless `--size`
//! says, so the answer above stays in view.

use dexar_render::term::{encode_with, fit_with, CellPixels, CellSize, Graphics, Terminal};
use dexar_render::{heatmap_image, overlay_beside, with_colorbar, Colormap};
use image::{Rgb, RgbImage};

use super::paint::Paint;
use dexar_session::{LoadedImage, Shown};

/// How pictures are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Display {
    pub graphics: Graphics,
    /// The cell size in pixels the terminal told when asked.
    pub cell: Option<CellPixels>,
    /// Inside tmux: escapes go through passthrough.
    pub tmux: bool,
    /// `--size`: the largest picture in character cells; else the terminal's
    /// width by a third of its height.
    pub size: Option<CellSize>,
    pub colormap: Colormap,
    /// Opacity of the heatmap over the image.
    pub alpha: f32,
}

/// When the terminal does not say how big it is.
const FALLBACK: CellSize = CellSize { cols: 80, rows: 24 };

impl Display {
    pub fn new(terminal: Terminal, size: Option<CellSize>) -> Self {
        Self {
            graphics: terminal.graphics,
            cell: terminal.cell,
            tmux: terminal.tmux,
            size,
            colormap: Colormap::Inferno,
            alpha: 0.6,
        }
    }

    /// The box a picture may fill: `--size`, or the terminal's width (now:
    /// it may have been resized since the last picture) by a third of its
    /// height.
    pub fn max_cells(&self) -> CellSize {
        if let Some(size) = self.size {
            return size;
        }
        let (cols, rows) = crossterm::terminal::size()
            .ok()
            .filter(|(c, r)| *c > 0 && *r > 0)
            .map_or((FALLBACK.cols, FALLBACK.rows), |(c, r)| (c, r));
        CellSize::new(cols.saturating_sub(1).max(8), (rows / 3).max(4))
    }

    /// The map over the image. In ASCII, which cannot show both, the map
    /// alone (bright characters: where the model looked).
    fn picture(&self, view: &RgbImage, shown: &Shown) -> Result<RgbImage, String> {
        let alpha = if self.graphics == Graphics::Ascii {
            1.0
        } else {
            self.alpha
        };
        let beside = shown.beside.as_ref().map(|(g, m)| (*g, m.as_slice()));
        overlay_beside(view, &shown.map01, shown.grid, beside, self.colormap, alpha)
            .map_err(|e| e.to_string())
    }

    fn draw(&self, img: &RgbImage, max: CellSize) -> String {
        let cell = self.cell_pixels();
        encode_with(
            img,
            self.graphics,
            fit_with(img.width(), img.height(), max, cell),
            cell,
            self.tmux,
        )
    }

    /// `/image`: the image as the model sees it (resized and cropped).
    pub fn image(&self, paint: &Paint, image: &LoadedImage) -> String {
        let (w, h) = (image.image.width(), image.image.height());
        let mut out = format!(
            "{} ({w}x{h}), as the model sees it\n",
            paint.bold(&image.label)
        );
        out.push_str(&self.draw(&image.view, self.max_cells()));
        out
    }

    /// `/show`: a title line, the picture, and a note for an empty map.
    pub fn show(&self, paint: &Paint, view: &RgbImage, shown: &Shown) -> Result<String, String> {
        let img = self.picture(view, shown)?;
        let mut out = format!("{} · {}\n", paint.bold(&shown.strategy), shown.title);
        out.push_str(&self.draw(&img, self.max_cells()));
        if shown.degenerate {
            out.push_str(&no_evidence(paint));
        }
        Ok(out)
    }

    /// `/show N --raw`: the map at grid resolution with a colour bar, and
    /// the range of its values before normalisation.
    pub fn raw(&self, paint: &Paint, shown: &Shown) -> Result<String, String> {
        let side = shown.grid.width.max(shown.grid.height).max(1) as u32;
        let cell_px = (256 / side).max(1);
        let map = heatmap_image(&shown.map01, shown.grid, self.colormap, cell_px)
            .and_then(|m| with_colorbar(&m, self.colormap))
            .map_err(|e| e.to_string())?;
        let mut out = format!(
            "{} · {} · {}x{} grid\n",
            paint.bold(&shown.strategy),
            shown.title,
            shown.grid.height,
            shown.grid.width
        );
        // Nearest-neighbour to exactly the pixels the encoder samples, so
        // every grid cell stays one crisp block.
        let cell = self.cell_pixels();
        let cells = fit_with(map.width(), map.height(), self.max_cells(), cell);
        let (w, h) = encoder_pixels(self.graphics, cells, cell);
        let map = image::imageops::resize(&map, w, h, image::imageops::FilterType::Nearest);
        out.push_str(&encode_with(&map, self.graphics, cells, cell, self.tmux));
        out.push_str(&format!(
            "min {}  max {}  (colour bar: min at the bottom, max at the top)\n",
            number(shown.raw_min),
            number(shown.raw_max)
        ));
        if shown.degenerate {
            out.push_str(&no_evidence(paint));
        }
        Ok(out)
    }

    /// `/compare`: two strategies' pictures side by side, each labelled.
    pub fn compare(
        &self,
        paint: &Paint,
        view: &RgbImage,
        left: &Shown,
        right: &Shown,
    ) -> Result<String, String> {
        let a = self.picture(view, left)?;
        let b = self.picture(view, right)?;
        let gap = (a.width() / 16).max(2);
        let width = a.width() + gap + b.width();
        let height = a.height().max(b.height());
        let mut both = RgbImage::from_pixel(width, height, Rgb([0, 0, 0]));
        image::imageops::replace(&mut both, &a, 0, 0);
        image::imageops::replace(&mut both, &b, i64::from(a.width() + gap), 0);
        let cell = self.cell_pixels();
        let cells = fit_with(width, height, self.max_cells(), cell);
        // The column where the right picture starts.
        let split = (f64::from(cells.cols) * f64::from(a.width() + gap) / f64::from(width)).round()
            as usize;
        let left_label = format!("{} {}", left.strategy, flag(left));
        let pad = split.saturating_sub(left_label.chars().count()).max(1);
        let mut out = format!("{}\n", left.title);
        out.push_str(&format!(
            "{}{}{}\n",
            paint.bold(&left_label),
            " ".repeat(pad),
            paint.bold(&format!("{} {}", right.strategy, flag(right)))
        ));
        out.push_str(&encode_with(&both, self.graphics, cells, cell, self.tmux));
        Ok(out)
    }

    /// The pixel size of a character cell: what the terminal told when
    /// asked, else its window size (most Unix terminals report it), else
    /// the usual 10x20.
    fn cell_pixels(&self) -> CellPixels {
        self.cell.unwrap_or_else(window_cell_pixels)
    }
}

/// The cell size from the terminal's window size in pixels, else 10x20.
pub fn window_cell_pixels() -> CellPixels {
    crossterm::terminal::window_size()
        .ok()
        .filter(|w| w.columns > 0 && w.rows > 0)
        .map(|w| CellPixels {
            width: w.width / w.columns,
            height: w.height / w.rows,
        })
        .filter(|c| c.width > 0 && c.height > 0)
        .unwrap_or_default()
}

/// The pixel size the encoders sample `cells` at.
fn encoder_pixels(graphics: Graphics, cells: CellSize, cell: CellPixels) -> (u32, u32) {
    let (c, r) = (u32::from(cells.cols), u32::from(cells.rows));
    match graphics {
        Graphics::Ascii => (c, r),
        Graphics::Truecolor | Graphics::Ansi256 => (c, 2 * r),
        Graphics::Sixel | Graphics::Kitty | Graphics::Iterm => {
            (c * u32::from(cell.width), r * u32::from(cell.height))
        }
    }
}

/// Plain decimals for ordinary magnitudes, scientific notation otherwise.
pub fn number(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-3..1e4).contains(&a) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn flag(shown: &Shown) -> &'static str {
    if shown.degenerate {
        "(no visual evidence)"
    } else {
        ""
    }
}

fn no_evidence(paint: &Paint) -> String {
    format!(
        "{}\n",
        paint.dim(
            "no visual evidence: the map is constant (DEX-AR gives linguistic tokens weight 0)"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dexar_core::Grid;

    fn shown(map01: Vec<f32>, degenerate: bool) -> Shown {
        Shown {
            strategy: "dexar".into(),
            title: "token 1 \" red\" δ=0.500".into(),
            map01,
            grid: Grid::new(2, 2),
            raw_min: 0.0,
            raw_max: 2.0,
            degenerate,
            beside: None,
        }
    }

    fn display(graphics: Graphics) -> Display {
        Display {
            cell: Some(CellPixels::default()),
            ..Display::new(Terminal::with_mode(graphics), Some(CellSize::new(40, 20)))
        }
    }

    #[test]
    fn show_in_each_mode() {
        let view = RgbImage::from_pixel(64, 64, Rgb([40, 80, 120]));
        let s = shown(vec![0.0, 0.2, 0.6, 1.0], false);
        let sixel = display(Graphics::Sixel)
            .show(&Paint::PLAIN, &view, &s)
            .unwrap();
        assert!(sixel.starts_with("dexar · token 1"));
        assert!(
            sixel.contains("\x1bP") && sixel.contains("q\""),
            "{sixel:?}"
        );
        let ascii = display(Graphics::Ascii)
            .show(&Paint::PLAIN, &view, &s)
            .unwrap();
        assert!(!ascii.contains('\x1b'));
        // 40x20 box, square image, 10x20 cells: 40 columns by 20 rows.
        let rows: Vec<&str> = ascii.lines().skip(1).collect();
        assert_eq!(rows.len(), 20);
        assert!(rows.iter().all(|r| r.len() == 40));
        // Bottom-right (1.0) brighter than top-left (0.0) in the shading ramp.
        let ramp = " .:-=+*#%@";
        let level = |c: char| ramp.find(c).unwrap();
        let first = rows[0].chars().next().unwrap();
        let last = rows[19].chars().last().unwrap();
        assert!(level(last) > level(first), "{first:?} {last:?}");
    }

    #[test]
    fn raw_has_range_and_colour_bar() {
        let s = shown(vec![0.0, 0.2, 0.6, 1.0], false);
        let out = display(Graphics::Truecolor).raw(&Paint::PLAIN, &s).unwrap();
        assert!(out.contains("2x2 grid"));
        assert!(out.contains("min 0.0000  max 2.0000"), "{out}");
        assert_eq!(number(1.5e-6), "1.500e-6");
        assert!(out.contains('▀'));
        let flat = shown(vec![0.0; 4], true);
        let out = display(Graphics::Ascii).raw(&Paint::PLAIN, &flat).unwrap();
        assert!(out.contains("no visual evidence"));
    }

    #[test]
    fn compare_labels_both_sides() {
        let view = RgbImage::from_pixel(32, 32, Rgb([0, 0, 0]));
        let a = shown(vec![0.0, 0.2, 0.6, 1.0], false);
        let mut b = shown(vec![0.0; 4], true);
        b.strategy = "raw-attention".into();
        let out = display(Graphics::Ascii)
            .compare(&Paint::PLAIN, &view, &a, &b)
            .unwrap();
        let label = out.lines().nth(1).unwrap();
        assert!(label.starts_with("dexar"), "{label}");
        assert!(
            label.contains("raw-attention (no visual evidence)"),
            "{label}"
        );
        let picture: Vec<&str> = out.lines().skip(2).collect();
        assert!(picture.iter().all(|r| r.len() <= 40));
    }

    #[test]
    fn bad_maps_are_errors_not_panics() {
        let view = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        let s = shown(vec![0.0; 3], false);
        assert!(display(Graphics::Truecolor)
            .show(&Paint::PLAIN, &view, &s)
            .is_err());
        assert!(display(Graphics::Truecolor).raw(&Paint::PLAIN, &s).is_err());
    }
}
