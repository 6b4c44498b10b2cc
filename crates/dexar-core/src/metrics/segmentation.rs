//! Segmentation metrics against a ground-truth mask: pointing game, IoU /
//! mIoU at the mean, and pixel-wise average precision (see the module docs of
//! [`crate::metrics`]).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::{check_finite_f32, MetricError};
use crate::maps::{check_map, upsample_bilinear, Grid};

/// A non-empty mask of exactly `width x height` pixels.
fn check_mask(mask: &[bool], width: usize, height: usize) -> Result<(), MetricError> {
    let expected = width.checked_mul(height);
    if expected != Some(mask.len()) {
        return Err(MetricError::MaskSize {
            width,
            height,
            expected: expected.unwrap_or(usize::MAX),
            got: mask.len(),
        });
    }
    if mask.is_empty() {
        return Err(MetricError::Empty { what: "the mask" });
    }
    Ok(())
}

fn check_same_len(what: &'static str, left: usize, right: usize) -> Result<(), MetricError> {
    if left != right {
        return Err(MetricError::LengthMismatch { what, left, right });
    }
    if left == 0 {
        return Err(MetricError::Empty { what });
    }
    Ok(())
}

/// Index of the first maximum (values are finite and non-empty).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

fn is_constant(map: &[f32]) -> bool {
    map.iter().all(|&v| v == map[0])
}

/// The map resampled to the mask, after checking both.
fn upsampled_to_mask(
    map: &[f32],
    grid: Grid,
    mask: &[bool],
    mask_w: usize,
    mask_h: usize,
) -> Result<Vec<f32>, MetricError> {
    check_map(map, grid)?;
    check_mask(mask, mask_w, mask_h)?;
    Ok(upsample_bilinear(map, grid, mask_w, mask_h)?)
}

/// Pointing game for one map: is the argmax pixel of the map, bilinearly
/// upsampled to the mask's `mask_w x mask_h`, inside the mask? The first
/// maximum in row-major order wins ties; a constant map is a miss (it points
/// nowhere), and so is an empty mask.
pub fn pointing_game(
    map: &[f32],
    grid: Grid,
    mask: &[bool],
    mask_w: usize,
    mask_h: usize,
) -> Result<bool, MetricError> {
    let up = upsampled_to_mask(map, grid, mask, mask_w, mask_h)?;
    Ok(!is_constant(map) && mask[argmax(&up)])
}

/// The prediction of the mIoU metrics: `map > mean(map)`, strictly, so a
/// constant map predicts nothing. Fails on an empty or non-finite map.
pub fn threshold_at_mean(map: &[f32]) -> Result<Vec<bool>, MetricError> {
    if map.is_empty() {
        return Err(MetricError::Empty { what: "the map" });
    }
    check_finite_f32("the map", map)?;
    let mean = map.iter().map(|&v| v as f64).sum::<f64>() / map.len() as f64;
    Ok(map.iter().map(|&v| v as f64 > mean).collect())
}

/// `|a ∩ b| / |a ∪ b|` of the pixels where `a == class` and `b == class`;
/// 1 when the union is empty.
fn class_iou(pred: &[bool], truth: &[bool], class: bool) -> f32 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth) {
        let (p, t) = (p == class, t == class);
        inter += usize::from(p && t);
        union += usize::from(p || t);
    }
    if union == 0 {
        1.0
    } else {
        (inter as f64 / union as f64) as f32
    }
}

/// IoU of the foreground: `|pred ∩ mask| / |pred ∪ mask|`, 1 when both are
/// empty. Fails when the lengths differ or there are no pixels.
pub fn iou_foreground(pred: &[bool], mask: &[bool]) -> Result<f32, MetricError> {
    check_same_len("the prediction and the mask", pred.len(), mask.len())?;
    Ok(class_iou(pred, mask, true))
}

/// Two-class mIoU: the mean of the foreground IoU and the background IoU
/// (each 1 when its union is empty). Fails when the lengths differ or there
/// are no pixels.
pub fn miou(pred: &[bool], mask: &[bool]) -> Result<f32, MetricError> {
    check_same_len("the prediction and the mask", pred.len(), mask.len())?;
    Ok((class_iou(pred, mask, true) + class_iou(pred, mask, false)) / 2.0)
}

