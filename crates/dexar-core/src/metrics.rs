//! Attribution quality metrics (DEXAR.md, "Evaluation"), free of any framework.
//!
//! Everything works on plain row-major buffers: heatmaps are `&[f32]` over a
//! [`Grid`] (or already resampled to image size), masks are `&[bool]` with an
//! explicit width and height (`true` = object). `dexar eval` composes these;
//! nothing here runs a model. Bad sizes and non-finite values are reported as
//! [`MetricError`], never as panics.
//!
//! # Segmentation, against a ground-truth mask
//!
//! The patch map is first resampled to the mask's size with
//! [`upsample_bilinear`] (PyTorch `align_corners=False`), as the papers do with
//! their heatmaps. All three metrics are invariant under `x -> a·x + b` with
//! `a > 0`, so a raw map and its min-max normalised display score the same.
//!
//! - **Pointing game** ([`pointing_game`]): a hit when the argmax pixel of the
//!   upsampled map (the first in row-major order on ties) lies in the mask. A
//!   constant map points nowhere and is a miss; an empty mask is always a miss.
//! - **IoU / mIoU at the mean** ([`threshold_at_mean`], [`iou_foreground`],
//!   [`miou`], [`miou_at_mean`]): the prediction is `map > mean(map)` (strict).
//!   IoU of a class is `|pred ∩ truth| / |pred ∪ truth|`, defined as 1 when the
//!   union is empty (both agree the class is absent). mIoU is the two-class
//!   segmentation mean: `(IoU(foreground) + IoU(background)) / 2`, per image.
//!   (The Chefer et al. ImageNet-segmentation benchmark sums intersections and
//!   unions over the whole data set before dividing; [`MetricSums`] averages
//!   per-image values instead.)
//! - **Average precision** ([`average_precision`]): pixel-wise, scikit-learn's
//!   `average_precision_score`: `AP = Σ_n (R_n − R_{n−1}) · P_n` over the
//!   distinct score thresholds in decreasing order (equal scores form one
//!   threshold), with `R_0 = 0`. No positive pixel gives 0 (as scikit-learn
//!   ≥ 1.1); a constant map gives the fraction of positive pixels.
//!
//! # Perturbation, with normalised perplexity
//!
//! Grid cells are ranked by the map ([`perturbation_order`]); for each removal
//! fraction `r` in [`fractions`] (0.0, 0.1, …, 0.9) the first
//! [`cells_to_remove`]`(n, r) = floor(r·n)` cells of the order
//! ([`removed_cells`]) are replaced by the image mean and the original answer is
//! scored by teacher forcing. [`perplexity`] is `exp(−mean token log-prob)`;
//! [`nppl_curve`] is `nPPL(r) = PPL(r) / PPL(original)`; [`curve_area`] is its
//! trapezoidal area divided by the x-range, so a flat curve at 1 has area 1.
//! Most-relevant-first: higher is better; least-relevant-first: lower is
//! better; random order is the reference.
//!
//! # Aggregation
//!
//! [`ItemMetrics`] holds one item's results (each optional); [`MetricSums`]
//! adds them up and [`MetricSums::means`] gives the serialisable
//! [`MetricMeans`] that `dexar eval` writes per strategy.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::maps::Grid;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("the map grid {height}x{width} is empty; a heatmap needs at least one cell")]
    EmptyGrid { height: usize, width: usize },
    #[error("the map has {got} values but its {height}x{width} grid needs {expected}")]
    MapSize {
        height: usize,
        width: usize,
        expected: usize,
        got: usize,
    },
    #[error("the mask has {got} values but {width}x{height} pixels need {expected}; check that the mask matches its image")]
    MaskSize {
        width: usize,
        height: usize,
        expected: usize,
        got: usize,
    },
    #[error("{width}x{height} is too many pixels to resample to")]
    TooLarge { width: usize, height: usize },
    #[error("{what} have {left} and {right} values; they must be the same length")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} holds a non-finite value (NaN or infinity) at index {index}")]
    NonFinite { what: &'static str, index: usize },
    #[error("{what} must be a finite positive perplexity, got {value}")]
    InvalidPerplexity { what: &'static str, value: f64 },
    #[error("curve x values must increase strictly, but x[{index}] does not")]
    NotIncreasing { index: usize },
}

fn check_finite_f32(what: &'static str, values: &[f32]) -> Result<(), MetricError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricError::NonFinite { what, index }),
        None => Ok(()),
    }
}

