//! The one aggregation core every presenter reads: per-thread kernel histograms in, per
//! (role, syscall, page-cache verdict) summaries with percentiles out. Threads that exit are
//! folded into their role's totals and removed from the kernel map, so the map stays bounded
//! on brokers whose threads come and go.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use hdrhistogram::Histogram;
use kstall_common::{
    BUCKETS, CacheResult, HistKey, LatencyHist, Syscall, bucket_lower_ns, bucket_upper_ns, counter,
};
use serde::Serialize;

use crate::{
    attach::{Event, Probes},
    discovery::{self, Broker},
    findings::{self, Finding},
    listeners::{self, BrokerConfig, Listener, ListenerInfo, Plane},
    protocol::PRODUCE,
    requests::{ControllerApiRow, RequestStats, RequestSummary},
    roles::{self, Activity, Role, RoleSource},
    stalls::{Attribution, StallSummary},
    timeline::Timeline,
};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    pub role: Role,
    /// Network threads' rows are split per listener, when the thread's name tells it.
    pub listener: Option<String>,
    pub syscall: Syscall,
    pub cache: CacheResult,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadInfo {
    pub tid: u32,
    pub comm: String,
    pub jvm_name: Option<String>,
    pub role: Role,
    pub role_source: RoleSource,
    /// The listener a network thread (or acceptor) serves, from its JVM name.
    pub listener: Option<Listener>,
}

impl ThreadInfo {
    /// Its JVM name, else its comm.
    pub fn name(&self) -> &str {
        self.jvm_name.as_deref().unwrap_or(&self.comm)
    }
}

/// Percentiles in nanoseconds, from an hdrhistogram filled from the kernel's buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BucketCount {
    pub lower_ns: u64,
    /// Exclusive; null for the overflow bucket.
    pub upper_ns: Option<u64>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub role: Role,
    /// The listener of a network-role row; null for other roles, and for network threads whose
    /// name does not tell.
    pub listener: Option<String>,
    pub syscall: &'static str,
    /// "hit", "miss", or "none" (no file data read).
    pub cache: &'static str,
    pub count: u64,
    #[serde(flatten)]
    pub percentiles: Percentiles,
    pub mean_ns: u64,
    pub bytes: u64,
    pub pages_added: u64,
    pub blocked_ns: u64,
    /// Non-empty buckets of the kernel histogram.
    pub buckets: Vec<BucketCount>,
    #[serde(skip)]
    pub key: RowKey,
    #[serde(skip)]
    pub hist: LatencyHist,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Lost {
    /// Calls not recorded because the histogram map was full.
    pub histogram_map_full: u64,
    /// Calls not timed because the in-flight map was full.
    pub in_flight_map_full: u64,
    /// Request and stall records dropped because the ring buffer was full: request latency
    /// and attribution miss them (the syscall histograms do not).
    pub events: u64,
}

/// How well the Kafka framing could be followed on the network threads' sockets.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProtocolHealth {
    pub requests_parsed: u64,
    pub requests_answered: u64,
    /// Connections whose bytes looked like TLS: no request view for them.
    pub tls_connections: u64,
    /// Reads that did not parse as Kafka framing (the parser resyncs at the next read).
    pub framing_errors: u64,
    /// Responses to requests read before kstall attached (or aged out of the kernel map).
    pub responses_unmatched: u64,
    /// The kernel shows socket reads and data arrival (sock tracepoints, 6.3+, or kprobes):
    /// socket wait is measured.
    pub socket_wait_measured: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeInfo {
    pub attached: Vec<String>,
    pub unavailable: Vec<String>,
    /// How each kind of optional kernel evidence is gathered here, or why not.
    pub evidence: Vec<crate::attach::EvidenceStatus>,
    pub attach_ms: f64,
}

/// Everything a presenter shows.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub broker: Broker,
    pub elapsed_seconds: f64,
    pub rows: Vec<Row>,
    /// Live threads seen doing traced syscalls, by role.
    pub roles: BTreeMap<Role, Vec<u32>>,
    pub threads: Vec<ThreadInfo>,
    /// The broker's listeners, from its properties file and its network threads' names.
    pub listeners: Vec<ListenerInfo>,
    /// Threads that exited during the trace; their calls stay in `rows`.
    pub exited_threads: u64,
    pub thread_names: &'static str,
    pub probes: ProbeInfo,
    pub lost: Lost,
    pub protocol: ProtocolHealth,
    pub requests: RequestSummary,
    /// Requests answered by controller-plane network threads (the cluster's own traffic:
    /// KRaft's BrokerHeartbeat, Vote, raft Fetch, ...): not in `requests`, attribution or findings.
    pub controller_requests: Vec<ControllerApiRow>,
    pub stalls: StallSummary,
    pub findings: Vec<Finding>,
    /// What the broker's properties file says, when kstall could read it.
    #[serde(skip)]
    pub broker_config: Option<BrokerConfig>,
}

