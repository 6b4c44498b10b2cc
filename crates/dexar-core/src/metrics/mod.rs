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
//! [`upsample_bilinear`](crate::maps::upsample_bilinear) (PyTorch `align_corners=False`), as the papers do with
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

mod aggregate;
mod perturbation;
mod segmentation;

pub use aggregate::{ItemMetrics, Mean, Metric, MetricMeans, MetricSums};
pub use perturbation::{
    cells_to_remove, curve_area, fractions, nppl_curve, perplexity, perturbation_order,
    removed_cells, Order,
};
pub use segmentation::{
    average_precision, iou_at_mean, iou_foreground, miou, miou_at_mean, pointing_game,
    segmentation_metrics, threshold_at_mean, SegmentationMetrics,
};

use crate::maps::MapError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("the mask has {got} values but {width}x{height} pixels need {expected}; check that the mask matches its image")]
    MaskSize {
        width: usize,
        height: usize,
        expected: usize,
        got: usize,
    },
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

pub(crate) fn check_finite_f32(what: &'static str, values: &[f32]) -> Result<(), MetricError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricError::NonFinite { what, index }),
        None => Ok(()),
    }
}
