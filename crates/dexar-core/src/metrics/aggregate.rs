//! Aggregation of per-item results into per-strategy means (see the module
//! docs of [`crate::metrics`]).

use serde::{Deserialize, Serialize};

use super::segmentation::SegmentationMetrics;
use super::MetricError;

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

        let back: MetricSums =
            serde_json::from_str(&serde_json::to_string(&sums).unwrap()).unwrap();
        assert_eq!(back, sums);
        let keys: Vec<&str> = Metric::ALL.iter().map(|m| m.key()).collect();
        assert_eq!(keys[0], "pointing_game");
        assert_eq!(keys[5], "nppl_auc_random");
        assert_eq!(MetricSums::new().means().pointing_game, None);
    }
}