impl Summary {
    /// A thread's JVM name, else its comm, else its tid (threads that exited).
    pub fn thread_name(&self, tid: u32) -> String {
        self.threads.iter().find(|t| t.tid == tid).map_or(tid.to_string(), |t| t.name().to_string())
    }

    /// The listener of this name, as the report describes it.
    pub fn listener(&self, name: &str) -> Option<&ListenerInfo> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Live threads whose role only a JVM name would settle: their comm is ambiguous and jcmd
    /// has not named them yet. (Unnamed threads whose comm decides do not justify a new jcmd,
    /// which costs the broker host a JVM start.)
    pub fn threads_needing_names(&self) -> usize {
        self.threads.iter().filter(|t| t.role_source == RoleSource::Behaviour).count()
    }

    /// Share of the traced time the network threads spent outside epoll_wait, that is, busy
    /// with their connections (each of which waits meanwhile). None without network threads.
    pub fn network_busy_share(&self) -> Option<f64> {
        let threads = self.roles.get(&Role::Network)?.len();
        let idle_ns: u64 = self
            .rows
            .iter()
            .filter(|r| r.role == Role::Network && matches!(r.key.syscall, Syscall::EpollWait | Syscall::EpollPwait))
            .map(|r| r.hist.total_ns)
            .sum();
        let traced_ns = threads as f64 * self.elapsed_seconds * 1e9;
        (traced_ns > 0.0).then(|| (1.0 - idle_ns as f64 / traced_ns).clamp(0.0, 1.0))
    }
}

pub fn cache_label(cache: CacheResult) -> &'static str {
    match cache {
        CacheResult::NoFileRead => "none",
        CacheResult::Hit => "hit",
        CacheResult::Miss => "miss",
    }
}

/// Records held while the first jcmd names the threads (seconds), so every request is put on
/// its listener's plane from the start; past this many, the oldest go through unnamed.
const HELD_MAX: usize = 16_384;

pub struct Aggregator {
    broker: Broker,
    config: Option<BrokerConfig>,
    /// The listener of each thread whose JVM name tells one (exited threads kept: their
    /// records may still be held).
    thread_listeners: HashMap<u32, Listener>,
    /// Records waiting for the first thread names; None once they came (or never will).
    held: Option<VecDeque<(Event, Option<PathBuf>)>>,
    started: Instant,
    jvm_names: HashMap<u32, String>,
    /// Last comm seen per thread, so a thread that exits keeps its role when folded.
    comms: HashMap<u32, String>,
    retired: BTreeMap<RowKey, LatencyHist>,
    exited_threads: u64,
    requests: RequestStats,
    attribution: Attribution,
    requests_answered: u64,
    timeline: Timeline,
}

impl Aggregator {
    pub fn new(broker: Broker, config: Option<BrokerConfig>, stall_threshold: Duration) -> Aggregator {
        Aggregator {
            attribution: Attribution::new(broker.pid, stall_threshold),
            broker,
            config,
            thread_listeners: HashMap::new(),
            held: Some(VecDeque::new()),
            started: Instant::now(),
            jvm_names: HashMap::new(),
            comms: HashMap::new(),
            retired: BTreeMap::new(),
            exited_threads: 0,
            requests: RequestStats::default(),
            requests_answered: 0,
            timeline: Timeline::new(monotonic_ns()),
        }
    }

    /// Produce latencies and stalls over time since tracing started.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// One record from the kernel: an answered request or a stall. Held, in order, until the
    /// first thread names come; a stall's file is named at once, while its fd is still open.
    pub fn ingest(&mut self, event: Event) {
        let file = match &event {
            Event::Stall(stall) => self.attribution.file_of(stall),
            Event::Request(_) => None,
        };
        if let Some(held) = &mut self.held {
            held.push_back((event, file));
            if held.len() > HELD_MAX
                && let Some((oldest, file)) = held.pop_front()
            {
                self.process(oldest, file);
            }
            return;
        }
        self.process(event, file);
    }

