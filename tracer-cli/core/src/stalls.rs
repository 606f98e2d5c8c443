//! Stall attribution: which network-thread stalls (page-cache misses, slow calls) delayed which
//! requests (every API: Produce, consumers' and followers' Fetch, group coordination), for which
//! file (topic-partition), serving which client; and which acks=all Produce requests waited on
//! followers whose Fetch connections live on a stalled thread (replication behind stalls).
//!
//! Records from one thread reach user space in the order that thread made them, so a request
//! answered by a thread arrives after every stall of that thread that could have delayed it:
//! each request is joined, as it arrives, against its thread's recent stalls. A stall record is
//! sent when its call returns, before the follower's next Fetch that the call held up, so an
//! acks=all Produce (answered after that Fetch) arrives after the stalls that held it too.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
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
    kafka::{self, FETCH, PRODUCE, RequestFacts, Topic, TopicNames},
    requests::{Delay, DelayedRow, RequestTiming},
};

/// Stalls kept per thread for joining; older ones cannot overlap a request still to come
/// unless it took longer than STALL_MEMORY.
const STALLS_PER_THREAD: usize = 512;
const STALL_MEMORY_NS: u64 = 120_000_000_000;
const WORST_STALLS: usize = 10;
const MAX_TRACKED_NAMES: usize = 256;
/// Cold readers and partitions remembered per thread (the rest are "(other)").
const NAMES_PER_THREAD: usize = 32;
/// Topic-partitions counted for the stalled and the replication-delayed Produce requests.
const MAX_PRODUCE_PARTITIONS: usize = 1024;
/// Follower fetch connections tracked (broker id, serving thread): a cluster's brokers times
/// num.replica.fetchers, bounded.
const MAX_FOLLOWER_CONNECTIONS: usize = 256;
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
    /// Null only if the kernel sent a value this build does not know (never from one build).
    #[serde(serialize_with = "crate::kernel::spelling::some_syscall")]
    #[schemars(with = "Option<String>")]
    pub syscall: Option<Syscall>,
    #[serde(serialize_with = "crate::kernel::spelling::some_cache")]
    #[schemars(with = "Option<String>")]
    pub cache: Option<CacheResult>,
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
    /// Requests of any API on this thread whose latency window this stall overlapped.
    pub delayed_requests: u64,
    /// acks=all Produce requests (on any thread) that waited while this stall held a
    /// follower's Fetch connection.
    pub delayed_replication: u64,
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
    /// Page-cache misses: the client.id whose Fetch the most miss time was serving, and the
    /// topic-partition (or file) read; null for other causes or when not known.
    pub top_reader: Option<String>,
    pub top_partition: Option<String>,
}

/// What the stalls did to one answered request: the time they added, and what stalled it (a
/// page-cache miss if any overlapping stall of its own thread was one, else the other cause).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attributed {
    pub delay: Delay,
    pub cause: Option<Cause>,
}

/// One answered data-plane request, as attribution needs it.
pub struct Answered<'a> {
    /// The network thread that read and answered it.
    pub tid: u32,
    pub listener: Option<&'a Listener>,
    pub api_key: i16,
    pub facts: &'a RequestFacts,
    pub timing: RequestTiming,
}

/// One follower's Fetch connection on this broker (the leader), by the thread serving it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FollowerFetches {
    /// The follower's broker id, from its Fetch requests (ReplicaId, or ReplicaState from v15).
    pub broker_id: i32,
    pub tid: u32,
    pub listener: Option<String>,
    pub fetches: u64,
    /// Its Fetch requests a stall of this thread overlapped, and the time it overlapped.
    pub stalled_fetches: u64,
    pub added_ns: u64,
}

