//! The perturbation test: removal orders of grid cells, removal fractions,
//! perplexity, normalised-perplexity curves and their areas (see the module
//! docs of [`crate::metrics`]).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::{check_finite_f32, MetricError};

fn check_finite_f64(what: &'static str, values: &[f64]) -> Result<(), MetricError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricError::NonFinite { what, index }),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
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
}
