//! Latency histograms: every sample recorded in an HDR histogram (nanoseconds, 3 significant
//! digits, up to 100 s), read out as a [`Summary`] of percentiles.

use std::time::Duration;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// The largest value recorded; longer latencies are recorded as this.
const HIGHEST_NS: u64 = 100_000_000_000;

/// Recorded latencies.
#[derive(Clone, Debug)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

/// Percentiles of a [`Latencies`], the numbers a report prints.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

// === impl Latencies ===

impl Latencies {
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, HIGHEST_NS, 3)
                .expect("valid histogram bounds"),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Adds `other`'s samples to these.
    pub fn add(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms of the same bounds");
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    pub fn summary(&self) -> Summary {
        if self.histogram.is_empty() {
            return Summary::default();
        }
        let at = |q: f64| Duration::from_nanos(self.histogram.value_at_quantile(q));
        Summary {
            count: self.histogram.len(),
            mean: Duration::from_nanos(self.histogram.mean() as u64),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(self.histogram.max()),
        }
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Summary ===

impl Summary {
    /// `{"count": N, "mean_us": …, "p50_us": …, "p90_us": …, "p99_us": …, "p99.9_us": …,
    /// "max_us": …}`, in microseconds with nanosecond precision.
    pub fn to_json(&self) -> Value {
        let us = |d: Duration| d.as_nanos() as f64 / 1e3;
        json!({
            "count": self.count,
            "mean_us": us(self.mean),
            "p50_us": us(self.p50),
            "p90_us": us(self.p90),
            "p99_us": us(self.p99),
            "p99.9_us": us(self.p999),
            "max_us": us(self.max),
        })
    }

    pub fn from_json(value: &Value) -> Result<Self> {
        let us = |name: &str| -> Result<Duration> {
            let v = value
                .get(name)
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("no number {name:?} in {value}"))?;
            Ok(Duration::from_nanos((v * 1e3).round() as u64))
        };
        Ok(Self {
            count: value
                .get("count")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("no count in {value}"))?,
            mean: us("mean_us")?,
            p50: us("p50_us")?,
            p90: us("p90_us")?,
            p99: us("p99_us")?,
            p999: us("p99.9_us")?,
            max: us("max_us")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        // 1 µs … 1000 µs, one sample each, split across two histograms.
        for us in 1..=1000u64 {
            let target = if us % 2 == 0 { &mut a } else { &mut b };
            target.record(Duration::from_micros(us));
        }
        a.add(&b);
        let s = a.summary();
        assert_eq!(s.count, 1000);
        let near = |d: Duration, us: f64| (d.as_nanos() as f64 / 1e3 - us).abs() <= us * 0.002;
        assert!(near(s.p50, 500.0), "{s:?}");
        assert!(near(s.p90, 900.0), "{s:?}");
        assert!(near(s.p99, 990.0), "{s:?}");
        assert!(near(s.p999, 999.0), "{s:?}");
        assert!(near(s.max, 1000.0), "{s:?}");
        assert!(near(s.mean, 500.5), "{s:?}");
        assert_eq!(Latencies::new().summary(), Summary::default());
    }

    #[test]
    fn json_round_trip() {
        let mut l = Latencies::new();
        l.record(Duration::from_nanos(123_456));
        l.record(Duration::from_secs(1000)); // above the highest value: saturates
        let s = l.summary();
        let back = Summary::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert!(s.max <= Duration::from_nanos(HIGHEST_NS + HIGHEST_NS / 1000));
        assert!(Summary::from_json(&json!({"count": 1})).is_err());
    }
}
