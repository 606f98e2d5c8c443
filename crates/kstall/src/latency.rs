//! Exact per-request latencies (from ring-buffer records) in hdrhistogram, with the same
//! percentile set the syscall rows show.
use hdrhistogram::Histogram;

use crate::aggregate::{BucketCount, Percentiles};

/// 1 us to ~18 min at 2 significant digits: ~12 KiB per recorder, so per-client recorders stay
/// cheap in a process that runs for weeks.
#[derive(Clone, Debug)]
pub struct LatencyRecorder {
    hist: Histogram<u32>,
}

const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 1 << 40;

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder { hist: Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 2).expect("static bounds are valid") }
    }
}

impl LatencyRecorder {
    pub fn record(&mut self, ns: u64) {
        // Saturating: a count past u32::MAX stays at the max instead of failing.
        self.hist.saturating_record(ns.clamp(LOWEST_NS, HIGHEST_NS));
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Sum of the recorded values, to the histogram's resolution.
    pub fn sum_ns(&self) -> u64 {
        (self.hist.mean() * self.hist.len() as f64) as u64
    }

    pub fn merge(&mut self, other: &LatencyRecorder) {
        let _ = self.hist.add(&other.hist);
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        let at = |q| self.hist.value_at_quantile(q);
        Percentiles { p50_ns: at(0.5), p90_ns: at(0.9), p99_ns: at(0.99), p999_ns: at(0.999), max_ns: self.hist.max() }
    }

    /// Counts per power of two of nanoseconds (non-empty ones), for charts on a log axis.
    pub fn log2_buckets(&self) -> Vec<BucketCount> {
        let mut counts = [0u64; 64];
        for v in self.hist.iter_recorded() {
            let value = v.value_iterated_to().max(1);
            counts[63 - value.leading_zeros() as usize] += u64::from(v.count_at_value());
        }
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(pow, &count)| BucketCount { lower_ns: 1 << pow, upper_ns: Some(1 << (pow + 1)), count })
            .collect()
    }

    /// Values at or above `ns` (to the histogram's resolution).
    pub fn count_at_or_above(&self, ns: u64) -> u64 {
        let ns = ns.clamp(LOWEST_NS, HIGHEST_NS);
        self.hist.count_between(self.hist.lowest_equivalent(ns), HIGHEST_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_one_percent_and_tail_counts() {
        let mut r = LatencyRecorder::default();
        for i in 1..=1000u64 {
            r.record(i * 10_000); // 10 us .. 10 ms
        }
        let p = r.percentiles();
        let close = |a: u64, b: u64| (a as f64 - b as f64).abs() <= b as f64 * 0.01;
        assert!(close(p.p50_ns, 5_000_000), "{p:?}");
        assert!(close(p.p99_ns, 9_900_000), "{p:?}");
        assert!(close(p.max_ns, 10_000_000), "{p:?}");
        assert_eq!(r.count(), 1000);
        let top = r.count_at_or_above(p.p99_ns);
        assert!((10..=12).contains(&top), "{top}");
        let buckets = r.log2_buckets();
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 1000);
        // 10 us .. 10 ms spans 2^13 .. 2^23 ns.
        assert_eq!(buckets.first().map(|b| b.lower_ns), Some(1 << 13));
        assert_eq!(buckets.last().map(|b| b.lower_ns), Some(1 << 23));
    }
}
