//! Bilinear resampling with PyTorch's `align_corners=False` semantics.

use dexar_core::Grid;

use crate::{check_map, RenderError};

/// Resamples a row-major `grid` map to `out_w x out_h`, exactly like
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)`
/// (no antialiasing): output pixel centres are mapped back with
/// `src = (dst + 0.5) * in / out - 0.5`, clamped below at 0, and the
/// neighbour index is clamped at the far edge.
///
/// Returns a row-major `out_h x out_w` vector (empty when either is 0).
/// Fails when `map` does not hold one value per grid cell.
pub fn upsample_bilinear(
    map: &[f32],
    grid: Grid,
    out_w: u32,
    out_h: u32,
) -> Result<Vec<f32>, RenderError> {
    check_map(map, grid)?;
    // One implementation, in dexar-core; pictures treat non-finite values as 0.
    let finite: Vec<f32> = map
        .iter()
        .map(|&v| if v.is_finite() { v } else { 0.0 })
        .collect();
    dexar_core::upsample_bilinear(&finite, grid, out_w as usize, out_h as usize).map_err(|_| {
        RenderError::TooLarge {
            width: u64::from(out_w),
            height: u64::from(out_h),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-5, "index {i}: got {g}, want {w}");
        }
    }

    #[test]
    fn two_by_two_to_four_by_four_matches_the_formula() {
        // Source [[0, 1], [2, 3]], scale 2/4 = 0.5. Along either axis the
        // output centres map to src = (d + 0.5) * 0.5 - 0.5:
        //   d=0: -0.25 -> clamped to 0    => taps (0, 1, 0.00)
        //   d=1:  0.25                    => taps (0, 1, 0.25)
        //   d=2:  0.75                    => taps (0, 1, 0.75)
        //   d=3:  1.25 -> i0=1, i1 clamps => taps (1, 1, 0.25) == value at 1
        // so the x-fraction of the second column is [0, .25, .75, 1] and the
        // same for rows; value = fx * 1 + fy * 2.
        let map = [0.0, 1.0, 2.0, 3.0];
        let got = upsample_bilinear(&map, Grid::new(2, 2), 4, 4).unwrap();
        #[rustfmt::skip]
        let want = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        assert_close(&got, &want);
    }

    #[test]
    fn non_square_and_non_integer_scale() {
        // One row [0, 10, 20] to width 5: scale 3/5 = 0.6,
        // src = (d + 0.5) * 0.6 - 0.5 = [-0.2->0, 0.4, 1.0, 1.6, 2.2]
        // values = [0, 4, 10, 16, 20 (index 2 clamped)].
        // Height 1 -> 2: both rows sample row 0.
        let map = [0.0, 10.0, 20.0];
        let got = upsample_bilinear(&map, Grid::new(1, 3), 5, 2).unwrap();
        assert_close(
            &got,
            &[0.0, 4.0, 10.0, 16.0, 20.0, 0.0, 4.0, 10.0, 16.0, 20.0],
        );
    }

    #[test]
    fn same_size_is_identity_and_downsampling_samples() {
        let map: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let grid = Grid::new(3, 4);
        assert_close(&upsample_bilinear(&map, grid, 4, 3).unwrap(), &map);
        // 4 -> 2 columns: src = (d + 0.5) * 2 - 0.5 = [0.5, 2.5].
        let got = upsample_bilinear(&map, Grid::new(1, 4), 2, 1);
        assert!(got.is_err(), "12 values do not fit a 1x4 grid");
        let got = upsample_bilinear(&map[..4], Grid::new(1, 4), 2, 1).unwrap();
        assert_close(&got, &[0.5, 2.5]);
    }

    #[test]
    fn rejects_bad_maps_and_allows_empty_output() {
        assert!(matches!(
            upsample_bilinear(&[1.0; 3], Grid::new(2, 2), 4, 4),
            Err(RenderError::MapSize {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            upsample_bilinear(&[], Grid::new(0, 3), 4, 4),
            Err(RenderError::EmptyGrid { .. })
        ));
        assert!(upsample_bilinear(&[1.0; 4], Grid::new(2, 2), 0, 5)
            .unwrap()
            .is_empty());
    }
}
