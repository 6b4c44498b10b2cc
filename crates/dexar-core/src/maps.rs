//! Heatmap grids, token maps, the min-max normalisation every displayed map
//! goes through, and bilinear upsampling of a grid map to pixels.

use serde::{Deserialize, Serialize};

use crate::regions::{compose_tiles, ImageRegion, RegionKind, RegionMap, RegionView};

/// The patch grid of the image tokens, row-major `height x width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub height: usize,
    pub width: usize,
}

impl Grid {
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }

    pub fn len(&self) -> usize {
        self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One strategy's attribution for one generated token.
///
/// `raw` is the un-normalised map over the image positions (row-major over
/// `grid`; when the image span holds one more position than the grid, as with
/// the `full` feature strategy's CLS token, that extra leading value has been
/// dropped). `weight` is the token weight (δ_t for DEX-AR, 1.0 for strategies
/// without a notion of token weight).
///
/// An image of several regions (tiles and a global view) keeps every
/// region's own map in `regions`; `grid` and `raw` are then the main map over
/// the image: the tiles composed at their boxes ([`compose_tiles`]), or the
/// global view's map when there are no tiles. One region: `regions` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMap {
    pub grid: Grid,
    pub raw: Vec<f32>,
    pub weight: f32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionMap>,
}

impl TokenMap {
    /// The map of a single-region image.
    pub fn single(grid: Grid, raw: Vec<f32>, weight: f32) -> Self {
        Self {
            grid,
            raw,
            weight,
            regions: Vec::new(),
        }
    }

    /// The map of one value per grid cell of every region, region after
    /// region (`cells.len()` is the regions' cell count together).
    pub fn from_cells(regions: &[ImageRegion], cells: Vec<f32>, weight: f32) -> Self {
        if let [only] = regions {
            return Self::single(only.grid, cells, weight);
        }
        let mut at = 0;
        let parts: Vec<RegionMap> = regions
            .iter()
            .map(|r| {
                let end = (at + r.grid.len()).min(cells.len());
                let raw = cells[at.min(end)..end].to_vec();
                at = end;
                RegionMap {
                    kind: r.kind,
                    grid: r.grid,
                    bbox: r.bbox,
                    raw,
                }
            })
            .collect();
        let tiles: Vec<&RegionMap> = parts
            .iter()
            .filter(|r| r.kind == RegionKind::Tile)
            .collect();
        let (grid, raw) = if tiles.is_empty() {
            parts
                .first()
                .map(|r| (r.grid, r.raw.clone()))
                .unwrap_or((Grid::new(0, 0), Vec::new()))
        } else {
            compose_tiles(&tiles)
        };
        Self {
            grid,
            raw,
            weight,
            regions: parts,
        }
    }

    /// The global view's map: the region of kind global, or the map itself
    /// for a single-region image (its one region is the whole image).
    pub fn global(&self) -> Option<(Grid, &[f32])> {
        if self.regions.is_empty() {
            return Some((self.grid, &self.raw));
        }
        self.regions
            .iter()
            .find(|r| r.kind == RegionKind::Global)
            .map(|r| (r.grid, r.raw.as_slice()))
    }

    /// The un-normalised maps a view shows, each with its name (`tiles` for
    /// the composed map, `global` for the global view). A single-region map
    /// shows its one map under every view; a view a map does not have (no
    /// global region) is left out.
    pub fn view(&self, view: RegionView) -> Vec<(&'static str, Grid, &[f32])> {
        if self.regions.is_empty() {
            return vec![("all", self.grid, &self.raw)];
        }
        let mut out = Vec::new();
        if matches!(view, RegionView::Tiles | RegionView::All) {
            out.push(("tiles", self.grid, self.raw.as_slice()));
        }
        if matches!(view, RegionView::Global | RegionView::All) {
            if let Some((g, raw)) = self.global() {
                out.push(("global", g, raw));
            }
        }
        out
    }

    /// The displayed map: min-max normalised to [0, 1]; all zeros when constant.
    pub fn normalized(&self) -> Vec<f32> {
        minmax(&self.raw).0
    }

    /// True when the map is constant, i.e. the token has no visual evidence.
    pub fn is_degenerate(&self) -> bool {
        minmax(&self.raw).1
    }
}

/// Min-max normalise to [0, 1]. Returns the map and whether it was degenerate
/// (max == min, or empty, or non-finite), in which case the map is all zeros.
pub fn minmax(values: &[f32]) -> (Vec<f32>, bool) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &v in values {
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) || hi <= lo {
        return (vec![0.0; values.len()], true);
    }
    let span = hi - lo;
    (
        values
            .iter()
            .map(|&v| ((v as f64 - lo) / span) as f32)
            .collect(),
        false,
    )
}

/// A map that does not fit its grid, or cannot be resampled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("the map grid {height}x{width} is empty; a heatmap needs at least one cell")]
    EmptyGrid { height: usize, width: usize },
    #[error("the map has {got} values but its {height}x{width} grid needs {expected}")]
    MapSize {
        height: usize,
        width: usize,
        expected: usize,
        got: usize,
    },
    #[error("the map holds a non-finite value (NaN or infinity) at index {index}")]
    NonFinite { index: usize },
    #[error("{width}x{height} is too many pixels to resample to")]
    TooLarge { width: usize, height: usize },
}

/// `Σ_t weight_t · raw_t` over token maps, in f64 then rounded to f32: the
/// un-normalised sentence map (empty when there are no maps).
pub fn weighted_sum(maps: &[TokenMap]) -> Vec<f32> {
    weighted_sum_of(maps.iter().map(|m| (m.weight, m.raw.as_slice())))
}

