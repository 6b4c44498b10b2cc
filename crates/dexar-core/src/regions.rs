//! Image regions: the blocks of image tokens one image turns into. Most
//! models see an image as one block (one region covering the whole image);
//! SmolVLM / Idefics3 (and LLaVA-NeXT-style models) split it into tiles plus
//! a downscaled global view, each its own block of tokens with its own grid.
//!
//! A token map over several regions is kept per region and shown two ways:
//! the tiles' maps placed at their boxes on the image (the composed map) and
//! the global view's map beside it.

use crate::maps::Grid;
use serde::{Deserialize, Serialize};

/// What part of the image a region sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    /// The whole image (possibly downscaled): the only region of single-region
    /// models, SmolVLM's `<global-img>` block.
    Global,
    /// One tile of a split image, covering its box.
    Tile,
}

impl RegionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Tile => "tile",
        }
    }
}

/// One block of image tokens in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageRegion {
    pub kind: RegionKind,
    /// Half-open `[start, end)` span of the block's image tokens among the positions.
    pub span: (usize, usize),
    /// The block's grid; `grid.len()` is `end - start`, or one less when the
    /// span starts with a CLS token (LLaVA's `full` feature strategy).
    pub grid: Grid,
    /// The part of the image the block covers, `[x0, y0, x1, y1]` normalised
    /// to [0, 1] (`[0, 0, 1, 1]` for a global view).
    pub bbox: [f32; 4],
}

/// The box of the whole image.
pub const WHOLE_IMAGE: [f32; 4] = [0.0, 0.0, 1.0, 1.0];

impl ImageRegion {
    /// The one region of a model that sees the image as a single block.
    pub fn whole(span: (usize, usize), grid: Grid) -> Self {
        Self {
            kind: RegionKind::Global,
            span,
            grid,
            bbox: WHOLE_IMAGE,
        }
    }

    /// The positions of its grid cells: the span without a leading CLS token.
    pub fn cell_positions(&self) -> std::ops::Range<usize> {
        let end = self.span.1;
        end.saturating_sub(self.grid.len())..end
    }

    /// A well-formed box: finite, inside [0, 1], non-empty.
    pub fn bbox_ok(&self) -> bool {
        let [x0, y0, x1, y1] = self.bbox;
        self.bbox
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
            && x0 < x1
            && y0 < y1
    }
}

/// Which maps of a multi-region image to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RegionView {
    /// The global view's map.
    Global,
    /// The tiles' maps composed at their boxes.
    Tiles,
    /// Both, the composed map first and the global view beside it.
    #[default]
    All,
}

impl RegionView {
    pub const NAMES: [&'static str; 3] = ["global", "tiles", "all"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Tiles => "tiles",
            Self::All => "all",
        }
    }

    /// The next view in the order all, tiles, global (the TUI's key).
    pub fn next(self) -> Self {
        match self {
            Self::All => Self::Tiles,
            Self::Tiles => Self::Global,
            Self::Global => Self::All,
        }
    }
}

impl std::str::FromStr for RegionView {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "global" => Ok(Self::Global),
            "tiles" => Ok(Self::Tiles),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown region view `{other}`; use {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// One region's part of a token map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionMap {
    pub kind: RegionKind,
    pub grid: Grid,
    pub bbox: [f32; 4],
    /// Row-major over `grid`, un-normalised.
    pub raw: Vec<f32>,
}

/// The grid the tiles compose to: fine enough that every tile keeps its own
/// resolution (`grid.width / box width` cells across, rounded), at least 1x1.
pub fn composed_grid<'a>(tiles: impl IntoIterator<Item = (&'a Grid, &'a [f32; 4])>) -> Grid {
    let (mut h, mut w) = (1usize, 1usize);
    for (grid, b) in tiles {
        w = w.max((grid.width as f32 / (b[2] - b[0])).round() as usize);
        h = h.max((grid.height as f32 / (b[3] - b[1])).round() as usize);
    }
    Grid::new(h, w)
}