/// [`miou`] of [`threshold_at_mean`]`(map)`; `map` is already at mask size.
pub fn miou_at_mean(map: &[f32], mask: &[bool]) -> Result<f32, MetricError> {
    check_same_len("the map and the mask", map.len(), mask.len())?;
    miou(&threshold_at_mean(map)?, mask)
}

/// [`iou_foreground`] of [`threshold_at_mean`]`(map)`; `map` is at mask size.
pub fn iou_at_mean(map: &[f32], mask: &[bool]) -> Result<f32, MetricError> {
    check_same_len("the map and the mask", map.len(), mask.len())?;
    iou_foreground(&threshold_at_mean(map)?, mask)
}

/// Pixel-wise average precision of `scores` against `mask`, as scikit-learn's
/// `average_precision_score`: `Σ_n (R_n − R_{n−1}) · P_n` over the distinct
/// thresholds, highest first, equal scores taken together. 0 when the mask has
/// no positive pixel. Fails on a length mismatch, no pixels or a non-finite score.
pub fn average_precision(scores: &[f32], mask: &[bool]) -> Result<f32, MetricError> {
    check_same_len("the scores and the mask", scores.len(), mask.len())?;
    check_finite_f32("the scores", scores)?;
    let positives = mask.iter().filter(|&&m| m).count();
    if positives == 0 {
        return Ok(0.0);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0f64, 0.0f64);
    for (k, &i) in order.iter().enumerate() {
        tp += usize::from(mask[i]);
        seen += 1;
        let threshold_ends = order
            .get(k + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if threshold_ends {
            let recall = tp as f64 / positives as f64;
            ap += (recall - last_recall) * (tp as f64 / seen as f64);
            last_recall = recall;
        }
    }
    Ok(ap as f32)
}

/// One map's three segmentation scores against one mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentationMetrics {
    pub pointing_game: bool,
    pub miou: f32,
    pub ap: f32,
}