    /// `file`: what a stall read, named at ingest.
    fn process(&mut self, event: Event, file: Option<PathBuf>) {
        match event {
            Event::Stall(stall) => {
                let cause = self.attribution.record_named_stall(&stall, file, self.thread_listeners.get(&stall.tid));
                self.timeline.stall(stall.start_ns, stall.duration_ns, cause, stall.tid);
            }
            Event::Request(request) => {
                self.requests_answered += 1;
                let listener = self.thread_listeners.get(&request.tid);
                let timing = self.requests.record(&request, listener);
                // The controller plane's requests are kept apart from the clients'.
                if request.id.api_key == PRODUCE && listener.is_none_or(|l| l.plane == Plane::Data) {
                    let stalled_by = self.attribution.record_produce(request.tid, listener, &timing);
                    self.timeline.produce(timing.start_ns(), timing.total_ns(), stalled_by);
                }
            }
        }
    }

    /// Some thread seen so far has a comm that cannot tell its role (modern
    /// Kafka's are all `data-plane-kafk`) and no JVM name yet.
    pub fn comms_need_jvm_names(&self) -> bool {
        self.comms.iter().any(|(tid, comm)| !self.jvm_names.contains_key(tid) && roles::role_from_name(comm).is_none())
    }

    /// Full JVM thread names, as they arrive from jcmd.
    pub fn add_jvm_names(&mut self, names: HashMap<u32, String>) {
        for (tid, name) in &names {
            match listeners::thread_listener(name, self.config.as_ref()) {
                Some(l) => self.thread_listeners.insert(*tid, l),
                None => self.thread_listeners.remove(tid),
            };
        }
        self.jvm_names.extend(names);
        self.release_held();
    }

    /// No thread names will come (jcmd failed), or the session ends: held records go through.
    pub fn release_held(&mut self) {
        for (event, file) in self.held.take().unwrap_or_default() {
            self.process(event, file);
        }
    }

    /// Reads the kernel's histograms and produces a summary of everything since attach.
    pub fn refresh(&mut self, probes: &mut Probes) -> Result<Summary> {
        let entries = probes.histograms()?;
        let comms = discovery::thread_comms(self.broker.pid);
        self.comms.extend(comms.iter().map(|(tid, comm)| (*tid, comm.clone())));
        let threads = assign_roles(&entries, &self.comms, &self.jvm_names, &self.thread_listeners);
        probes.set_network_threads(&network_threads(&threads, &comms, &self.jvm_names))?;

        // Fold exited threads (no longer in /proc) into their role's totals. A listing of
        // /proc/PID/task taken while threads exit can skip live ones, so each thread missing
        // from it is asked for by name before its entry goes: deleting a live thread's entry
        // would lose the calls it makes between this read and the delete.
        let mut exited_keys = Vec::new();
        let mut live_entries = Vec::with_capacity(entries.len());
        for (key, hist) in entries {
            match threads.get(&key.tid) {
                Some(t) if comms.contains_key(&key.tid) || discovery::thread_is_alive(self.broker.pid, key.tid) => {
                    live_entries.push((t.role, row_listener(t), key, hist))
                }
                Some(_) => exited_keys.push(key),
                None => {}
            }
        }
        if !exited_keys.is_empty() {
            // Folded as taken out, not as read above: a new thread with a reused tid may have
            // counted calls in between.
            for (key, hist) in probes.take_histograms(&exited_keys)? {
                if let Some(k) = threads.get(&key.tid).and_then(|t| row_key(t.role, row_listener(t), &key)) {
                    self.retired.entry(k).or_insert(LatencyHist::ZERO).merge(&hist);
                }
            }
            let mut tids: Vec<u32> = exited_keys.iter().map(|k| k.tid).collect();
            tids.sort_unstable();
            tids.dedup();
            self.exited_threads += tids.len() as u64;
            for tid in &tids {
                self.comms.remove(tid);
            }
        }

        let mut merged = self.retired.clone();
        for (role, listener, key, hist) in live_entries {
            if let Some(k) = row_key(role, listener, &key) {
                merged.entry(k).or_insert(LatencyHist::ZERO).merge(&hist);
            }
        }
        let live: Vec<ThreadInfo> =
            threads.into_values().filter(|t| comms.contains_key(&t.tid)).collect();
        let mut roles: BTreeMap<Role, Vec<u32>> = BTreeMap::new();
        for t in &live {
            roles.entry(t.role).or_default().push(t.tid);
        }
        let network_listeners: Vec<&Listener> =
            live.iter().filter(|t| t.role == Role::Network).filter_map(|t| t.listener.as_ref()).collect();
        let listeners = listeners::describe(self.config.as_ref(), &network_listeners);
        let counters = probes.counters()?;
        let elapsed_seconds = self.started.elapsed().as_secs_f64();
        let mut summary = Summary {
            broker: self.broker.clone(),
            elapsed_seconds,
            rows: merged.into_iter().map(|(k, h)| row(k, h)).collect(),
            roles,
            thread_names: if self.jvm_names.is_empty() { "comm" } else { "jvm" },
            threads: live,
            listeners,
            exited_threads: self.exited_threads,
            probes: ProbeInfo {
                attached: probes.attached.clone(),
                unavailable: probes.unavailable.clone(),
                evidence: probes.evidence.clone(),
                attach_ms: probes.attach_time.as_secs_f64() * 1e3,
            },
            lost: Lost {
                histogram_map_full: counters[counter::HIST_MAP_FULL as usize],
                in_flight_map_full: counters[counter::IN_FLIGHT_MAP_FULL as usize],
                events: counters[counter::EVENTS_LOST as usize],
            },
            protocol: ProtocolHealth {
                requests_parsed: counters[counter::REQUESTS_PARSED as usize],
                requests_answered: self.requests_answered,
                tls_connections: counters[counter::TLS_CONNECTIONS as usize],
                framing_errors: counters[counter::FRAMING_ERRORS as usize],
                responses_unmatched: counters[counter::RESPONSES_UNMATCHED as usize],
                socket_wait_measured: probes.have_socket_wait,
            },
            requests: self.requests.summary(elapsed_seconds),
            controller_requests: self.requests.controller_summary(elapsed_seconds),
            stalls: self.attribution.summary(),
            findings: Vec::new(),
            broker_config: self.config.clone(),
        };
        summary.findings = findings::findings(&summary);
        Ok(summary)
    }
}

