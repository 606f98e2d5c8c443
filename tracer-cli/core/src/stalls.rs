//! Stall attribution: which network-thread stalls (page-cache misses, slow calls) delayed which
//! Produce requests, for which file (topic-partition), serving which client.
//!
//! Records from one thread reach user space in the order that thread made them, so a Produce
//! answered by a thread arrives after every stall of that thread that could have delayed it:
//! each Produce is joined, as it arrives, against its thread's recent stalls.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    time::Duration,
};

use kstall_common::{
    CacheResult, Syscall,
    events::{RequestId, StallEvent},
};
use serde::Serialize;

use crate::{
    hist::{LatencyRecorder, Percentiles},
    listeners::Listener,
    kafka::{self, FETCH},
    requests::RequestTiming,
};

/// Stalls kept per thread for joining; older ones cannot overlap a request still to come
/// unless it took longer than STALL_MEMORY.
const STALLS_PER_THREAD: usize = 512;
const STALL_MEMORY_NS: u64 = 120_000_000_000;
const WORST_STALLS: usize = 10;
const MAX_TRACKED_NAMES: usize = 256;
pub const TOP_ROWS: usize = 10;

/// What kept the thread: the kernel's evidence, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The call read file data that was not in the page cache.
    PageCacheMiss,
    /// Asleep in D state (I/O or a kernel lock) without a page-cache miss.
    BlockedInKernel,
    /// Runnable but not running (preempted, CPU contention).
    OffCpu,
    /// On CPU the whole time.
    OnCpu,
}

impl Cause {
    fn of(e: &StallEvent) -> Cause {
        if e.cache == CacheResult::Miss as u8 {
            Cause::PageCacheMiss
        } else if e.blocked_ns > 0 {
            Cause::BlockedInKernel
        } else if e.off_cpu_ns * 2 > e.duration_ns {
            Cause::OffCpu
        } else {
            Cause::OnCpu
        }
    }

    /// The one machine spelling: JSON, metric labels, CSS classes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::PageCacheMiss => "page_cache_miss",
            Cause::BlockedInKernel => "blocked_in_kernel",
            Cause::OffCpu => "off_cpu",
            Cause::OnCpu => "on_cpu",
        }
    }

    /// For people: tables and sentences.
    pub const fn label(self) -> &'static str {
        match self {
            Cause::PageCacheMiss => "page-cache miss",
            Cause::BlockedInKernel => "blocked in kernel",
            Cause::OffCpu => "off CPU",
            Cause::OnCpu => "on CPU",
        }
    }
}

/// The request whose response a stalled call was sending.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct RequestRef {
    pub api: &'static str,
    pub correlation_id: i32,
    pub client_id: String,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Stall {
    pub tid: u32,
    /// The listener of the stalled network thread; null when its name does not tell.
    pub listener: Option<String>,
    pub syscall: &'static str,
    pub cache: &'static str,
    pub cause: Cause,
    /// Kernel monotonic clock.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub off_cpu_ns: u64,
    pub blocked_ns: u64,
    pub pages_added: u64,
    pub bytes: i64,
    pub file: Option<PathBuf>,
    pub topic_partition: Option<String>,
    pub segment: Option<String>,
    /// File byte range the call looked up in the page cache.
    pub file_range: Option<(u64, u64)>,
    pub request: Option<RequestRef>,
    /// Produce requests whose latency window this stall overlapped, and the time it overlapped.
    pub delayed_produce: u64,
    pub delayed_produce_ns: u64,
    /// False on a TLS listener's thread: its requests cannot be seen, so `delayed_produce`
    /// (0) does not mean none were delayed.
    pub delayed_produce_known: bool,
}