fn check_finite_f64(what: &'static str, values: &[f64]) -> Result<(), MetricError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricError::NonFinite { what, index }),
        None => Ok(()),
    }
}

/// A non-empty grid holding one finite value per cell.
fn check_map(map: &[f32], grid: Grid) -> Result<(), MetricError> {
    if grid.is_empty() {
        return Err(MetricError::EmptyGrid {
            height: grid.height,
            width: grid.width,
        });
    }
    if map.len() != grid.len() {
        return Err(MetricError::MapSize {
            height: grid.height,
            width: grid.width,
            expected: grid.len(),
            got: map.len(),
        });
    }
    check_finite_f32("the map", map)
}

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
) -> Result<Vec<f32>, MetricError> {
    check_map(map, grid)?;
    let len = out_w.checked_mul(out_h).ok_or(MetricError::TooLarge {
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
    upsample_bilinear(map, grid, mask_w, mask_h)
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

/// In which order grid cells are removed by the perturbation test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Order {
    /// Highest map value first (ties: lower cell index first).
    MostFirst,
    /// Lowest map value first (ties: lower cell index first).
    LeastFirst,
    /// A seeded shuffle that ignores the map values.
    Random(u64),
}

/// The cell indices of `map` in removal order. Ties keep row-major order, so a
/// constant map gives `0, 1, …` for both ranked orders. `Random(seed)` is a
/// Fisher–Yates shuffle driven by SplitMix64 written here, so a seed gives the
/// same order forever. Fails on a non-finite value (for every order, so that
/// all three see the same maps).
pub fn perturbation_order(map: &[f32], order: Order) -> Result<Vec<usize>, MetricError> {
    check_finite_f32("the map", map)?;
    let mut cells: Vec<usize> = (0..map.len()).collect();
    let by_value = |a: &usize, b: &usize| map[*a].partial_cmp(&map[*b]).unwrap_or(Ordering::Equal);
    match order {
        // `sort_by` is stable: equal values stay in index order.
        Order::MostFirst => cells.sort_by(|a, b| by_value(b, a)),
        Order::LeastFirst => cells.sort_by(by_value),
        Order::Random(seed) => {
            let mut rng = SplitMix64(seed);
            for i in (1..cells.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                cells.swap(i, j);
            }
        }
    }
    Ok(cells)
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, good enough for shuffling,
/// and fixed here so that `Order::Random(seed)` never changes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound >= 1`), unbiased (Lemire's method).
    fn below(&mut self, bound: u64) -> u64 {
        let reject_under = bound.wrapping_neg() % bound;
        loop {
            let m = self.next_u64() as u128 * bound as u128;
            if m as u64 >= reject_under {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The removal fractions r = 0.0, 0.1, …, 0.9.
pub fn fractions() -> [f32; 10] {
    std::array::from_fn(|i| i as f32 / 10.0)
}

/// How many of `n_cells` cells fraction `r` removes: `floor(r · n_cells)`,
/// with `r` clamped to [0, 1] (NaN counts as 0). The product is taken with a
/// tolerance of one f32 epsilon relative to `n_cells`, because 0.7f32 is
/// 0.69999999: on 10 cells r = 0.7 removes 7 cells, not 6.
pub fn cells_to_remove(n_cells: usize, r: f32) -> usize {
    if r.is_nan() || r <= 0.0 {
        return 0;
    }
    let n = n_cells as f64;
    let r = f64::from(r.min(1.0));
    ((r * n + n * f64::from(f32::EPSILON)).floor() as usize).min(n_cells)
}

/// The first [`cells_to_remove`]`(order.len(), r)` cells of a removal order.
pub fn removed_cells(order: &[usize], r: f32) -> &[usize] {
    &order[..cells_to_remove(order.len(), r)]
}

/// Perplexity of a teacher-forced answer: `exp(−mean(token_logprobs))`
/// (natural log-probabilities). Fails on no tokens or a non-finite log-prob.
pub fn perplexity(token_logprobs: &[f64]) -> Result<f64, MetricError> {
    if token_logprobs.is_empty() {
        return Err(MetricError::Empty {
            what: "the token log-probabilities",
        });
    }
    check_finite_f64("the token log-probabilities", token_logprobs)?;
    let mean = token_logprobs.iter().sum::<f64>() / token_logprobs.len() as f64;
    Ok((-mean).exp())
}

fn check_perplexity(what: &'static str, value: f64) -> Result<(), MetricError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(MetricError::InvalidPerplexity { what, value })
    }
}

/// `nPPL(r) = PPL(r) / PPL(original)` for each perturbed perplexity, in the
/// caller's order (normally one per [`fractions`], r = 0 included, where
/// nothing is removed and nPPL is 1). Every perplexity must be finite and > 0.
pub fn nppl_curve(ppl_original: f64, ppl_perturbed: &[f64]) -> Result<Vec<f64>, MetricError> {
    check_perplexity("the original perplexity", ppl_original)?;
    for &p in ppl_perturbed {
        check_perplexity("a perturbed perplexity", p)?;
    }
    Ok(ppl_perturbed.iter().map(|p| p / ppl_original).collect())
}

/// Trapezoidal area under `values` over `xs`, divided by `xs`' range
/// (`x_last − x_first`), i.e. the curve's mean height: a flat curve at `c`
/// has area `c` whatever the x-range. `xs` must increase strictly; at least
/// two finite points are needed.
pub fn curve_area(values: &[f64], xs: &[f64]) -> Result<f64, MetricError> {
    if values.len() != xs.len() {
        return Err(MetricError::LengthMismatch {
            what: "the curve values and xs",
            left: values.len(),
            right: xs.len(),
        });
    }
    if xs.len() < 2 {
        return Err(MetricError::Empty {
            what: "the curve (it needs at least two points)",
        });
    }
    check_finite_f64("the curve values", values)?;
    check_finite_f64("the curve xs", xs)?;
    if let Some(i) = (1..xs.len()).find(|&i| xs[i] <= xs[i - 1]) {
        return Err(MetricError::NotIncreasing { index: i });
    }
    let area: f64 = (1..xs.len())
        .map(|i| (xs[i] - xs[i - 1]) * (values[i] + values[i - 1]) / 2.0)
        .sum();
    Ok(area / (xs[xs.len() - 1] - xs[0]))
}

/// The aggregated metrics, by their JSON key in `dexar eval`'s output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    PointingGame,
    Miou,
    Ap,
    NpplAucMostFirst,
    NpplAucLeastFirst,
    NpplAucRandom,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::PointingGame,
        Metric::Miou,
        Metric::Ap,
        Metric::NpplAucMostFirst,
        Metric::NpplAucLeastFirst,
        Metric::NpplAucRandom,
    ];

    /// The key used in the eval JSON (`"pointing_game"`, `"miou"`, …).
    pub fn key(self) -> &'static str {
        match self {
            Metric::PointingGame => "pointing_game",
            Metric::Miou => "miou",
            Metric::Ap => "ap",
            Metric::NpplAucMostFirst => "nppl_auc_most_first",
            Metric::NpplAucLeastFirst => "nppl_auc_least_first",
            Metric::NpplAucRandom => "nppl_auc_random",
        }
    }
}

/// One item's results; `None` where a metric does not apply (no mask, say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemMetrics {
    pub pointing_game: Option<bool>,
    pub miou: Option<f32>,
    pub ap: Option<f32>,
    pub nppl_auc_most_first: Option<f64>,
    pub nppl_auc_least_first: Option<f64>,
    pub nppl_auc_random: Option<f64>,
}

impl ItemMetrics {
    /// The value of one metric (a pointing-game hit is 1, a miss 0).
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::PointingGame => self.pointing_game.map(|hit| f64::from(u8::from(hit))),
            Metric::Miou => self.miou.map(f64::from),
            Metric::Ap => self.ap.map(f64::from),
            Metric::NpplAucMostFirst => self.nppl_auc_most_first,
            Metric::NpplAucLeastFirst => self.nppl_auc_least_first,
            Metric::NpplAucRandom => self.nppl_auc_random,
        }
    }
}

