//! What happened when: Produce latencies and network-thread stalls on one time axis, for the
//! report's timeline chart. Bounded: every stall up to a cap, every stalled Produce up to a
//! cap, and a uniform sample (reservoir) of the others.
use serde::Serialize;

use crate::stalls::Cause;

const MAX_CLEAN_POINTS: usize = 3000;
const MAX_STALLED_POINTS: usize = 2000;
const MAX_STALLS: usize = 2000;

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ProducePoint {
    /// Arrival, in milliseconds since tracing started.
    pub at_ms: f64,
    pub latency_ns: u64,
    /// What stalled it: page_cache_miss when any overlapping stall was a miss; null when none.
    pub stalled_by: Option<Cause>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct StallSpan {
    pub at_ms: f64,
    pub duration_ns: u64,
    pub cause: Cause,
    pub tid: u32,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Timeline {
    pub produce: Vec<ProducePoint>,
    pub stalls: Vec<StallSpan>,
    /// Produce requests seen; `produce` holds all stalled ones (up to a cap) and a sample of
    /// the rest.
    pub produce_seen: u64,
    pub stalls_dropped: u64,
    #[serde(skip)]
    origin_ns: u64,
    #[serde(skip)]
    clean_seen: u64,
    #[serde(skip)]
    clean_kept: usize,
    #[serde(skip)]
    stalled_kept: usize,
    #[serde(skip)]
    rng: u64,
}

impl Timeline {
    /// `origin_ns`: the kernel's monotonic clock when tracing started.
    pub fn new(origin_ns: u64) -> Timeline {
        Timeline { origin_ns, rng: 0x9e37_79b9_7f4a_7c15, ..Default::default() }
    }

    fn at_ms(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.origin_ns) as f64 / 1e6
    }

    fn random_below(&mut self, n: u64) -> u64 {
        // xorshift64: enough for sampling, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    pub fn stall(&mut self, start_ns: u64, duration_ns: u64, cause: Cause, tid: u32) {
        if self.stalls.len() >= MAX_STALLS {
            self.stalls_dropped += 1;
            return;
        }
        self.stalls.push(StallSpan { at_ms: self.at_ms(start_ns), duration_ns, cause, tid });
    }

    pub fn produce(&mut self, start_ns: u64, latency_ns: u64, stalled_by: Option<Cause>) {
        self.produce_seen += 1;
        let point = ProducePoint { at_ms: self.at_ms(start_ns), latency_ns, stalled_by };
        if stalled_by.is_some() {
            if self.stalled_kept < MAX_STALLED_POINTS {
                self.stalled_kept += 1;
                self.produce.push(point);
            }
            return;
        }
        self.clean_seen += 1;
        if self.clean_kept < MAX_CLEAN_POINTS {
            self.clean_kept += 1;
            self.produce.push(point);
            return;
        }
        // Reservoir sampling: replace a kept clean point with probability kept/seen.
        let slot = self.random_below(self.clean_seen) as usize;
        if slot < MAX_CLEAN_POINTS {
            let mut clean = self.produce.iter_mut().filter(|p| p.stalled_by.is_none());
            if let Some(p) = clean.nth(slot) {
                *p = point;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_stalled_point_and_a_bounded_sample_of_the_rest() {
        let mut t = Timeline::new(1_000_000_000);
        for i in 0..50_000u64 {
            t.produce(1_000_000_000 + i * 1_000_000, 100_000 + i, (i % 1000 == 0).then_some(Cause::PageCacheMiss));
        }
        t.stall(1_500_000_000, 8_000_000, Cause::PageCacheMiss, 7);
        assert_eq!(t.produce_seen, 50_000);
        assert_eq!(t.produce.iter().filter(|p| p.stalled_by.is_some()).count(), 50);
        assert_eq!(t.produce.iter().filter(|p| p.stalled_by.is_none()).count(), MAX_CLEAN_POINTS);
        // The sample spans the whole run, not just its start.
        assert!(t.produce.iter().any(|p| p.at_ms > 40_000.0));
        assert_eq!(t.stalls[0].at_ms, 500.0);
    }
}