fn row_key(role: Role, listener: Option<String>, key: &HistKey) -> Option<RowKey> {
    Some(RowKey { role, listener, syscall: Syscall::from_u8(key.syscall)?, cache: CacheResult::from_u8(key.cache)? })
}

/// The listener a thread's rows are split by: network threads' only.
fn row_listener(t: &ThreadInfo) -> Option<String> {
    t.listener.as_ref().filter(|_| t.role == Role::Network).map(|l| l.name.clone())
}

/// Role of every thread that has histograms, from its names and what its histograms show it doing.
pub fn assign_roles(
    entries: &[(HistKey, LatencyHist)],
    comms: &HashMap<u32, String>,
    jvm_names: &HashMap<u32, String>,
    thread_listeners: &HashMap<u32, Listener>,
) -> BTreeMap<u32, ThreadInfo> {
    let mut activity: BTreeMap<u32, Activity> = BTreeMap::new();
    for (key, hist) in entries {
        let a = activity.entry(key.tid).or_default();
        match (Syscall::from_u8(key.syscall), CacheResult::from_u8(key.cache)) {
            (Some(Syscall::Sendfile), _) => a.sendfile_calls += hist.count,
            (Some(Syscall::EpollWait | Syscall::EpollPwait), _) => a.epoll_wait_calls += hist.count,
            (
                Some(Syscall::Read | Syscall::Readv | Syscall::Write | Syscall::Writev),
                Some(CacheResult::NoFileRead),
            ) => a.socket_io_calls += hist.count,
            _ => {}
        }
    }
    activity
        .into_iter()
        .map(|(tid, a)| {
            let comm = comms.get(&tid).cloned().unwrap_or_default();
            let jvm_name = jvm_names.get(&tid).cloned();
            let (role, role_source) = roles::classify(jvm_name.as_deref(), &comm, &a);
            let listener = thread_listeners.get(&tid).cloned();
            (tid, ThreadInfo { tid, comm, jvm_name, role, role_source, listener })
        })
        .collect()
}