/// The grid of a token map over `regions` (see `TokenMap`): the one
/// region's, or the tiles' composed grid (the first region's when there are
/// no tiles).
pub fn map_grid(regions: &[ImageRegion]) -> Grid {
    let tiles: Vec<&ImageRegion> = regions
        .iter()
        .filter(|r| r.kind == RegionKind::Tile)
        .collect();
    match (regions, tiles.is_empty()) {
        ([only], _) => only.grid,
        (_, false) => composed_grid(tiles.iter().map(|r| (&r.grid, &r.bbox))),
        ([first, ..], true) => first.grid,
        ([], true) => Grid::new(0, 0),
    }
}

/// The tiles' maps placed at their boxes on a grid of `composed_grid` size:
/// every composed cell takes the value of the tile cell under its centre
/// (the first tile whose box holds the centre); cells no tile covers are 0.
/// Tiles that partition the image on a common cell size (SmolVLM's) land
/// cell for cell.
pub fn compose_tiles(tiles: &[&RegionMap]) -> (Grid, Vec<f32>) {
    let grid = composed_grid(tiles.iter().map(|t| (&t.grid, &t.bbox)));
    let mut out = vec![0f32; grid.len()];
    for cy in 0..grid.height {
        let v = (cy as f32 + 0.5) / grid.height as f32;
        for cx in 0..grid.width {
            let u = (cx as f32 + 0.5) / grid.width as f32;
            let hit = tiles.iter().find(|t| {
                let [x0, y0, x1, y1] = t.bbox;
                u >= x0 && u < x1 && v >= y0 && v < y1
            });
            if let Some(t) = hit {
                let [x0, y0, x1, y1] = t.bbox;
                let col = (((u - x0) / (x1 - x0)) * t.grid.width as f32) as usize;
                let row = (((v - y0) / (y1 - y0)) * t.grid.height as f32) as usize;
                let (row, col) = (row.min(t.grid.height - 1), col.min(t.grid.width - 1));
                out[cy * grid.width + cx] = t.raw[row * t.grid.width + col];
            }
        }
    }
    (grid, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(bbox: [f32; 4], grid: Grid, raw: Vec<f32>) -> RegionMap {
        RegionMap {
            kind: RegionKind::Tile,
            grid,
            bbox,
            raw,
        }
    }

    #[test]
    fn two_by_two_tiles_land_cell_for_cell() {
        let g = Grid::new(2, 2);
        let tiles = [
            tile([0.0, 0.0, 0.5, 0.5], g, vec![1.0, 2.0, 3.0, 4.0]),
            tile([0.5, 0.0, 1.0, 0.5], g, vec![5.0, 6.0, 7.0, 8.0]),
            tile([0.0, 0.5, 0.5, 1.0], g, vec![9.0, 10.0, 11.0, 12.0]),
            tile([0.5, 0.5, 1.0, 1.0], g, vec![13.0, 14.0, 15.0, 16.0]),
        ];
        let refs: Vec<&RegionMap> = tiles.iter().collect();
        let (grid, map) = compose_tiles(&refs);
        assert_eq!(grid, Grid::new(4, 4));
        #[rustfmt::skip]
        let want = [
            1.0, 2.0, 5.0, 6.0,
            3.0, 4.0, 7.0, 8.0,
            9.0, 10.0, 13.0, 14.0,
            11.0, 12.0, 15.0, 16.0,
        ];
        assert_eq!(map, want);
    }

    #[test]
    fn uneven_tiles_and_uncovered_cells() {
        // One 1x2 tile over the left 2/3 of a 1-row image: 3 columns composed,
        // the last one uncovered.
        let t = tile([0.0, 0.0, 2.0 / 3.0, 1.0], Grid::new(1, 2), vec![4.0, 7.0]);
        let (grid, map) = compose_tiles(&[&t]);
        assert_eq!(grid, Grid::new(1, 3));
        assert_eq!(map, vec![4.0, 7.0, 0.0]);
    }

    #[test]
    fn views_parse_and_cycle() {
        for name in RegionView::NAMES {
            let v: RegionView = name.parse().unwrap();
            assert_eq!(v.as_str(), name);
        }
        assert!("tile"
            .parse::<RegionView>()
            .unwrap_err()
            .contains("global, tiles, all"));
        assert_eq!(RegionView::All.next().next().next(), RegionView::All);
    }

    #[test]
    fn boxes_are_checked() {
        let mut r = ImageRegion::whole((0, 4), Grid::new(2, 2));
        assert!(r.bbox_ok());
        assert_eq!(r.cell_positions(), 0..4);
        r.bbox = [0.5, 0.0, 0.5, 1.0];
        assert!(!r.bbox_ok());
        r.bbox = [0.0, 0.0, f32::NAN, 1.0];
        assert!(!r.bbox_ok());
    }
}

/// DEX-AR over a trace of several regions, against values worked out by hand.
#[cfg(test)]
mod strategy_tests {
    use super::*;
    use crate::strategy::{DexarStrategy, HeadScores, Strategy};
    use crate::trace::{PositionKind, StepTrace, TraceError};

    /// Positions: 0 prompt, 1-2 tile A (1x2, left half), 3 text, 4-5 tile B
    /// (1x2, right half), 6 text, 7 global view (1x1), 8 the query.
    fn three_regions() -> StepTrace {
        use PositionKind::{Generated as G, Image as I, Prompt as P};
        #[rustfmt::skip]
        let grads = vec![
            0.1, 0.5, -1.0, 0.2, 0.3, 0.9, 0.05, 0.4, 0.2,
            0.6, 0.1, 0.2, 0.0, 0.0, 0.1, 0.0, 0.3, 0.0,
        ];
        let tile = |span, x0, x1| ImageRegion {
            kind: RegionKind::Tile,
            span,
            grid: Grid::new(1, 2),
            bbox: [x0, 0.0, x1, 1.0],
        };
        StepTrace {
            step: 0,
            token_id: 7,
            token_text: "cat".into(),
            query_position: 8,
            layers: vec![3],
            num_heads: 2,
            num_positions: 9,
            attn: vec![1.0 / 9.0; grads.len()],
            grads,
            kinds: vec![P, I, I, P, I, I, P, I, G],
            regions: vec![
                tile((1, 3), 0.0, 0.5),
                tile((4, 6), 0.5, 1.0),
                ImageRegion::whole((7, 8), Grid::new(1, 1)),
            ],
        }
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn visual_score_is_the_max_over_all_regions() {
        let t = three_regions();
        t.validate().unwrap();
        let s = HeadScores::compute(&t, 1);
        // head 0: V = {.5, 0, .3, .9, .4} -> .9 (tile B); text {.1, .2, .05, .2} -> .2
        // head 1: V -> .3 (the global view); text -> .6
        close(&s.visual, &[0.9, 0.3]);
        close(&s.text, &[0.2, 0.6]);
        close(&s.weights, &[0.7, 0.0]);
        assert!((s.token_weight() - 0.3).abs() < 1e-6);
    }

    #[test]
    fn token_map_is_kept_per_region_and_composed() {
        let t = three_regions();
        let m = DexarStrategy {
            filtered: true,
            topk: 1,
        }
        .token_map(&t)
        .unwrap();
        // 0.7 * ReLU(g) over cells 1, 2 | 4, 5 | 7
        assert_eq!(m.regions.len(), 3);
        close(&m.regions[0].raw, &[0.35, 0.0]);
        close(&m.regions[1].raw, &[0.21, 0.63]);
        close(&m.regions[2].raw, &[0.28]);
        // the tiles side by side make the main map; the global view is beside it
        assert_eq!(m.grid, Grid::new(1, 4));
        close(&m.raw, &[0.35, 0.0, 0.21, 0.63]);
        let (g, global) = m.global().unwrap();
        assert_eq!(g, Grid::new(1, 1));
        close(global, &[0.28]);
        let views: Vec<&str> = m.view(RegionView::All).iter().map(|v| v.0).collect();
        assert_eq!(views, ["tiles", "global"]);
        assert_eq!(m.view(RegionView::Global)[0].0, "global");
        assert_eq!(m.view(RegionView::Tiles).len(), 1);
    }

    #[test]
    fn bad_region_lists_are_refused() {
        let mut t = three_regions();
        t.regions.swap(0, 1);
        assert!(matches!(
            t.validate(),
            Err(TraceError::RegionOrder { index: 1, .. })
        ));
        let mut t = three_regions();
        t.regions[2].bbox = [0.0, 0.0, 1.5, 1.0];
        assert!(matches!(
            t.validate(),
            Err(TraceError::RegionBox { index: 2, .. })
        ));
        let mut t = three_regions();
        t.regions.clear();
        assert_eq!(t.validate(), Err(TraceError::NoRegions));
    }
}