/// [`pointing_game`], [`miou_at_mean`] and [`average_precision`] of one grid
/// map against one `mask_w x mask_h` mask, upsampling the map once.
pub fn segmentation_metrics(
    map: &[f32],
    grid: Grid,
    mask: &[bool],
    mask_w: usize,
    mask_h: usize,
) -> Result<SegmentationMetrics, MetricError> {
    let up = upsampled_to_mask(map, grid, mask, mask_w, mask_h)?;
    Ok(SegmentationMetrics {
        pointing_game: !is_constant(map) && mask[argmax(&up)],
        miou: miou_at_mean(&up, mask)?,
        ap: average_precision(&up, mask)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapError;
    use crate::metrics::ItemMetrics;
    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    /// 4x4 mask with the given pixels set.
    fn mask4(on: &[usize]) -> Vec<bool> {
        (0..16).map(|i| on.contains(&i)).collect()
    }

    const G2: Grid = Grid {
        height: 2,
        width: 2,
    };

    #[test]
    fn pointing_game_hits_the_upsampled_argmax() {
        let map = [0.0, 1.0, 2.0, 3.0];
        // The maximum 3.0 is pixel 15 only.
        assert!(pointing_game(&map, G2, &mask4(&[15]), 4, 4).unwrap());
        assert!(!pointing_game(&map, G2, &mask4(&[0, 14]), 4, 4).unwrap());
        // [[3, 0], [0, 3]] upsamples to 3.0 at pixels 0 and 15: the first wins.
        let tie = [3.0, 0.0, 0.0, 3.0];
        assert!(pointing_game(&tie, G2, &mask4(&[0]), 4, 4).unwrap());
        assert!(!pointing_game(&tie, G2, &mask4(&[15]), 4, 4).unwrap());
    }

    #[test]
    fn pointing_game_edge_cases() {
        let all = vec![true; 16];
        // A constant map points nowhere, even at an all-true mask.
        assert!(!pointing_game(&[0.5; 4], G2, &all, 4, 4).unwrap());
        assert!(pointing_game(&[0.0, 1.0, 2.0, 3.0], G2, &all, 4, 4).unwrap());
        // An empty mask is always a miss.
        assert!(!pointing_game(&[0.0, 1.0, 2.0, 3.0], G2, &[false; 16], 4, 4).unwrap());
        assert!(matches!(
            pointing_game(&[0.0; 4], G2, &[true; 15], 4, 4),
            Err(MetricError::MaskSize {
                expected: 16,
                got: 15,
                ..
            })
        ));
        assert!(matches!(
            pointing_game(&[0.0; 4], G2, &[true; 4], usize::MAX, 2),
            Err(MetricError::MaskSize { .. })
        ));
        assert_eq!(
            pointing_game(&[0.0; 4], G2, &[], 0, 4),
            Err(MetricError::Empty { what: "the mask" })
        );
        assert!(matches!(
            pointing_game(&[0.0, 1.0, f32::NAN, 0.0], G2, &all, 4, 4),
            Err(MetricError::Map(MapError::NonFinite { index: 2 }))
        ));
        assert!(matches!(
            pointing_game(&[0.0; 3], G2, &all, 4, 4),
            Err(MetricError::Map(MapError::MapSize { .. }))
        ));
    }

    #[test]
    fn threshold_is_strictly_above_the_mean() {
        assert_eq!(
            threshold_at_mean(&[0.0, 1.0, 2.0, 3.0]).unwrap(),
            [false, false, true, true]
        );
        assert_eq!(threshold_at_mean(&[0.3; 3]).unwrap(), [false; 3]);
        assert!(threshold_at_mean(&[]).is_err());
        assert!(threshold_at_mean(&[0.0, f32::INFINITY]).is_err());
    }

    #[test]
    fn iou_and_miou_by_hand() {
        let (t, f) = (true, false);
        // fg: {0,1} vs {1,2} -> 1/3; bg: {2,3} vs {0,3} -> 1/3.
        let (pred, mask) = ([t, t, f, f], [f, t, t, f]);
        assert_close(iou_foreground(&pred, &mask).unwrap() as f64, 1.0 / 3.0);
        assert_close(miou(&pred, &mask).unwrap() as f64, 1.0 / 3.0);
        // fg: {0,1} vs {0} -> 1/2; bg: {2,3} vs {1,2,3} -> 2/3.
        let mask = [t, f, f, f];
        assert_close(iou_foreground(&pred, &mask).unwrap() as f64, 0.5);
        assert_close(miou(&pred, &mask).unwrap() as f64, 7.0 / 12.0);
        assert!(iou_foreground(&pred, &[t; 3]).is_err());
        assert!(miou(&[], &[]).is_err());
    }

    #[test]
    fn miou_at_mean_edge_cases() {
        let map = [0.0, 1.0, 2.0, 3.0]; // predicts {2, 3}
                                        // All-true mask: fg 2/4; bg: {0,1} vs {} -> 0.
        assert_close(miou_at_mean(&map, &[true; 4]).unwrap() as f64, 0.25);
        assert_close(iou_at_mean(&map, &[true; 4]).unwrap() as f64, 0.5);
        // Empty mask: fg {2,3} vs {} -> 0; bg {0,1} vs all -> 1/2.
        assert_close(miou_at_mean(&map, &[false; 4]).unwrap() as f64, 0.25);
        // A constant map predicts nothing: fg 0, bg 2/4 here.
        let mask = [true, true, false, false];
        assert_close(miou_at_mean(&[0.5; 4], &mask).unwrap() as f64, 0.25);
        // Constant map and empty mask agree on everything (both unions: 1).
        assert_close(miou_at_mean(&[0.5; 4], &[false; 4]).unwrap() as f64, 1.0);
        assert_close(iou_at_mean(&[0.5; 4], &[false; 4]).unwrap() as f64, 1.0);
        assert!(miou_at_mean(&[0.0, f32::NAN, 0.0, 0.0], &mask).is_err());
        assert!(miou_at_mean(&map, &[true; 5]).is_err());
    }

    #[test]
    fn average_precision_by_hand() {
        let (t, f) = (true, false);
        // Thresholds .8 (R .5, P 1), .4 (R .5), .35 (R 1, P 2/3), .1 (R 1):
        // AP = .5 * 1 + .5 * 2/3 = 5/6.
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[f, f, t, t]).unwrap();
        assert_close(ap as f64, 5.0 / 6.0);
        // R steps of 1/3 at precisions 1, 2/3, 3/5: AP = 34/45.
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.6, 0.5], &[t, f, t, f, t]).unwrap();
        assert_close(ap as f64, 34.0 / 45.0);
    }

    #[test]
    fn average_precision_groups_ties() {
        let (t, f) = (true, false);
        // One threshold at 0.5 holding 2 positives of 3: R 1, P 2/3. Taking
        // the tied pixels one by one would give .5 + .5 * 2/3 = 5/6 instead.
        let ap = average_precision(&[0.5, 0.5, 0.5, 0.1], &[t, f, t, f]).unwrap();
        assert_close(ap as f64, 2.0 / 3.0);
        // A constant map scores the fraction of positives.
        let ap = average_precision(&[0.2; 4], &[t, f, f, f]).unwrap();
        assert_close(ap as f64, 0.25);
    }

    #[test]
    fn average_precision_edge_cases() {
        let scores = [0.1, 0.4, 0.35, 0.8];
        assert_eq!(average_precision(&scores, &[false; 4]).unwrap(), 0.0);
        assert_eq!(average_precision(&scores, &[true; 4]).unwrap(), 1.0);
        assert!(average_precision(&scores, &[true; 3]).is_err());
        assert!(average_precision(&[], &[]).is_err());
        assert_eq!(
            average_precision(&[0.1, f32::NAN], &[true, false]),
            Err(MetricError::NonFinite {
                what: "the scores",
                index: 1
            })
        );
    }

    #[test]
    fn segmentation_metrics_by_hand() {
        // Mask = bottom half (pixels 8..16) of UP_0123, whose mean is 1.5.
        let mask: Vec<bool> = (0..16).map(|i| i >= 8).collect();
        let s = segmentation_metrics(&[0.0, 1.0, 2.0, 3.0], G2, &mask, 4, 4).unwrap();
        assert!(s.pointing_game);
        // Prediction > 1.5 is pixels 9..16: fg 7/8, bg {0..9} vs {0..8} = 8/9.
        assert_close(s.miou as f64, (7.0 / 8.0 + 8.0 / 9.0) / 2.0);
        // 7 positives above every negative (P 1, R 7/8), then the threshold
        // 1.5 holds pixel 8 (positive) and pixel 7 (negative): R 1, P 8/9.
        assert_close(s.ap as f64, 7.0 / 8.0 + 1.0 / 8.0 * 8.0 / 9.0);
        let item = ItemMetrics::from(s);
        assert_eq!(item.pointing_game, Some(true));
        assert_eq!(item.nppl_auc_random, None);
    }

    #[test]
    fn segmentation_metrics_ignore_affine_rescaling() {
        let map = [0.3, 2.0, 0.9, 1.7, 0.1, 0.4, 1.1, 2.9, 0.0];
        let scaled: Vec<f32> = map.iter().map(|v| 4.0 * v + 7.0).collect();
        // The maximum 2.9 (row 2, column 1) lands on pixel (x 3, y 4).
        let mask: Vec<bool> = (0..35)
            .map(|i| (2..5).contains(&(i % 7)) && i / 7 >= 3)
            .collect();
        let grid = Grid::new(3, 3);
        let a = segmentation_metrics(&map, grid, &mask, 7, 5).unwrap();
        let b = segmentation_metrics(&scaled, grid, &mask, 7, 5).unwrap();
        assert!(a.pointing_game && b.pointing_game);
        assert_close(a.miou as f64, b.miou as f64);
        assert_close(a.ap as f64, b.ap as f64);
    }
}