/// The clock bpf_ktime_get_ns() reads (CLOCK_MONOTONIC), in ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Live threads the kernel should treat as network threads: those with histograms by their
/// assigned role, the others (not yet seen in a traced call) by name alone.
fn network_threads(
    threads: &BTreeMap<u32, ThreadInfo>,
    live_comms: &HashMap<u32, String>,
    jvm_names: &HashMap<u32, String>,
) -> Vec<u32> {
    live_comms
        .iter()
        .filter(|(tid, comm)| match threads.get(tid) {
            Some(t) => t.role == Role::Network,
            None => {
                let name = jvm_names.get(tid).map(String::as_str);
                name.and_then(roles::role_from_name).or_else(|| roles::role_from_name(comm)) == Some(Role::Network)
            }
        })
        .map(|(tid, _)| *tid)
        .collect()
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

pub fn percentiles(h: &LatencyHist) -> Percentiles {
    const HIGHEST_NS: u64 = 1 << 40;
    let mut hdr = Histogram::<u64>::new_with_bounds(1, HIGHEST_NS, 3).expect("static bounds are valid");
    for (bucket, &n) in h.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
        let value = representative_ns(bucket, h.max_ns).min(HIGHEST_NS);
        hdr.record_n(value, n).expect("value within bounds");
    }
    if hdr.is_empty() {
        return Percentiles::default();
    }
    let at = |q: f64| hdr.value_at_quantile(q).min(h.max_ns);
    Percentiles { p50_ns: at(0.50), p90_ns: at(0.90), p99_ns: at(0.99), p999_ns: at(0.999), max_ns: h.max_ns }
}

pub fn row(key: RowKey, hist: LatencyHist) -> Row {
    let buckets = hist
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(b, &count)| BucketCount {
            lower_ns: bucket_lower_ns(b),
            upper_ns: (b < BUCKETS - 1).then(|| bucket_upper_ns(b)),
            count,
        })
        .collect();
    Row {
        role: key.role,
        listener: key.listener.clone(),
        syscall: key.syscall.name(),
        cache: cache_label(key.cache),
        count: hist.count,
        percentiles: percentiles(&hist),
        mean_ns: if hist.count > 0 { hist.total_ns / hist.count } else { 0 },
        bytes: hist.bytes,
        pages_added: hist.pages_added,
        blocked_ns: hist.blocked_ns,
        buckets,
        key,
        hist,
    }
}