impl Stall {
    fn end_ns(&self) -> u64 {
        self.start_ns + self.duration_ns
    }
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct MissTotals {
    pub name: String,
    pub stalls: u64,
    pub stall_ns: u64,
    pub bytes: u64,
    pub pages_added: u64,
}

impl MissTotals {
    fn add(&mut self, s: &Stall) {
        self.stalls += 1;
        self.stall_ns += s.duration_ns;
        self.bytes += s.bytes.max(0) as u64;
        self.pages_added += s.pages_added;
    }
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct CauseTotals {
    pub cause: Option<Cause>,
    pub stalls: u64,
    pub stall_ns: u64,
}

/// Stalls of one thread by cause.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ThreadStalls {
    pub tid: u32,
    pub listener: Option<String>,
    pub cause: Cause,
    pub stalls: u64,
    pub stall_ns: u64,
}

/// Produce latency (socket wait + broker time), split by whether a stall overlapped it.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct ProduceAttribution {
    pub requests: u64,
    pub all: Percentiles,
    pub stalled_requests: u64,
    pub stalled: Percentiles,
    pub not_stalled: Percentiles,
    /// Stalled by a page-cache miss in particular.
    pub stalled_by_miss: u64,
    /// Produce requests at or above the overall p99, and how many of them were stalled.
    pub slowest_1pct: u64,
    pub slowest_1pct_stalled: u64,
    /// Time stalls overlapped Produce latency windows, summed over requests.
    pub stall_ns_added: u64,
    pub miss_ns_added: u64,
    /// The same counts per listener the Produce requests came in on.
    pub by_listener: Vec<ListenerProduce>,
}

/// Produce requests of one listener's clients, and how many stalls delayed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ListenerProduce {
    /// Null: served by network threads whose listener is not known.
    pub listener: Option<String>,
    pub requests: u64,
    pub stalled_requests: u64,
    pub stalled_by_miss: u64,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct StallSummary {
    pub threshold_ns: u64,
    pub stalls: u64,
    pub by_cause: Vec<CauseTotals>,
    /// Per network thread (and thread that missed in sendfile) and cause.
    pub by_thread: Vec<ThreadStalls>,
    pub produce: ProduceAttribution,
    /// Page-cache misses by topic-partition (or file, when not a log segment), most time first.
    pub cold_partitions: Vec<MissTotals>,
    /// Page-cache misses by the client.id of the Fetch being served, most time first.
    pub cold_readers: Vec<MissTotals>,
    /// Longest stalls, with what they delayed.
    pub worst: Vec<Stall>,
}

pub struct Attribution {
    threshold_ns: u64,
    recent: HashMap<u32, VecDeque<Stall>>,
    worst: Vec<Stall>,
    by_cause: BTreeMap<Cause, CauseTotals>,
    by_thread: BTreeMap<(u32, Cause), (u64, u64, Option<String>)>,
    produce_by_listener: BTreeMap<Option<String>, ListenerProduce>,
    partitions: HashMap<String, MissTotals>,
    readers: HashMap<String, MissTotals>,
    produce_all: LatencyRecorder,
    produce_stalled: LatencyRecorder,
    produce_clean: LatencyRecorder,
    stalled_by_miss: u64,
    stall_ns_added: u64,
    miss_ns_added: u64,
}

impl Attribution {
    pub fn new(threshold: Duration) -> Attribution {
        Attribution {
            threshold_ns: threshold.as_nanos() as u64,
            recent: HashMap::new(),
            worst: Vec::new(),
            by_cause: BTreeMap::new(),
            by_thread: BTreeMap::new(),
            produce_by_listener: BTreeMap::new(),
            partitions: HashMap::new(),
            readers: HashMap::new(),
            produce_all: LatencyRecorder::default(),
            produce_stalled: LatencyRecorder::default(),
            produce_clean: LatencyRecorder::default(),
            stalled_by_miss: 0,
            stall_ns_added: 0,
            miss_ns_added: 0,
        }
    }