/// acks=all Produce requests and the followers they wait on: a leader answers one only when
/// the in-sync followers have fetched its records, so a stall of a thread serving a follower's
/// Fetch connection delays it even when its own thread is clean.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct ReplicationSummary {
    /// Produce requests with acks=all (-1), and those whose acks could not be read (the
    /// request's first bytes past the header were not captured: a client.id near 64 bytes).
    pub produce_acks_all: u64,
    pub produce_acks_unknown: u64,
    /// acks=all Produce requests that waited while a follower's Fetch thread was stalled, and
    /// the time those stalls overlapped them (summed over requests).
    pub produce_delayed: u64,
    pub produce_added_ns: u64,
    /// The part of `produce_added_ns` that page-cache misses were.
    pub produce_miss_ns: u64,
    /// acks=all Produce latency, delayed so and not.
    pub delayed: Percentiles,
    pub not_delayed: Percentiles,
    /// Of the slowest 1% of all Produce requests (`produce.slowest_1pct`), those delayed so.
    pub slowest_1pct_delayed: u64,
    pub followers: Vec<FollowerFetches>,
    /// The topic-partitions of the delayed requests (the first each writes), most first.
    pub partitions: Vec<PartitionCount>,
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
    /// The topic-partitions of the stalled Produce requests (the first each writes), most first.
    pub stalled_partitions: Vec<PartitionCount>,
}

/// Requests of one topic-partition: "hot-0", or "topic id ... partition 0" when the broker's
/// log directories did not name the id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PartitionCount {
    pub partition: String,
    pub requests: u64,
}

/// Counts per (topic, partition), bounded; named at summary time, when topic names are known.
#[derive(Default)]
struct PartitionCounts(HashMap<(Topic, i32), u64>);

impl PartitionCounts {
    fn add(&mut self, partition: &Option<(Topic, i32)>) {
        let Some(key) = partition else { return };
        if self.0.contains_key(key) || self.0.len() < MAX_PRODUCE_PARTITIONS {
            *self.0.entry(key.clone()).or_default() += 1;
        }
    }

    fn top(&self, names: &TopicNames) -> Vec<PartitionCount> {
        let mut rows: Vec<PartitionCount> =
            self.0.iter().map(|((topic, p), &n)| PartitionCount { partition: names.partition(topic, *p), requests: n }).collect();
        rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.partition.cmp(&b.partition)));
        rows.truncate(TOP_ROWS);
        rows
    }
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
    /// Every request stalls delayed, per API and client.id (every tracked client's rows, the most
    /// delayed first): who was hurt, beyond Produce.
    pub delayed: Vec<DelayedRow>,
    /// Page-cache misses by topic-partition (or file, when not a log segment), most time first.
    pub cold_partitions: Vec<MissTotals>,
    /// Page-cache misses by the client.id of the Fetch being served, most time first.
    pub cold_readers: Vec<MissTotals>,
    /// Longest stalls, with what they delayed.
    pub worst: Vec<Stall>,
    pub replication: ReplicationSummary,
}

/// Names (cold readers, partitions) by miss time on one thread, bounded.
#[derive(Default)]
struct ThreadCulprits {
    readers: HashMap<String, u64>,
    partitions: HashMap<String, u64>,
}

fn add_bounded(map: &mut HashMap<String, u64>, name: &str, ns: u64) {
    let name = if map.contains_key(name) || map.len() < NAMES_PER_THREAD { name } else { "(other)" };
    *map.entry(name.to_string()).or_default() += ns;
}

fn top_name(map: &HashMap<String, u64>) -> Option<String> {
    map.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(n, _)| n.clone())
}

#[derive(Default)]
struct Replication {
    acks_all: u64,
    acks_unknown: u64,
    added_ns: u64,
    miss_ns: u64,
    delayed: LatencyRecorder,
    not_delayed: LatencyRecorder,
    /// By (broker id, serving thread).
    followers: BTreeMap<(i32, u32), FollowerFetches>,
    /// The threads serving followers' Fetch connections.
    threads: BTreeSet<u32>,
    partitions: PartitionCounts,
}