impl From<SegmentationMetrics> for ItemMetrics {
    fn from(s: SegmentationMetrics) -> Self {
        ItemMetrics {
            pointing_game: Some(s.pointing_game),
            miou: Some(s.miou),
            ap: Some(s.ap),
            ..ItemMetrics::default()
        }
    }
}

/// A running sum and how many values went into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    pub sum: f64,
    pub count: usize,
}

impl Mean {
    /// `sum / count`, `None` when nothing was added.
    pub fn value(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Sums of [`ItemMetrics`] over a data set, one [`Mean`] per metric (metrics
/// may have different counts: only items with masks have segmentation scores).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSums {
    /// Items added, whatever metrics they had.
    count: usize,
    pointing_game: Mean,
    miou: Mean,
    ap: Mean,
    nppl_auc_most_first: Mean,
    nppl_auc_least_first: Mean,
    nppl_auc_random: Mean,
}

impl MetricSums {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot_mut(&mut self, metric: Metric) -> &mut Mean {
        match metric {
            Metric::PointingGame => &mut self.pointing_game,
            Metric::Miou => &mut self.miou,
            Metric::Ap => &mut self.ap,
            Metric::NpplAucMostFirst => &mut self.nppl_auc_most_first,
            Metric::NpplAucLeastFirst => &mut self.nppl_auc_least_first,
            Metric::NpplAucRandom => &mut self.nppl_auc_random,
        }
    }

    /// The running sum of one metric.
    pub fn slot(&self, metric: Metric) -> Mean {
        match metric {
            Metric::PointingGame => self.pointing_game,
            Metric::Miou => self.miou,
            Metric::Ap => self.ap,
            Metric::NpplAucMostFirst => self.nppl_auc_most_first,
            Metric::NpplAucLeastFirst => self.nppl_auc_least_first,
            Metric::NpplAucRandom => self.nppl_auc_random,
        }
    }

    /// Adds one item. A non-finite value rejects the whole item, leaving the
    /// sums untouched, so that one bad item cannot poison a mean.
    pub fn add(&mut self, item: &ItemMetrics) -> Result<(), MetricError> {
        if let Some(metric) = Metric::ALL
            .into_iter()
            .find(|&m| item.get(m).is_some_and(|v| !v.is_finite()))
        {
            return Err(MetricError::NonFinite {
                what: metric.key(),
                index: self.count,
            });
        }
        for metric in Metric::ALL {
            if let Some(v) = item.get(metric) {
                let slot = self.slot_mut(metric);
                slot.sum += v;
                slot.count += 1;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Adds the sums of another accumulator (e.g. from another worker).
    pub fn merge(&mut self, other: &MetricSums) {
        self.count += other.count;
        for metric in Metric::ALL {
            let theirs = other.slot(metric);
            let slot = self.slot_mut(metric);
            slot.sum += theirs.sum;
            slot.count += theirs.count;
        }
    }

    /// Items added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean of one metric over the items that had it; `None` if none did.
    pub fn mean(&self, metric: Metric) -> Option<f64> {
        self.slot(metric).value()
    }

    /// All means, ready to serialise as one strategy's entry of the eval JSON.
    pub fn means(&self) -> MetricMeans {
        MetricMeans {
            pointing_game: self.mean(Metric::PointingGame),
            miou: self.mean(Metric::Miou),
            ap: self.mean(Metric::Ap),
            nppl_auc_most_first: self.mean(Metric::NpplAucMostFirst),
            nppl_auc_least_first: self.mean(Metric::NpplAucLeastFirst),
            nppl_auc_random: self.mean(Metric::NpplAucRandom),
            count: self.count,
        }
    }
}

/// Means per metric (`null` in JSON where no item had the metric) and the
/// item count: `{"pointing_game": .., "miou": .., "ap": ..,
/// "nppl_auc_most_first": .., "nppl_auc_least_first": .., "nppl_auc_random": ..,
/// "count": ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricMeans {
    pub pointing_game: Option<f64>,
    pub miou: Option<f64>,
    pub ap: Option<f64>,
    pub nppl_auc_most_first: Option<f64>,
    pub nppl_auc_least_first: Option<f64>,
    pub nppl_auc_random: Option<f64>,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    fn assert_all_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-5, "index {i}: got {g}, want {w}");
        }
    }

    /// 4x4 mask with the given pixels set.
    fn mask4(on: &[usize]) -> Vec<bool> {
        (0..16).map(|i| on.contains(&i)).collect()
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
            Err(MetricError::MapSize {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            upsample_bilinear(&[], Grid::new(0, 2), 4, 4),
            Err(MetricError::EmptyGrid { .. })
        ));
        assert_eq!(
            upsample_bilinear(&[0.0, f32::NAN, 0.0, 0.0], G2, 4, 4),
            Err(MetricError::NonFinite {
                what: "the map",
                index: 1
            })
        );
        assert!(upsample_bilinear(&[1.0; 4], G2, 0, 3).unwrap().is_empty());
        assert!(matches!(
            upsample_bilinear(&[1.0; 4], G2, usize::MAX, 2),
            Err(MetricError::TooLarge { .. })
        ));
    }

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
            Err(MetricError::NonFinite { index: 2, .. })
        ));
        assert!(matches!(
            pointing_game(&[0.0; 3], G2, &all, 4, 4),
            Err(MetricError::MapSize { .. })
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

    #[test]
    fn perturbation_orders_are_stable() {
        let map = [0.2, 0.9, 0.2, 0.5];
        assert_eq!(
            perturbation_order(&map, Order::MostFirst).unwrap(),
            [1, 3, 0, 2]
        );
        assert_eq!(
            perturbation_order(&map, Order::LeastFirst).unwrap(),
            [0, 2, 3, 1]
        );
        let constant = [0.4; 5];
        for order in [Order::MostFirst, Order::LeastFirst] {
            assert_eq!(
                perturbation_order(&constant, order).unwrap(),
                [0, 1, 2, 3, 4]
            );
        }
        assert!(perturbation_order(&[], Order::MostFirst)
            .unwrap()
            .is_empty());
        assert_eq!(
            perturbation_order(&[0.0, f32::NAN], Order::Random(1)),
            Err(MetricError::NonFinite {
                what: "the map",
                index: 1
            })
        );
    }

    #[test]
    fn random_order_is_pinned_forever() {
        // Reference SplitMix64 outputs for seed 0.
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // Fisher-Yates from the top, j = below(i + 1); checked with a Python
        // re-implementation. These must never change.
        let order = perturbation_order(&[0.0; 10], Order::Random(42)).unwrap();
        assert_eq!(order, [8, 3, 6, 5, 4, 0, 9, 2, 1, 7]);
        let other: Vec<f32> = (0..10).map(|v| v as f32).collect();
        assert_eq!(
            perturbation_order(&other, Order::Random(42)).unwrap(),
            order
        );
        assert_eq!(
            perturbation_order(&other, Order::Random(7)).unwrap(),
            [9, 5, 8, 6, 1, 2, 4, 7, 0, 3]
        );
        let mut big = perturbation_order(&[0.0; 576], Order::Random(3)).unwrap();
        big.sort_unstable();
        assert!(big.iter().copied().eq(0..576));
    }

    #[test]
    fn fractions_and_cell_counts() {
        let rs = fractions();
        assert_eq!(rs, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
        for (k, &r) in rs.iter().enumerate() {
            // 0.7f32 and 0.9f32 lie just below 0.7 and 0.9.
            assert_eq!(cells_to_remove(10, r), k);
            assert_eq!(cells_to_remove(100, r), 10 * k);
        }
        assert_eq!(cells_to_remove(576, 0.1), 57); // floor(57.6)
        assert_eq!(cells_to_remove(576, 0.5), 288);
        assert_eq!(cells_to_remove(576, 1.0), 576);
        assert_eq!(cells_to_remove(576, 1.5), 576);
        assert_eq!(cells_to_remove(576, -0.1), 0);
        assert_eq!(cells_to_remove(576, f32::NAN), 0);
        assert_eq!(cells_to_remove(0, 0.5), 0);
        assert_eq!(removed_cells(&[3, 1, 2, 0], 0.5), [3, 1]);
        assert!(removed_cells(&[], 0.9).is_empty());
    }

    #[test]
    fn perplexity_and_nppl() {
        let half = 0.5f64.ln();
        assert_close(perplexity(&[half, half]).unwrap(), 2.0);
        // mean(ln 1/2, ln 1/8) = -2 ln 2 -> 4.
        assert_close(perplexity(&[half, 0.125f64.ln()]).unwrap(), 4.0);
        assert!(perplexity(&[]).is_err());
        assert!(perplexity(&[half, f64::NEG_INFINITY]).is_err());
        assert!(perplexity(&[f64::NAN]).is_err());

        assert_eq!(nppl_curve(2.0, &[2.0, 3.0, 4.0]).unwrap(), [1.0, 1.5, 2.0]);
        assert!(nppl_curve(2.0, &[]).unwrap().is_empty());
        assert!(matches!(
            nppl_curve(0.0, &[1.0]),
            Err(MetricError::InvalidPerplexity { .. })
        ));
        assert!(nppl_curve(f64::NAN, &[1.0]).is_err());
        assert!(nppl_curve(1.0, &[1.0, f64::INFINITY]).is_err());
        assert!(nppl_curve(1.0, &[-1.0]).is_err());
    }

    #[test]
    fn curve_area_is_the_mean_height() {
        let xs: Vec<f64> = fractions().into_iter().map(f64::from).collect();
        assert_close(curve_area(&[1.0; 10], &xs).unwrap(), 1.0);
        // A line 1 + r over [0, 0.9] has mean height 1.45.
        let line: Vec<f64> = xs.iter().map(|r| 1.0 + r).collect();
        assert_close(curve_area(&line, &xs).unwrap(), 1.45);
        // Uneven steps: (1 * (0 + 2) / 2 + 2 * (2 + 2) / 2) / 3 = 5/3.
        assert_close(
            curve_area(&[0.0, 2.0, 2.0], &[0.0, 1.0, 3.0]).unwrap(),
            5.0 / 3.0,
        );
        assert!(curve_area(&[1.0, 2.0], &[0.0]).is_err());
        assert!(curve_area(&[1.0], &[0.0]).is_err());
        assert_eq!(
            curve_area(&[1.0, 2.0, 3.0], &[0.0, 0.5, 0.5]),
            Err(MetricError::NotIncreasing { index: 2 })
        );
        assert!(curve_area(&[1.0, f64::NAN], &[0.0, 1.0]).is_err());
    }

    #[test]
    fn metric_sums_average_per_metric() {
        let mut sums = MetricSums::new();
        sums.add(&ItemMetrics {
            pointing_game: Some(true),
            miou: Some(0.5),
            ap: Some(0.25),
            nppl_auc_most_first: Some(2.0),
            ..ItemMetrics::default()
        })
        .unwrap();
        sums.add(&ItemMetrics {
            pointing_game: Some(false),
            ap: Some(0.75),
            nppl_auc_least_first: Some(0.5),
            ..ItemMetrics::default()
        })
        .unwrap();
        // A non-finite value rejects the whole item.
        let bad = ItemMetrics {
            pointing_game: Some(true),
            nppl_auc_random: Some(f64::NAN),
            ..ItemMetrics::default()
        };
        assert!(matches!(
            sums.add(&bad),
            Err(MetricError::NonFinite {
                what: "nppl_auc_random",
                ..
            })
        ));
        assert_eq!(sums.count(), 2);
        assert_eq!(sums.slot(Metric::Miou).count, 1);
        assert_eq!(sums.mean(Metric::PointingGame), Some(0.5));
        assert_eq!(sums.mean(Metric::NpplAucRandom), None);

        let json = serde_json::to_value(sums.means()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "pointing_game": 0.5, "miou": 0.5, "ap": 0.5,
                "nppl_auc_most_first": 2.0, "nppl_auc_least_first": 0.5,
                "nppl_auc_random": null, "count": 2
            })
        );

        let mut total = MetricSums::new();
        total.merge(&sums);
        total.merge(&sums);
        assert_eq!(total.count(), 4);
        assert_eq!(
            total.means(),
            MetricMeans {
                count: 4,
                ..sums.means()
            }
        );
        let back: MetricSums =
            serde_json::from_str(&serde_json::to_string(&total).unwrap()).unwrap();
        assert_eq!(back, total);
        let keys: Vec<&str> = Metric::ALL.iter().map(|m| m.key()).collect();
        assert_eq!(keys[0], "pointing_game");
        assert_eq!(keys[5], "nppl_auc_random");
        assert_eq!(MetricSums::new().means().pointing_game, None);
    }
}