    /// One stall of a network thread serving `listener` (None: not known), with the file it
    /// read as the session named it while the call's fd was still open.
    pub fn record_stall(&mut self, e: &StallEvent, file: Option<PathBuf>, listener: Option<&Listener>) -> Cause {
        let segment = file.as_deref().and_then(kafka::segment);
        let stall = Stall {
            tid: e.tid,
            listener: listener.map(|l| l.name.clone()),
            syscall: Syscall::from_u8(e.syscall).map_or("?", Syscall::name),
            cache: CacheResult::from_u8(e.cache).map_or("?", CacheResult::as_str),
            cause: Cause::of(e),
            start_ns: e.start_ns,
            duration_ns: e.duration_ns,
            off_cpu_ns: e.off_cpu_ns,
            blocked_ns: e.blocked_ns,
            pages_added: e.pages_added,
            bytes: e.bytes,
            topic_partition: segment.as_ref().map(|s| s.topic_partition()),
            segment: segment.map(|s| s.file),
            file,
            file_range: (e.end_byte > e.first_byte).then_some((e.first_byte, e.end_byte)),
            request: request_ref(&e.request),
            delayed_produce: 0,
            delayed_produce_ns: 0,
            delayed_produce_known: !listener.is_some_and(Listener::is_encrypted),
        };
        let totals = self.by_cause.entry(stall.cause).or_default();
        totals.cause = Some(stall.cause);
        totals.stalls += 1;
        totals.stall_ns += stall.duration_ns;
        // Bounded by the broker's network threads (and any thread missing in sendfile).
        let per_thread = self.by_thread.entry((e.tid, stall.cause)).or_default();
        per_thread.0 += 1;
        per_thread.1 += stall.duration_ns;
        per_thread.2.clone_from(&stall.listener);
        if stall.cause == Cause::PageCacheMiss {
            let place = stall
                .topic_partition
                .clone()
                .or_else(|| stall.file.as_ref().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "(unknown file)".into());
            bounded_entry(&mut self.partitions, place).add(&stall);
            if let Some(r) = &stall.request {
                let reader = if r.api == kafka::api_name(FETCH) { r.client_id.clone() } else { format!("{} ({})", r.client_id, r.api) };
                bounded_entry(&mut self.readers, reader).add(&stall);
            }
        }
        let thread = self.recent.entry(e.tid).or_default();
        while thread.front().is_some_and(|s| s.end_ns() + STALL_MEMORY_NS < e.start_ns) || thread.len() >= STALLS_PER_THREAD {
            let old = thread.pop_front().expect("checked non-empty");
            keep_worst(&mut self.worst, old);
        }
        let cause = stall.cause;
        thread.push_back(stall);
        cause
    }

    /// Joins an answered Produce against the stalls of the thread that served it (a network
    /// thread of `listener`); returns what stalled it: a page-cache miss if any overlapping
    /// stall was one, else the other cause.
    pub fn record_produce(&mut self, tid: u32, listener: Option<&Listener>, t: &RequestTiming) -> Option<Cause> {
        let (from, to) = (t.start_ns(), t.response_done_ns);
        let mut added = 0;
        let mut by_miss = 0;
        let mut other_cause = None;
        if let Some(stalls) = self.recent.get_mut(&tid) {
            for s in stalls.iter_mut().filter(|s| s.start_ns < to && s.end_ns() > from) {
                let overlap = s.end_ns().min(to) - s.start_ns.max(from);
                s.delayed_produce += 1;
                s.delayed_produce_ns += overlap;
                added += overlap;
                if s.cause == Cause::PageCacheMiss {
                    by_miss += overlap;
                } else {
                    other_cause = Some(s.cause);
                }
            }
        }
        let total = t.total_ns();
        self.produce_all.record(total);
        let name = listener.map(|l| l.name.clone());
        let per_listener =
            self.produce_by_listener.entry(name.clone()).or_insert_with(|| ListenerProduce { listener: name, ..Default::default() });
        per_listener.requests += 1;
        per_listener.stalled_requests += (added > 0) as u64;
        per_listener.stalled_by_miss += (by_miss > 0) as u64;
        if added > 0 {
            self.produce_stalled.record(total);
            self.stall_ns_added += added;
            self.miss_ns_added += by_miss;
            self.stalled_by_miss += (by_miss > 0) as u64;
        } else {
            self.produce_clean.record(total);
        }
        if by_miss > 0 { Some(Cause::PageCacheMiss) } else { other_cause }
    }