impl StallSummary {
    /// Time the thread `tid` was stalled, every cause.
    pub fn thread_stall_ns(&self, tid: u32) -> u64 {
        self.by_thread.iter().filter(|t| t.tid == tid).map(|t| t.stall_ns).sum()
    }
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
    produce_not_stalled: LatencyRecorder,
    stalled_by_miss: u64,
    stall_ns_added: u64,
    miss_ns_added: u64,
    culprits: HashMap<u32, ThreadCulprits>,
    replication: Replication,
    stalled_partitions: PartitionCounts,
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
            produce_not_stalled: LatencyRecorder::default(),
            stalled_by_miss: 0,
            stall_ns_added: 0,
            miss_ns_added: 0,
            culprits: HashMap::new(),
            replication: Replication::default(),
            stalled_partitions: PartitionCounts::default(),
        }
    }

    /// One stall of a network thread serving `listener` (None: not known), with the file it
    /// read as the session named it while the call's fd was still open.
    pub fn record_stall(&mut self, e: &StallEvent, file: Option<PathBuf>, listener: Option<&Listener>) -> Cause {
        let segment = file.as_deref().and_then(kafka::segment);
        let stall = Stall {
            tid: e.tid,
            listener: listener.map(|l| l.name.clone()),
            syscall: Syscall::from_u8(e.syscall),
            cache: CacheResult::from_u8(e.cache),
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
            delayed_requests: 0,
            delayed_replication: 0,
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
            let culprits = self.culprits.entry(e.tid).or_default();
            add_bounded(&mut culprits.partitions, &place, stall.duration_ns);
            bounded_entry(&mut self.partitions, place).add(&stall);
            if let Some(r) = &stall.request {
                let reader = if r.api == kafka::api_name(FETCH) { r.client_id.clone() } else { format!("{} ({})", r.client_id, r.api) };
                add_bounded(&mut culprits.readers, &reader, stall.duration_ns);
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

    /// Joins an answered data-plane request against the stalls of the thread that served it
    /// and, for an acks=all Produce, of the threads serving the followers it waited on.
    pub fn record_request(&mut self, r: &Answered) -> Attributed {
        let t = &r.timing;
        let (from, to) = (t.start_ns(), t.response_done_ns);
        let produce = r.api_key == PRODUCE;
        let mut delay = Delay::default();
        let mut other_cause = None;
        if let Some(stalls) = self.recent.get_mut(&r.tid) {
            for s in overlapping(stalls, from, to) {
                let overlap = s.end_ns().min(to) - s.start_ns.max(from);
                s.delayed_requests += 1;
                if produce {
                    s.delayed_produce += 1;
                    s.delayed_produce_ns += overlap;
                }
                delay.added_ns += overlap;
                if s.cause == Cause::PageCacheMiss {
                    delay.miss_ns += overlap;
                } else {
                    other_cause = Some(s.cause);
                }
            }
        }
        let cause = if delay.miss_ns > 0 { Some(Cause::PageCacheMiss) } else { other_cause };
        if let (true, Some(broker_id)) = (r.api_key == FETCH, r.facts.follower) {
            self.record_follower_fetch(broker_id, r, &delay);
        }
        if produce {
            self.record_produce(r, &mut delay);
        }
        Attributed { delay, cause }
    }

    fn record_follower_fetch(&mut self, broker_id: i32, r: &Answered, delay: &Delay) {
        let key = (broker_id, r.tid);
        if !self.replication.followers.contains_key(&key) && self.replication.followers.len() >= MAX_FOLLOWER_CONNECTIONS {
            return;
        }
        let f = self.replication.followers.entry(key).or_insert_with(|| FollowerFetches {
            broker_id,
            tid: r.tid,
            listener: r.listener.map(|l| l.name.clone()),
            ..Default::default()
        });
        f.fetches += 1;
        f.stalled_fetches += (delay.added_ns > 0) as u64;
        f.added_ns += delay.added_ns;
        self.replication.threads.insert(r.tid);
    }

    fn record_produce(&mut self, r: &Answered, delay: &mut Delay) {
        let t = &r.timing;
        let total = t.total_ns();
        let added = delay.added_ns;
        self.produce_all.record(total);
        let name = r.listener.map(|l| l.name.clone());
        let per_listener =
            self.produce_by_listener.entry(name.clone()).or_insert_with(|| ListenerProduce { listener: name, ..Default::default() });
        per_listener.requests += 1;
        per_listener.stalled_requests += (added > 0) as u64;
        per_listener.stalled_by_miss += (delay.miss_ns > 0) as u64;
        if added > 0 {
            self.produce_stalled.record(total);
            self.stall_ns_added += added;
            self.miss_ns_added += delay.miss_ns;
            self.stalled_by_miss += (delay.miss_ns > 0) as u64;
            self.stalled_partitions.add(&r.facts.partition);
        } else {
            self.produce_not_stalled.record(total);
        }
        match r.facts.acks {
            Some(-1) => {}
            Some(_) => return,
            None => {
                self.replication.acks_unknown += 1;
                return;
            }
        }
        self.replication.acks_all += 1;
        // The stalls of the followers' threads that overlapped this request, its own thread's
        // already counted; at most the time its own stalls left.
        let (from, to) = (t.start_ns(), t.response_done_ns);
        let room = total.saturating_sub(added);
        let (mut replication, mut miss) = (0u64, 0u64);
        for tid in self.replication.threads.iter().filter(|&&tid| tid != r.tid) {
            let Some(stalls) = self.recent.get_mut(tid) else { continue };
            for s in overlapping(stalls, from, to) {
                let overlap = (s.end_ns().min(to) - s.start_ns.max(from)).min(room - replication);
                if overlap == 0 {
                    continue;
                }
                s.delayed_replication += 1;
                replication += overlap;
                if s.cause == Cause::PageCacheMiss {
                    miss += overlap;
                }
            }
        }
        delay.replication_ns = replication;
        let rep = &mut self.replication;
        if replication > 0 {
            rep.added_ns += replication;
            rep.miss_ns += miss;
            rep.delayed.record(total);
            rep.partitions.add(&r.facts.partition);
        } else {
            rep.not_delayed.record(total);
        }
    }

    /// Everything so far; `topics` names the topic ids requests carried.
    pub fn summary(&self, topics: &TopicNames) -> StallSummary {
        let p99 = self.produce_all.percentiles().p99_ns;
        let mut worst = self.worst.clone();
        // By thread, so stalls of equal length rank the same in every run.
        let threads: BTreeMap<&u32, &VecDeque<Stall>> = self.recent.iter().collect();
        for stalls in threads.into_values() {
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
                .map(|(&(tid, cause), (stalls, stall_ns, listener))| {
                    let culprits = self.culprits.get(&tid).filter(|_| cause == Cause::PageCacheMiss);
                    ThreadStalls {
                        tid,
                        listener: listener.clone(),
                        cause,
                        stalls: *stalls,
                        stall_ns: *stall_ns,
                        top_reader: culprits.and_then(|c| top_name(&c.readers)),
                        top_partition: culprits.and_then(|c| top_name(&c.partitions)),
                    }
                })
                .collect(),
            produce: ProduceAttribution {
                requests: self.produce_all.count(),
                all: self.produce_all.percentiles(),
                stalled_requests: self.produce_stalled.count(),
                stalled: self.produce_stalled.percentiles(),
                not_stalled: self.produce_not_stalled.percentiles(),
                stalled_by_miss: self.stalled_by_miss,
                slowest_1pct: if p99 > 0 { self.produce_all.count_at_or_above(p99) } else { 0 },
                slowest_1pct_stalled: if p99 > 0 { self.produce_stalled.count_at_or_above(p99) } else { 0 },
                stall_ns_added: self.stall_ns_added,
                miss_ns_added: self.miss_ns_added,
                by_listener: self.produce_by_listener.values().cloned().collect(),
                stalled_partitions: self.stalled_partitions.top(topics),
            },
            // Filled by the aggregator from the request table, which keeps the per-client latency.
            delayed: Vec::new(),
            cold_partitions: top(&self.partitions),
            cold_readers: top(&self.readers),
            worst,
            replication: ReplicationSummary {
                produce_acks_all: self.replication.acks_all,
                produce_acks_unknown: self.replication.acks_unknown,
                produce_delayed: self.replication.delayed.count(),
                produce_added_ns: self.replication.added_ns,
                produce_miss_ns: self.replication.miss_ns,
                delayed: self.replication.delayed.percentiles(),
                not_delayed: self.replication.not_delayed.percentiles(),
                slowest_1pct_delayed: if p99 > 0 { self.replication.delayed.count_at_or_above(p99) } else { 0 },
                followers: self.replication.followers.values().cloned().collect(),
                partitions: self.replication.partitions.top(topics),
            },
        }
    }
}

/// The stalls of one thread that overlap [from, to). One thread makes one call at a time, so its
/// stalls follow each other without overlapping: walked from the newest, the search stops at
/// the first that ended before `from`, and a request costs the few stalls near it, not the
/// whole window kept (every request of every API is joined here).
fn overlapping(stalls: &mut VecDeque<Stall>, from: u64, to: u64) -> impl Iterator<Item = &mut Stall> {
    stalls.iter_mut().rev().skip_while(move |s| s.start_ns >= to).take_while(move |s| s.end_ns() > from)
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
pub(crate) mod tests {
    use super::*;
    use kstall_common::{events::kind, framing::CLIENT_ID_CAP};

    use crate::listeners::{Plane, SecurityProtocol};

    pub(crate) fn stall(tid: u32, start_ms: u64, dur_ms: u64, miss: bool, fetch_client: Option<&str>) -> StallEvent {
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

    /// An answered Produce (acks unknown) on thread `tid`.
    fn record_produce(a: &mut Attribution, tid: u32, listener: Option<&Listener>, timing: &RequestTiming) -> Attributed {
        let facts = RequestFacts::default();
        a.record_request(&Answered { tid, listener, api_key: PRODUCE, facts: &facts, timing: *timing })
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
        record_produce(&mut a, 1, None, &produce(103, 109));
        // Same time, another thread: not stalled.
        record_produce(&mut a, 2, None, &produce(103, 104));
        // Same thread, after the miss: not stalled.
        for i in 0..97 {
            record_produce(&mut a, 1, None, &produce(200 + i, 200 + i + 1));
        }
        let s = a.summary(&TopicNames::default());
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
        record_produce(&mut a, 1, None, &produce(99, 104));
        let s = a.summary(&TopicNames::default());
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
        let s = a.summary(&TopicNames::default());
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
        record_produce(&mut a, 1, Some(&plaintext), &produce(103, 109));
        record_produce(&mut a, 1, Some(&plaintext), &produce(200, 201));
        let s = a.summary(&TopicNames::default());
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

    fn answered(a: &mut Attribution, tid: u32, api_key: i16, facts: RequestFacts, timing: RequestTiming) -> Attributed {
        a.record_request(&Answered { tid, listener: None, api_key, facts: &facts, timing })
    }

    #[test]
    fn every_request_on_the_stalled_thread_is_delayed_whatever_its_api() {
        let mut a = Attribution::new(Duration::from_millis(1));
        a.record_stall(&stall(1, 100, 8, true, Some("cold-reader")), None, None);
        a.record_stall(&stall(1, 200, 4, false, None), None, None);
        let heartbeat = answered(&mut a, 1, 12, RequestFacts::default(), produce(102, 109));
        let miss = Delay { added_ns: 6_000_000, miss_ns: 6_000_000, replication_ns: 0 };
        assert_eq!(heartbeat, Attributed { delay: miss, cause: Some(Cause::PageCacheMiss) });
        // Overlapped by a miss and another cause: the miss names it, both add.
        let fetch = answered(&mut a, 1, FETCH, RequestFacts::default(), produce(105, 202));
        assert_eq!((fetch.delay.added_ns, fetch.delay.miss_ns, fetch.cause), (5_000_000, 3_000_000, Some(Cause::PageCacheMiss)));
        // Partial overlap with the slow call alone.
        let other = answered(&mut a, 1, FETCH, RequestFacts::default(), produce(203, 210));
        assert_eq!((other.delay.added_ns, other.cause), (1_000_000, Some(Cause::OffCpu)));
        // Another thread, same time: nothing.
        assert_eq!(answered(&mut a, 2, FETCH, RequestFacts::default(), produce(101, 109)), Attributed::default());
        let s = a.summary(&TopicNames::default());
        assert_eq!(s.produce.requests, 0, "no Produce was answered");
        let miss = s.worst.iter().find(|w| w.cause == Cause::PageCacheMiss).unwrap();
        assert_eq!((miss.delayed_requests, miss.delayed_produce), (2, 0));
    }

    #[test]
    fn acks_all_produce_waits_on_a_follower_whose_fetch_thread_is_stalled() {
        let mut a = Attribution::new(Duration::from_millis(1));
        let follower = RequestFacts { follower: Some(2), ..Default::default() };
        let acks_all = RequestFacts { acks: Some(-1), ..Default::default() };
        let acks_one = RequestFacts { acks: Some(1), ..Default::default() };
        // Broker 2's Fetch is served by thread 3, where a cold read stalls 100..150 ms.
        answered(&mut a, 3, FETCH, follower.clone(), produce(50, 60));
        a.record_stall(&stall(3, 100, 50, true, Some("cold-reader")), None, None);
        let held = answered(&mut a, 3, FETCH, follower.clone(), produce(99, 151));
        assert_eq!(held.delay.added_ns, 50_000_000);
        // The producer on thread 1 (clean): its acks=all request waited 40 ms of it.
        let p = answered(&mut a, 1, PRODUCE, acks_all.clone(), produce(110, 152));
        assert_eq!((p.delay.added_ns, p.delay.replication_ns, p.cause), (0, 40_000_000, None));
        // acks=1 does not wait on followers; a Produce on the follower's own thread counts as
        // stalled there, not twice.
        assert_eq!(answered(&mut a, 1, PRODUCE, acks_one, produce(110, 120)).delay.replication_ns, 0);
        let own = answered(&mut a, 3, PRODUCE, acks_all.clone(), produce(140, 160));
        assert_eq!((own.delay.added_ns, own.delay.replication_ns), (10_000_000, 0));
        for i in 0..5 {
            answered(&mut a, 1, PRODUCE, acks_all.clone(), produce(200 + i, 201 + i));
        }
        answered(&mut a, 1, PRODUCE, RequestFacts::default(), produce(300, 301));
        let s = a.summary(&TopicNames::default());
        let r = &s.replication;
        assert_eq!((r.produce_acks_all, r.produce_acks_unknown, r.produce_delayed), (7, 1, 1));
        assert_eq!((r.produce_added_ns, r.produce_miss_ns), (40_000_000, 40_000_000));
        assert_eq!(
            r.followers,
            [FollowerFetches { broker_id: 2, tid: 3, listener: None, fetches: 2, stalled_fetches: 1, added_ns: 50_000_000 }]
        );
        assert_eq!(r.slowest_1pct_delayed, 1, "the 42 ms Produce is the slowest");
        assert_eq!(s.worst[0].delayed_replication, 1);
        assert_eq!(s.by_thread[0].top_reader.as_deref(), Some("cold-reader"));
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn produce_overlapped_by_a_miss_and_another_cause_counts_as_stalled_by_the_miss() {
        let plaintext = Listener { name: "PLAINTEXT".into(), security_protocol: SecurityProtocol::Plaintext, plane: Plane::Data };
        let mut a = Attribution::new(Duration::from_millis(1));
        // On thread 1: a miss 100..108 ms, then an off-CPU slow call 110..114 ms.
        a.record_stall(&stall(1, 100, 8, true, Some("cold-reader")), None, Some(&plaintext));
        a.record_stall(&stall(1, 110, 4, false, None), None, Some(&plaintext));
        // A Produce 104..112 ms: 4 ms of the miss and 2 ms of the slow call.
        let p = record_produce(&mut a, 1, Some(&plaintext), &produce(104, 112));
        let both = Delay { added_ns: 6 * MS, miss_ns: 4 * MS, replication_ns: 0 };
        assert_eq!(p, Attributed { delay: both, cause: Some(Cause::PageCacheMiss) });
        // A Produce 113..120 ms: 1 ms of the slow call alone.
        let q = record_produce(&mut a, 1, Some(&plaintext), &produce(113, 120));
        assert_eq!(q, Attributed { delay: Delay { added_ns: MS, ..Default::default() }, cause: Some(Cause::OffCpu) });
        let s = a.summary(&TopicNames::default());
        let pr = &s.produce;
        assert_eq!((pr.requests, pr.stalled_requests, pr.stalled_by_miss), (2, 2, 1));
        // Both causes' time is added; only the miss's is miss time.
        assert_eq!((pr.stall_ns_added, pr.miss_ns_added), (7 * MS, 4 * MS));
        assert_eq!(
            pr.by_listener,
            [ListenerProduce { listener: Some("PLAINTEXT".into()), requests: 2, stalled_requests: 2, stalled_by_miss: 1 }]
        );
        // Each stall counts the Produce it overlapped, and for how long.
        let per_stall: Vec<(Cause, u64, u64, u64)> =
            s.worst.iter().map(|w| (w.cause, w.delayed_requests, w.delayed_produce, w.delayed_produce_ns)).collect();
        assert_eq!(per_stall, [(Cause::PageCacheMiss, 1, 1, 4 * MS), (Cause::OffCpu, 2, 2, 3 * MS)]);
    }

    #[test]
    fn partial_overlap_adds_only_the_time_inside_the_request() {
        let mut a = Attribution::new(Duration::from_millis(1));
        // Began 10 ms before the request, ended 3 ms into it.
        a.record_stall(&stall(1, 90, 13, true, None), None, None);
        let began_before = record_produce(&mut a, 1, None, &produce(100, 110));
        assert_eq!((began_before.delay.added_ns, began_before.delay.miss_ns), (3 * MS, 3 * MS));
        // Began 4 ms into the request, ended 20 ms after it.
        a.record_stall(&stall(1, 204, 26, true, None), None, None);
        let ended_after = record_produce(&mut a, 1, None, &produce(200, 210));
        assert_eq!((ended_after.delay.added_ns, ended_after.delay.miss_ns), (6 * MS, 6 * MS));
        // Inside the request entirely, and around it entirely.
        a.record_stall(&stall(2, 302, 2, false, None), None, None);
        assert_eq!(record_produce(&mut a, 2, None, &produce(300, 310)).delay.added_ns, 2 * MS);
        a.record_stall(&stall(3, 395, 20, false, None), None, None);
        assert_eq!(record_produce(&mut a, 3, None, &produce(400, 410)).delay.added_ns, 10 * MS);
        // Touching without overlapping: the stall ended as the request began.
        a.record_stall(&stall(4, 490, 10, true, None), None, None);
        assert_eq!(record_produce(&mut a, 4, None, &produce(500, 510)), Attributed::default());
        // The socket wait counts: a request that arrived before its read is joined from its arrival.
        a.record_stall(&stall(5, 600, 10, true, None), None, None);
        let waited = RequestTiming { arrival_ns: Some(602 * MS), read_start_ns: 610 * MS, read_done_ns: 611 * MS, response_done_ns: 615 * MS };
        assert_eq!(record_produce(&mut a, 5, None, &waited).delay.added_ns, 8 * MS);
        let unknown_arrival = RequestTiming { arrival_ns: None, ..waited };
        a.record_stall(&stall(6, 600, 10, true, None), None, None);
        assert_eq!(record_produce(&mut a, 6, None, &unknown_arrival), Attributed::default());
        let s = a.summary(&TopicNames::default());
        assert_eq!((s.produce.requests, s.produce.stalled_requests, s.produce.stalled_by_miss), (7, 5, 3));
        assert_eq!((s.produce.stall_ns_added, s.produce.miss_ns_added), ((3 + 6 + 2 + 10 + 8) * MS, (3 + 6 + 8) * MS));
    }

    #[test]
    fn a_thread_keeps_its_newest_stalls_and_older_ones_delay_nothing_more() {
        let mut a = Attribution::new(Duration::from_millis(1));
        // The first stall is the longest (50 ms at 0 ms); then STALLS_PER_THREAD more of 1 ms,
        // 10 ms apart from 100 ms: the first is pushed out.
        a.record_stall(&stall(1, 0, 50, true, Some("early")), None, None);
        for i in 0..STALLS_PER_THREAD as u64 {
            a.record_stall(&stall(1, 100 + 10 * i, 1, false, None), None, None);
        }
        assert_eq!(a.recent[&1].len(), STALLS_PER_THREAD);
        assert_eq!(a.recent[&1].front().map(|s| s.start_ns), Some(100 * MS));
        // A late Produce whose window covers the first stall: only the kept ones overlap it.
        let late = record_produce(&mut a, 1, None, &produce(10, 105));
        assert_eq!((late.delay.added_ns, late.delay.miss_ns, late.cause), (MS, 0, Some(Cause::OffCpu)));
        // Every kept one is found, oldest to newest (the walk is not cut short).
        let all = record_produce(&mut a, 1, None, &produce(0, 100 + 10 * STALLS_PER_THREAD as u64));
        assert_eq!(all.delay.added_ns, STALLS_PER_THREAD as u64 * MS);
        let s = a.summary(&TopicNames::default());
        // The pushed-out stall still counts everywhere but in what it delayed.
        assert_eq!(s.stalls, 1 + STALLS_PER_THREAD as u64);
        assert_eq!((s.worst[0].duration_ns, s.worst[0].delayed_produce), (50 * MS, 0));
        assert_eq!(s.cold_readers.iter().map(|r| (r.name.as_str(), r.stalls)).collect::<Vec<_>>(), [("early", 1)]);

        // A stall ended more than STALL_MEMORY_NS before a new one began is forgotten too.
        let mut b = Attribution::new(Duration::from_millis(1));
        b.record_stall(&stall(2, 0, 5, true, None), None, None);
        b.record_stall(&stall(2, STALL_MEMORY_NS / MS + 4, 1, true, None), None, None);
        assert_eq!(b.recent[&2].len(), 2, "ended 120 s - 1 ms before: still kept");
        b.record_stall(&stall(2, STALL_MEMORY_NS / MS + 6, 1, true, None), None, None);
        assert_eq!(b.recent[&2].iter().map(|s| s.start_ns / MS).collect::<Vec<_>>(), [STALL_MEMORY_NS / MS + 4, STALL_MEMORY_NS / MS + 6]);
    }

    #[test]
    fn cold_readers_and_partitions_past_the_bounds_are_other() {
        let mut a = Attribution::new(Duration::from_millis(1));
        // MAX_TRACKED_NAMES + 10 readers, one miss each on thread 1 (reader i: i + 1 ms), then
        // one more miss by the first reader.
        let n = MAX_TRACKED_NAMES as u64 + 10;
        for i in 0..n {
            a.record_stall(&stall(1, 1000 * i, 1 + i, true, Some(&format!("r{i}"))), None, None);
        }
        a.record_stall(&stall(1, 1000 * n, 1, true, Some("r0")), None, None);
        let s = a.summary(&TopicNames::default());
        let readers: Vec<(&str, u64, u64)> = s.cold_readers.iter().map(|r| (r.name.as_str(), r.stalls, r.stall_ns / MS)).collect();
        // The 10 untracked ones, 257..266 ms each, are one "(other)" row.
        let other_ms = (MAX_TRACKED_NAMES as u64 + 1..=n).sum::<u64>();
        assert_eq!(readers[0], ("(other)", 10, other_ms));
        assert_eq!(readers[1], ("r255", 1, 256));
        assert_eq!(readers.len(), TOP_ROWS);
        // Per thread, NAMES_PER_THREAD names are kept: "(other)" has the most miss time.
        let t = &s.by_thread[0];
        assert_eq!((t.cause, t.stalls, t.top_reader.as_deref()), (Cause::PageCacheMiss, n + 1, Some("(other)")));
        assert_eq!(t.top_partition.as_deref(), Some("(unknown file)"));
    }
}
