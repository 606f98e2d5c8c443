//! Latency distributions, the leaf every other part of the core builds on: percentiles and
//! log2 buckets of the kernel's histograms (`LatencyHist`) and of exact per-request latencies
//! (ring-buffer records, in hdrhistogram). One percentile set, computed one way for both.
use hdrhistogram::{Counter, Histogram};
use kstall_common::{BUCKETS, LatencyHist, bucket_index, bucket_lower_ns, bucket_upper_ns, log2_floor};
use serde::Serialize;

/// Percentiles in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Percentiles {
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    /// The percentile set of an hdrhistogram, none above `max_ns` (the largest value seen).
    fn of<T: Counter>(hdr: &Histogram<T>, max_ns: u64) -> Percentiles {
        if hdr.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| hdr.value_at_quantile(q).min(max_ns);
        Percentiles { p50_ns: at(0.50), p90_ns: at(0.90), p99_ns: at(0.99), p999_ns: at(0.999), max_ns }
    }
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct BucketCount {
    pub lower_ns: u64,
    /// Exclusive; null for the overflow bucket.
    pub upper_ns: Option<u64>,
    pub count: u64,
}

/// Value recorded into hdrhistogram for a kernel bucket: its midpoint, never above the
/// largest latency actually seen (the overflow bucket has no midpoint: the max stands for it).
pub fn representative_ns(bucket: usize, max_ns: u64) -> u64 {
    let lower = bucket_lower_ns(bucket);
    let value = if bucket == BUCKETS - 1 {
        max_ns
    } else {
        lower + (bucket_upper_ns(bucket) - lower) / 2
    };
    value.min(max_ns.max(lower)).max(1)
}

/// Percentiles of a kernel histogram, each bucket standing at its representative value.
pub fn percentiles(h: &LatencyHist) -> Percentiles {
    const HIGHEST_NS: u64 = 1 << 40;
    let mut hdr = Histogram::<u64>::new_with_bounds(1, HIGHEST_NS, 3).expect("static bounds are valid");
    for (bucket, &n) in h.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
        let value = representative_ns(bucket, h.max_ns).min(HIGHEST_NS);
        hdr.record_n(value, n).expect("value within bounds");
    }
    Percentiles::of(&hdr, h.max_ns)
}

/// The non-empty buckets of a kernel histogram.
pub fn kernel_buckets(h: &LatencyHist) -> Vec<BucketCount> {
    h.buckets
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(b, &count)| BucketCount { lower_ns: bucket_lower_ns(b), upper_ns: (b < BUCKETS - 1).then(|| bucket_upper_ns(b)), count })
        .collect()
}

/// A kernel histogram of these latencies, counted as the kernel counts them (for tests and
/// fixtures that build summaries by hand).
pub fn kernel_hist(latencies_ns: &[u64]) -> LatencyHist {
    let mut h = LatencyHist::ZERO;
    for &ns in latencies_ns {
        h.buckets[bucket_index(ns)] += 1;
        h.count += 1;
        h.total_ns += ns;
        h.max_ns = h.max_ns.max(ns);
    }
    h
}

/// Exact latencies of requests (from ring-buffer records). 1 us to ~18 min at 2 significant
/// digits: ~12 KiB per recorder, so per-client recorders stay cheap in a process that runs
/// for weeks.
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
        Percentiles::of(&self.hist, self.hist.max())
    }

    /// The values recorded here and not in `part` (a recorder of a subset of them).
    pub fn without(&self, part: &LatencyRecorder) -> LatencyRecorder {
        let mut rest = self.clone();
        // A subset's counts never exceed the whole's, so the subtraction cannot fail.
        let _ = rest.hist.subtract(&part.hist);
        rest
    }

    /// Counts per power of two of nanoseconds (non-empty ones), for charts on a log axis.
    pub fn log2_buckets(&self) -> Vec<BucketCount> {
        let mut counts = [0u64; 64];
        for v in self.hist.iter_recorded() {
            counts[log2_floor(v.value_iterated_to()) as usize] += u64::from(v.count_at_value());
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

    #[test]
    fn empty_sets_have_zero_percentiles_on_both_paths() {
        assert_eq!(LatencyRecorder::default().percentiles(), Percentiles::default());
        assert_eq!(percentiles(&LatencyHist::ZERO), Percentiles::default());
    }

    fn within(actual: u64, expected: u64, rel: f64) -> bool {
        (actual as f64 - expected as f64).abs() <= expected as f64 * rel
    }

    #[test]
    fn percentiles_of_a_bimodal_sendfile_distribution() {
        // 990 cache hits around 13 us, 10 misses around 8 ms: the shape of KAFKA-7504.
        let mut lat: Vec<u64> = (0..990).map(|i| 10_000 + (i % 7) * 1_000).collect();
        lat.extend((0..10).map(|i| 8_000_000 + i * 100_000));
        let p = percentiles(&kernel_hist(&lat));
        assert!(within(p.p50_ns, 13_000, 0.07), "p50 {}", p.p50_ns);
        assert!(p.p90_ns < 20_000, "p90 {}", p.p90_ns);
        assert!(within(p.p999_ns, 8_500_000, 0.07), "p99.9 {}", p.p999_ns);
        assert_eq!(p.max_ns, 8_900_000);
        // p99 is the 990th value: still a hit.
        assert!(p.p99_ns < 20_000, "p99 {}", p.p99_ns);
    }

    #[test]
    fn representative_values_stay_inside_their_bucket_and_under_max() {
        for b in 0..BUCKETS - 1 {
            let v = representative_ns(b, u64::MAX);
            assert!(v >= bucket_lower_ns(b).max(1) && v < bucket_upper_ns(b), "bucket {b}: {v}");
        }
        assert_eq!(representative_ns(BUCKETS - 1, 40_000_000_000), 40_000_000_000);
        // The bucket holding the max never reports more than the max.
        let h = kernel_hist(&[1_500_000]);
        assert_eq!(percentiles(&h).p50_ns, 1_500_000);
    }

}