    pub fn summary(&self) -> StallSummary {
        let p99 = self.produce_all.percentiles().p99_ns;
        let mut worst = self.worst.clone();
        for stalls in self.recent.values() {
            for s in stalls {
                keep_worst(&mut worst, s.clone());
            }
        }
        StallSummary {
            threshold_ns: self.threshold_ns,
            stalls: self.by_cause.values().map(|c| c.stalls).sum(),
            by_cause: self.by_cause.values().cloned().collect(),
            by_thread: self
                .by_thread
                .iter()
                .map(|(&(tid, cause), (stalls, stall_ns, listener))| ThreadStalls {
                    tid,
                    listener: listener.clone(),
                    cause,
                    stalls: *stalls,
                    stall_ns: *stall_ns,
                })
                .collect(),
            produce: ProduceAttribution {
                requests: self.produce_all.count(),
                all: self.produce_all.percentiles(),
                stalled_requests: self.produce_stalled.count(),
                stalled: self.produce_stalled.percentiles(),
                not_stalled: self.produce_clean.percentiles(),
                stalled_by_miss: self.stalled_by_miss,
                slowest_1pct: if p99 > 0 { self.produce_all.count_at_or_above(p99) } else { 0 },
                slowest_1pct_stalled: if p99 > 0 { self.produce_stalled.count_at_or_above(p99) } else { 0 },
                stall_ns_added: self.stall_ns_added,
                miss_ns_added: self.miss_ns_added,
                by_listener: self.produce_by_listener.values().cloned().collect(),
            },
            cold_partitions: top(&self.partitions),
            cold_readers: top(&self.readers),
            worst,
        }
    }
}

fn request_ref(id: &RequestId) -> Option<RequestRef> {
    (id.known != 0).then(|| RequestRef {
        api: kafka::api_name(id.api_key),
        correlation_id: id.correlation_id,
        client_id: kafka::client_id(id),
    })
}

/// The entry for `name`, or "(other)" once MAX_TRACKED_NAMES are tracked.
fn bounded_entry(map: &mut HashMap<String, MissTotals>, name: String) -> &mut MissTotals {
    let name = if map.contains_key(&name) || map.len() < MAX_TRACKED_NAMES { name } else { "(other)".into() };
    map.entry(name.clone()).or_insert_with(|| MissTotals { name, ..Default::default() })
}

fn top(map: &HashMap<String, MissTotals>) -> Vec<MissTotals> {
    let mut rows: Vec<MissTotals> = map.values().cloned().collect();
    rows.sort_by(|a, b| b.stall_ns.cmp(&a.stall_ns).then(a.name.cmp(&b.name)));
    rows.truncate(TOP_ROWS);
    rows
}