/// [`weighted_sum`] of the global views' maps (of the maps that have one).
pub fn weighted_global_sum(maps: &[TokenMap]) -> Vec<f32> {
    weighted_sum_of(
        maps.iter()
            .filter_map(|m| m.global().map(|(_, raw)| (m.weight, raw))),
    )
}

fn weighted_sum_of<'a>(maps: impl Iterator<Item = (f32, &'a [f32])>) -> Vec<f32> {
    let mut sum: Option<Vec<f64>> = None;
    for (weight, raw) in maps {
        let acc = sum.get_or_insert_with(|| vec![0f64; raw.len()]);
        for (acc, &v) in acc.iter_mut().zip(raw) {
            *acc += weight as f64 * v as f64;
        }
    }
    sum.unwrap_or_default()
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// A non-empty grid holding one finite value per cell.
pub fn check_map(map: &[f32], grid: Grid) -> Result<(), MapError> {
    if grid.is_empty() {
        return Err(MapError::EmptyGrid {
            height: grid.height,
            width: grid.width,
        });
    }
    if map.len() != grid.len() {
        return Err(MapError::MapSize {
            height: grid.height,
            width: grid.width,
            expected: grid.len(),
            got: map.len(),
        });
    }
    match map.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MapError::NonFinite { index }),
        None => Ok(()),
    }
}

/// Resamples a row-major `grid` map to `out_w x out_h` exactly like
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)`
/// (no antialiasing): output pixel centres map back to
/// `src = (dst + 0.5) · in / out − 0.5`, clamped below at 0, and the far
/// neighbour index is clamped at the edge. Computed in f32, like PyTorch.
///
/// Returns row-major `out_h x out_w` values (empty when either is 0). Fails on
/// an empty grid, a map of the wrong length or a non-finite value.
pub fn upsample_bilinear(
    map: &[f32],
    grid: Grid,
    out_w: usize,
    out_h: usize,
) -> Result<Vec<f32>, MapError> {
    check_map(map, grid)?;
    let len = out_w.checked_mul(out_h).ok_or(MapError::TooLarge {
        width: out_w,
        height: out_h,
    })?;
    let xs = axis_taps(grid.width, out_w);
    let ys = axis_taps(grid.height, out_h);
    let mut out = Vec::with_capacity(len);
    for &(y0, y1, wy) in &ys {
        let (row0, row1) = (&map[y0 * grid.width..], &map[y1 * grid.width..]);
        for &(x0, x1, wx) in &xs {
            let top = (1.0 - wx) * row0[x0] + wx * row0[x1];
            let bottom = (1.0 - wx) * row1[x0] + wx * row1[x1];
            out.push((1.0 - wy) * top + wy * bottom);
        }
    }
    Ok(out)
}

/// Per output index along one axis (`input >= 1`): both source indices and the
/// weight of the second, as in PyTorch's `upsample_bilinear2d` kernel.
fn axis_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output.max(1) as f32;
    (0..output)
        .map(|dst| {
            let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_maps_to_unit_interval() {
        let (m, degenerate) = minmax(&[2.0, 4.0, 3.0]);
        assert!(!degenerate);
        assert_eq!(m, vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn constant_map_is_zero_and_degenerate() {
        let (m, degenerate) = minmax(&[0.7, 0.7, 0.7]);
        assert!(degenerate);
        assert_eq!(m, vec![0.0; 3]);
        assert!(minmax(&[]).1);
        assert!(minmax(&[1.0, f32::NAN]).1);
        assert_eq!(minmax(&[1.0, f32::INFINITY]).0, vec![0.0, 0.0]);
    }

    fn assert_all_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-5, "index {i}: got {g}, want {w}");
        }
    }

    const G2: Grid = Grid {
        height: 2,
        width: 2,
    };

    // [[0, 1], [2, 3]] to 4x4: along either axis src = (d + 0.5) * 0.5 - 0.5
    // = [-0.25 -> 0, 0.25, 0.75, 1.25 -> (1, 1)], so the weight of the second
    // row/column is [0, .25, .75, 1] and value = fx * 1 + fy * 2.
    #[rustfmt::skip]
    const UP_0123: [f32; 16] = [
        0.0, 0.25, 0.75, 1.0,
        0.5, 0.75, 1.25, 1.5,
        1.5, 1.75, 2.25, 2.5,
        2.0, 2.25, 2.75, 3.0,
    ];

    #[test]
    fn upsample_two_by_two_to_four_by_four() {
        let up = upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], G2, 4, 4).unwrap();
        assert_all_close(&up, &UP_0123);
        // Same size is the identity; 1x3 -> 1x5 (scale 0.6): src = [0, .4, 1, 1.6, 2].
        let up = upsample_bilinear(&[0.0, 10.0, 20.0], Grid::new(1, 3), 5, 1).unwrap();
        assert_all_close(&up, &[0.0, 4.0, 10.0, 16.0, 20.0]);
        let map: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_all_close(
            &upsample_bilinear(&map, Grid::new(2, 3), 3, 2).unwrap(),
            &map,
        );
    }

    #[test]
    fn upsample_rejects_bad_maps() {
        assert!(matches!(
            upsample_bilinear(&[1.0; 3], G2, 4, 4),
            Err(MapError::MapSize {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            upsample_bilinear(&[], Grid::new(0, 2), 4, 4),
            Err(MapError::EmptyGrid { .. })
        ));
        assert_eq!(
            upsample_bilinear(&[0.0, f32::NAN, 0.0, 0.0], G2, 4, 4),
            Err(MapError::NonFinite { index: 1 })
        );
        assert!(upsample_bilinear(&[1.0; 4], G2, 0, 3).unwrap().is_empty());
        assert!(matches!(
            upsample_bilinear(&[1.0; 4], G2, usize::MAX, 2),
            Err(MapError::TooLarge { .. })
        ));
    }
}