/// A summary of nothing, for tests to fill in.
#[cfg(test)]
pub fn empty_summary() -> Summary {
    Summary {
        broker: Broker {
            pid: 1,
            main_class: "kafka.Kafka".into(),
            command_line: "java kafka.Kafka server.properties".into(),
            args: Vec::new(),
            exe: None,
        },
        elapsed_seconds: 10.0,
        rows: Vec::new(),
        roles: BTreeMap::new(),
        threads: Vec::new(),
        listeners: Vec::new(),
        exited_threads: 0,
        thread_names: "jvm",
        probes: ProbeInfo { attached: Vec::new(), unavailable: Vec::new(), evidence: Vec::new(), attach_ms: 0.0 },
        lost: Lost::default(),
        protocol: ProtocolHealth::default(),
        requests: RequestSummary::default(),
        controller_requests: Vec::new(),
        stalls: StallSummary::default(),
        findings: Vec::new(),
        broker_config: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kstall_common::{
        bucket_index,
        events::RequestEvent,
    };

    pub(crate) fn hist_of(latencies_ns: &[u64]) -> LatencyHist {
        let mut h = LatencyHist::ZERO;
        for &ns in latencies_ns {
            h.buckets[bucket_index(ns)] += 1;
            h.count += 1;
            h.total_ns += ns;
            h.max_ns = h.max_ns.max(ns);
        }
        h
    }

    fn within(actual: u64, expected: u64, rel: f64) -> bool {
        (actual as f64 - expected as f64).abs() <= expected as f64 * rel
    }

    #[test]
    fn percentiles_of_a_bimodal_sendfile_distribution() {
        // 990 cache hits around 13 us, 10 misses around 8 ms: the shape of KAFKA-7504.
        let mut lat: Vec<u64> = (0..990).map(|i| 10_000 + (i % 7) * 1_000).collect();
        lat.extend((0..10).map(|i| 8_000_000 + i * 100_000));
        let p = percentiles(&hist_of(&lat));
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
        let h = hist_of(&[1_500_000]);
        assert_eq!(percentiles(&h).p50_ns, 1_500_000);
    }

    #[test]
    fn merging_threads_into_a_role_adds_counts() {
        let a = hist_of(&[5_000, 6_000, 9_000_000]);
        let b = hist_of(&[7_000, 12_000_000]);
        let mut m = a;
        m.merge(&b);
        assert_eq!(m.count, 5);
        assert_eq!(m.max_ns, 12_000_000);
        assert_eq!(m.buckets.iter().sum::<u64>(), 5);
        assert_eq!(m, hist_of(&[5_000, 6_000, 9_000_000, 7_000, 12_000_000]));
    }

    #[test]
    fn roles_from_names_and_behaviour() {
        let key = |tid, s: Syscall, c: CacheResult| HistKey { tid, syscall: s as u8, cache: c as u8, _pad: [0; 2] };
        let entries = vec![
            (key(10, Syscall::Sendfile, CacheResult::Miss), hist_of(&[8_000_000])),
            (key(11, Syscall::Write, CacheResult::NoFileRead), hist_of(&[3_000])),
            (key(12, Syscall::Read, CacheResult::NoFileRead), hist_of(&[2_000])),
            (key(12, Syscall::EpollWait, CacheResult::NoFileRead), hist_of(&[2_000_000])),
        ];
        let comms: HashMap<u32, String> =
            [(10, "data-plane-kafk"), (11, "data-plane-kafk"), (12, "kafka-scheduler")]
                .into_iter()
                .map(|(t, c)| (t, c.to_string()))
                .collect();
        let roles = assign_roles(&entries, &comms, &HashMap::new(), &HashMap::new());
        assert_eq!(roles[&10].role, Role::Network);
        assert_eq!(roles[&10].role_source, RoleSource::Behaviour);
        assert_eq!(roles[&11].role, Role::RequestHandler);
        // A named non-Kafka thread stays "other" whatever it does.
        assert_eq!(roles[&12].role, Role::Other);
        let names: HashMap<u32, String> = [(11, "data-plane-kafka-network-thread-0".to_string())].into();
        let roles = assign_roles(&entries, &comms, &names, &HashMap::new());
        assert_eq!((roles[&11].role, roles[&11].role_source), (Role::Network, RoleSource::JvmName));
    }

    fn request(tid: u32, fd: u32, api_key: i16, client: &str, arrival: u64, done: u64) -> RequestEvent {
        crate::requests::tests::request_event(tid, fd, api_key, client, arrival, arrival + 5_000, done)
    }

    /// The parts of a summary the records make (refresh adds the kernel's histograms).
    fn summary_of(agg: &Aggregator) -> Summary {
        let mut s = empty_summary();
        s.threads = agg
            .thread_listeners
            .iter()
            .map(|(&tid, l)| ThreadInfo {
                tid,
                comm: "data-plane-kafk".into(),
                jvm_name: agg.jvm_names.get(&tid).cloned(),
                role: Role::Network,
                role_source: RoleSource::JvmName,
                listener: Some(l.clone()),
            })
            .collect();
        let network: Vec<&Listener> = s.threads.iter().filter_map(|t| t.listener.as_ref()).collect();
        s.listeners = listeners::describe(agg.config.as_ref(), &network);
        s.requests = agg.requests.summary(s.elapsed_seconds);
        s.controller_requests = agg.requests.controller_summary(s.elapsed_seconds);
        s.stalls = agg.attribution.summary();
        s.findings = findings::findings(&s);
        s
    }

    #[test]
    fn controller_plane_requests_stay_out_of_client_rows_and_findings() {
        let text = "process.roles=broker,controller\nnode.id=1\nlisteners=PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093\ncontroller.listener.names=CONTROLLER\n";
        let config = BrokerConfig::from_properties("server.properties", &listeners::parse_properties(text));
        let mut agg = Aggregator::new(empty_summary().broker, Some(config), Duration::from_millis(1));
        let (controller_tid, data_tid) = (20, 21);
        let ms = 1_000_000;
        // One request at a time on each connection: the broker's own heartbeats (and, to be
        // sure nothing of the controller plane reaches sync-producer detection or attribution,
        // Produce requests) to its CONTROLLER listener; a client's Produce to PLAINTEXT.
        let mut done = [0u64; 2];
        for i in 0..30u64 {
            for (n, (tid, fd, client)) in [(controller_tid, 5, "raft-client-1"), (data_tid, 6, "app")].into_iter().enumerate() {
                let arrival = if i == 0 { 10 * ms } else { done[n] + 50_000 };
                done[n] = arrival + 2 * ms;
                let api = if tid == controller_tid && i % 2 == 0 { 63 } else { PRODUCE };
                agg.ingest(Event::Request(request(tid, fd, api, client, arrival, done[n])));
            }
        }
        // Held until the threads are named.
        assert!(agg.requests.summary(1.0).apis.is_empty());
        agg.add_jvm_names(HashMap::from([
            (controller_tid, "data-plane-kafka-network-thread-1-CONTROLLER-PLAINTEXT-0".to_string()),
            (data_tid, "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0".to_string()),
        ]));
        let s = summary_of(&agg);
        let clients: Vec<(&str, Option<&str>, &str, u64)> =
            s.requests.clients.iter().map(|c| (c.client_id.as_str(), c.listener.as_deref(), c.api, c.count)).collect();
        assert_eq!(clients, [("app", Some("PLAINTEXT"), "Produce", 30)]);
        assert_eq!(s.requests.apis.iter().map(|a| (a.api, a.count)).collect::<Vec<_>>(), [("Produce", 30)]);
        let controller: Vec<(&str, &str, u64)> = s.controller_requests.iter().map(|c| (c.listener.as_str(), c.api, c.count)).collect();
        assert_eq!(controller, [("CONTROLLER", "Produce", 15), ("CONTROLLER", "BrokerHeartbeat", 15)]);
        assert_eq!(s.stalls.produce.requests, 30, "only the clients' Produce is attributed");
        assert_eq!(agg.timeline().produce_seen, 30);
        assert_eq!(s.requests.sync_producers.iter().map(|p| p.client_id.as_str()).collect::<Vec<_>>(), ["app"]);
        let findings: Vec<&Finding> = s.findings.iter().filter(|f| f.id == "synchronous_producer").collect();
        assert_eq!(findings.len(), 1);
        assert!(findings[0].title.contains("\"app\""));
        assert!(s.findings.iter().all(|f| !f.detail.contains("raft-client") && !f.title.contains("raft-client")), "{:?}", s.findings);
        let planes: Vec<(&str, Plane)> = s.listeners.iter().map(|l| (l.name.as_str(), l.plane)).collect();
        assert_eq!(planes, [("PLAINTEXT", Plane::Data), ("CONTROLLER", Plane::Controller)]);
        // Once named, records go straight through.
        agg.ingest(Event::Request(request(data_tid, 6, 3, "app", 500 * ms, 501 * ms)));
        assert_eq!(agg.requests.summary(1.0).apis.len(), 2);
    }

    #[test]
    fn network_rows_split_by_listener() {
        let key = |tid, s: Syscall| HistKey { tid, syscall: s as u8, cache: CacheResult::NoFileRead as u8, _pad: [0; 2] };
        let entries = vec![
            (key(30, Syscall::Read), hist_of(&[3_000])),
            (key(31, Syscall::Read), hist_of(&[3_000])),
            (key(32, Syscall::Read), hist_of(&[3_000])),
        ];
        let comms: HashMap<u32, String> = [30, 31, 32].into_iter().map(|t| (t, "data-plane-kafk".to_string())).collect();
        let names: HashMap<u32, String> = HashMap::from([
            (30, "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0".to_string()),
            (31, "data-plane-kafka-network-thread-1-SSL-SSL-1".to_string()),
            (32, "data-plane-kafka-request-handler-0".to_string()),
        ]);
        let thread_listeners: HashMap<u32, Listener> =
            names.iter().filter_map(|(tid, n)| Some((*tid, listeners::thread_listener(n, None)?))).collect();
        let threads = assign_roles(&entries, &comms, &names, &thread_listeners);
        let keys: Vec<RowKey> =
            entries.iter().filter_map(|(k, _)| row_key(threads[&k.tid].role, row_listener(&threads[&k.tid]), k)).collect();
        let labels: Vec<String> = keys.into_iter().map(|k| crate::output::role_cell(&row(k, hist_of(&[1])))).collect();
        assert_eq!(labels, ["network PLAINTEXT", "network SSL", "request-handler"]);
        let json = serde_json::to_value(row(row_key(Role::Network, Some("SSL".into()), &entries[0].0).unwrap(), hist_of(&[1]))).unwrap();
        assert_eq!(json["listener"], "SSL");
    }
}