fn keep_worst(worst: &mut Vec<Stall>, s: Stall) {
    if worst.len() < WORST_STALLS || worst.last().is_some_and(|w| w.duration_ns < s.duration_ns) {
        let at = worst.partition_point(|w| w.duration_ns >= s.duration_ns);
        worst.insert(at, s);
        worst.truncate(WORST_STALLS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstall_common::{events::kind, framing::CLIENT_ID_CAP};

    use crate::listeners::{Plane, SecurityProtocol};

    fn stall(tid: u32, start_ms: u64, dur_ms: u64, miss: bool, fetch_client: Option<&str>) -> StallEvent {
        let mut request = RequestId::NONE;
        if let Some(c) = fetch_client {
            request.known = 1;
            request.api_key = FETCH;
            request.client_id[..c.len()].copy_from_slice(c.as_bytes());
            request.client_id_len = c.len() as u16;
        }
        assert!(request.client_id.len() == CLIENT_ID_CAP);
        StallEvent {
            kind: kind::STALL,
            tid,
            syscall: Syscall::Sendfile as u8,
            cache: if miss { CacheResult::Miss as u8 } else { CacheResult::Hit as u8 },
            _pad: [0; 2],
            socket_fd: 9,
            file_fd: -1,
            dev: 0,
            inode: 0,
            first_byte: 0,
            end_byte: 0,
            start_ns: start_ms * 1_000_000,
            duration_ns: dur_ms * 1_000_000,
            off_cpu_ns: dur_ms * 1_000_000,
            blocked_ns: if miss { dur_ms * 1_000_000 } else { 0 },
            pages_added: 256,
            bytes: 1 << 20,
            request,
        }
    }

    fn produce(start_ms: u64, end_ms: u64) -> RequestTiming {
        RequestTiming {
            arrival_ns: Some(start_ms * 1_000_000),
            read_start_ns: start_ms * 1_000_000 + 1,
            read_done_ns: start_ms * 1_000_000 + 2,
            response_done_ns: end_ms * 1_000_000,
        }
    }

    #[test]
    fn produce_overlapping_a_miss_on_its_thread_is_stalled() {
        let mut a = Attribution::new(Duration::from_millis(1));
        a.record_stall(&stall(1, 100, 8, true, Some("cold-reader")), None, None);
        // Arrived during the miss, on the same thread: stalled by 5 ms of it.
        a.record_produce(1, None, &produce(103, 109));
        // Same time, another thread: not stalled.
        a.record_produce(2, None, &produce(103, 104));
        // Same thread, after the miss: not stalled.
        for i in 0..97 {
            a.record_produce(1, None, &produce(200 + i, 200 + i + 1));
        }
        let s = a.summary();
        assert_eq!(s.produce.requests, 99);
        assert_eq!((s.produce.stalled_requests, s.produce.stalled_by_miss), (1, 1));
        assert_eq!(s.produce.stall_ns_added, 5_000_000);
        assert_eq!(s.produce.slowest_1pct_stalled, 1);
        assert_eq!(s.cold_readers[0].name, "cold-reader");
        assert_eq!(s.worst[0].delayed_produce, 1);
        assert_eq!(s.by_cause[0].cause, Some(Cause::PageCacheMiss));
    }

    #[test]
    fn slow_call_without_miss_is_a_stall_of_another_cause() {
        let mut a = Attribution::new(Duration::from_millis(1));
        a.record_stall(&stall(1, 100, 3, false, None), None, None);
        a.record_produce(1, None, &produce(99, 104));
        let s = a.summary();
        assert_eq!((s.produce.stalled_requests, s.produce.stalled_by_miss), (1, 0));
        assert!(s.cold_readers.is_empty() && s.cold_partitions.is_empty());
        assert_eq!(s.by_cause[0].cause, Some(Cause::OffCpu));
    }

    #[test]
    fn worst_list_stays_bounded_and_sorted() {
        let mut a = Attribution::new(Duration::from_millis(1));
        for i in 0..(STALLS_PER_THREAD as u64 * 3) {
            a.record_stall(&stall(1, i * 100, 1 + i % 37, true, None), None, None);
        }
        let s = a.summary();
        assert_eq!(s.worst.len(), WORST_STALLS);
        assert!(s.worst.windows(2).all(|w| w[0].duration_ns >= w[1].duration_ns));
        assert_eq!(s.worst[0].duration_ns, 37_000_000);
        assert!(a.recent[&1].len() <= STALLS_PER_THREAD);
    }

    #[test]
    fn stalls_carry_their_threads_listener() {
        let plaintext = Listener { name: "PLAINTEXT".into(), security_protocol: SecurityProtocol::Plaintext, plane: Plane::Data };
        let ssl = Listener { name: "SSL".into(), security_protocol: SecurityProtocol::Ssl, plane: Plane::Data };
        let mut a = Attribution::new(Duration::from_millis(1));
        a.record_stall(&stall(1, 100, 8, true, Some("cold-reader")), None, Some(&plaintext));
        a.record_stall(&stall(2, 100, 20, true, None), None, Some(&ssl));
        a.record_produce(1, Some(&plaintext), &produce(103, 109));
        a.record_produce(1, Some(&plaintext), &produce(200, 201));
        let s = a.summary();
        let worst: Vec<(Option<&str>, u64, bool)> =
            s.worst.iter().map(|w| (w.listener.as_deref(), w.delayed_produce, w.delayed_produce_known)).collect();
        // The TLS listener's stall is the longest; what it delayed is unknown, not none.
        assert_eq!(worst, [(Some("SSL"), 0, false), (Some("PLAINTEXT"), 1, true)]);
        let threads: Vec<(u32, Option<&str>)> = s.by_thread.iter().map(|t| (t.tid, t.listener.as_deref())).collect();
        assert_eq!(threads, [(1, Some("PLAINTEXT")), (2, Some("SSL"))]);
        assert_eq!(
            s.produce.by_listener,
            [ListenerProduce { listener: Some("PLAINTEXT".into()), requests: 2, stalled_requests: 1, stalled_by_miss: 1 }]
        );
        let json = serde_json::to_value(&s.worst[0]).unwrap();
        assert_eq!((&json["listener"], &json["delayed_produce_known"]), (&"SSL".into(), &false.into()));
    }
}
