//! The one aggregation core every presenter reads: per-thread kernel histograms in, per
//! (role, syscall, page-cache verdict) summaries with percentiles out. Threads that exit are
//! folded into their role's totals and removed from the kernel map, so the map stays bounded
//! on brokers whose threads come and go.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    path::PathBuf,
    time::Duration,
};

use kstall_common::{CacheResult, HistKey, LatencyHist, Syscall, counter};

use crate::{
    broker::Broker,
    findings,
    kafka::{PRODUCE, RequestFacts, Topic, TopicNames},
    kernel::{Event, ProbeStatus},
    listeners::{self, BrokerConfig, Listener, Plane},
    requests::{RequestStats, RequestTiming},
    roles::{self, Activity, Role},
    stalls::{Answered, Attributed, Attribution, StallSummary},
    summary::{Lost, ProtocolHealth, Row, RowKey, Summary, ThreadInfo, ThreadNames},
    timeline::Timeline,
};

/// Records held while the first jcmd names the threads (seconds), so every request is put on
/// its listener's plane from the start; past this many, the oldest go through unnamed.
const HELD_MAX: usize = 16_384;

/// What the session read at one refresh, in one go.
pub struct Snapshot {
    /// Every (thread, syscall, verdict) entry of the kernel's histogram map.
    pub histograms: Vec<(HistKey, LatencyHist)>,
    /// Entries of that map the read could not get (see [`Lost::histogram_entries_unread`]).
    pub histograms_unread: u64,
    /// The broker's threads as /proc listed them: tid -> comm.
    pub comms: HashMap<u32, String>,
    /// Threads with histograms that the listing missed but that are alive when asked for by
    /// tid (a listing taken while threads exit can skip live ones).
    pub alive_unlisted: HashSet<u32>,
    /// The kernel's counters, summed over CPUs, indexed by `kstall_common::counter`.
    pub counters: [u64; counter::COUNT as usize],
    /// Runs of the probes the kernel skipped (see [`Lost::probe_runs_skipped`]).
    pub probe_runs_skipped: u64,
    /// Since tracing started.
    pub elapsed: Duration,
}

/// What the session took out of the kernel for [`Observed::exited`].
#[derive(Default)]
pub struct Taken {
    /// The entries taken, each as it was when deleted.
    pub entries: Vec<(HistKey, LatencyHist)>,
    /// Entries that could not be taken: they stay in the kernel for the next refresh, and are
    /// missing from this summary.
    pub failed: Vec<HistKey>,
}

/// What [`Aggregator::observe`] asks of the session before [`Aggregator::summarize`].
pub struct Observed {
    /// The threads the kernel should follow Kafka framing on (live network threads).
    pub network_threads: Vec<u32>,
    /// Entries of threads that exited: take them out of the kernel's map (and pass what was
    /// taken to `summarize`), so the map stays bounded on brokers whose threads come and go.
    pub exited: Vec<HistKey>,
    threads: BTreeMap<u32, ThreadInfo>,
    live_entries: Vec<(RowKey, LatencyHist)>,
    histograms_unread: u64,
    live_comms: HashMap<u32, String>,
    counters: [u64; counter::COUNT as usize],
    probe_runs_skipped: u64,
    elapsed: Duration,
}

pub struct Aggregator {
    broker: Broker,
    config: Option<BrokerConfig>,
    probes: ProbeStatus,
    /// The listener of each thread whose JVM name tells one (exited threads kept: their
    /// records may still be held).
    thread_listeners: HashMap<u32, Listener>,
    /// Records waiting for the first thread names; None once they came (or never will).
    held: Option<VecDeque<(Event, Option<PathBuf>)>>,
    jvm_names: HashMap<u32, String>,
    /// Last comm seen per thread, so a thread that exits keeps its role when folded.
    comms: HashMap<u32, String>,
    retired: BTreeMap<RowKey, LatencyHist>,
    exited_threads: u64,
    requests: RequestStats,
    /// Topic ids to names, from the session (the broker's log directories).
    topic_names: TopicNames,
    /// A request named a topic id `topic_names` lacks since they were last set.
    unknown_topic_id: bool,
    attribution: Attribution,
    requests_answered: u64,
    timeline: Timeline,
}

/// What the kernel side gives on this host, as the session attached it.
pub struct KernelSide {
    pub probes: ProbeStatus,
    /// CLOCK_MONOTONIC (the clock of the kernel's timestamps) when tracing started, in ns.
    pub start_ns: u64,
}

impl Aggregator {
    pub fn new(broker: Broker, config: Option<BrokerConfig>, stall_threshold: Duration, kernel: KernelSide) -> Aggregator {
        Aggregator {
            attribution: Attribution::new(stall_threshold),
            broker,
            config,
            probes: kernel.probes,
            thread_listeners: HashMap::new(),
            held: Some(VecDeque::new()),
            jvm_names: HashMap::new(),
            comms: HashMap::new(),
            retired: BTreeMap::new(),
            exited_threads: 0,
            requests: RequestStats::default(),
            topic_names: TopicNames::default(),
            unknown_topic_id: false,
            requests_answered: 0,
            timeline: Timeline::new(kernel.start_ns),
        }
    }

    pub fn broker_pid(&self) -> u32 {
        self.broker.pid
    }

    /// Produce latencies and stalls over time since tracing started.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// One record from the kernel: an answered request or a stall, with the file a stall read
    /// (named by the session as it drained the record, while the call's fd was still open).
    /// Held, in order, until the first thread names come.
    pub fn ingest(&mut self, event: Event, file: Option<PathBuf>) {
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

    fn process(&mut self, event: Event, file: Option<PathBuf>) {
        match event {
            Event::Stall(stall) => {
                let cause = self.attribution.record_stall(&stall, file, self.thread_listeners.get(&stall.tid));
                self.timeline.stall(stall.start_ns, stall.duration_ns, cause, stall.tid);
            }
            Event::Request(request) => {
                self.requests_answered += 1;
                let listener = self.thread_listeners.get(&request.tid);
                let facts = RequestFacts::of(&request);
                if let Some((Topic::Id(id), _)) = &facts.partition {
                    self.unknown_topic_id |= !self.topic_names.0.contains_key(id);
                }
                let timing = RequestTiming::of(&request);
                // The controller plane's requests are kept apart from the clients'.
                let data_plane = listener.is_none_or(|l| l.plane == Plane::Data);
                let attributed = if data_plane {
                    let answered = Answered { tid: request.tid, listener, api_key: request.id.api_key, facts: &facts, timing };
                    self.attribution.record_request(&answered)
                } else {
                    Attributed::default()
                };
                self.requests.record(&request, listener, &facts, &attributed.delay);
                if request.id.api_key == PRODUCE && data_plane {
                    self.timeline.produce(timing.start_ns(), timing.total_ns(), attributed.cause);
                }
            }
        }
    }

    /// A request named a topic by an id the session's names lack (a topic created since they
    /// were read): read the log directories again.
    pub fn needs_topic_names(&self) -> bool {
        self.unknown_topic_id
    }

    /// Topic ids to names, as the session read them from the broker's log directories.
    pub fn set_topic_names(&mut self, names: TopicNames) {
        self.topic_names = names;
        self.unknown_topic_id = false;
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

    /// First half of a refresh: roles of every thread with histograms, and what the session
    /// must do in the kernel (network threads to set, exited threads' entries to take).
    pub fn observe(&mut self, snapshot: Snapshot) -> Observed {
        let Snapshot { histograms, histograms_unread, comms, alive_unlisted, counters, probe_runs_skipped, elapsed } = snapshot;
        self.comms.extend(comms.iter().map(|(tid, comm)| (*tid, comm.clone())));
        let threads = assign_roles(&histograms, &self.comms, &self.jvm_names, &self.thread_listeners);
        let network_threads = network_threads(&threads, &comms, &self.jvm_names);
        // A thread is folded away only when /proc says it is gone: deleting a live thread's
        // entry would lose the calls it makes between the read and the delete.
        let mut exited = Vec::new();
        let mut live_entries = Vec::with_capacity(histograms.len());
        for (key, hist) in histograms {
            match threads.get(&key.tid) {
                Some(t) if comms.contains_key(&key.tid) || alive_unlisted.contains(&key.tid) => {
                    live_entries.extend(row_key(t, &key).map(|k| (k, hist)))
                }
                Some(_) => exited.push(key),
                None => {}
            }
        }
        Observed { network_threads, exited, threads, live_entries, histograms_unread, live_comms: comms, counters, probe_runs_skipped, elapsed }
    }

    /// Second half: folds what the session took out of the kernel for `observed.exited` into
    /// the roles' totals, and returns the summary of everything since tracing started.
    pub fn summarize(&mut self, observed: Observed, taken: Taken) -> Summary {
        let Observed { exited, threads, live_entries, histograms_unread, live_comms, counters, probe_runs_skipped, elapsed, .. } = observed;
        let Taken { entries: taken, failed } = taken;
        // Folded as taken out, not as read: a new thread with a reused tid may have counted
        // calls in between, and those are in what was taken.
        for (key, hist) in taken {
            if let Some(k) = threads.get(&key.tid).and_then(|t| row_key(t, &key)) {
                self.retired.entry(k).or_insert(LatencyHist::ZERO).merge(&hist);
            }
        }
        // A thread whose entries were not all taken is tried again at the next refresh: it
        // keeps its comm (and so its role) until then.
        let still_held: BTreeSet<u32> = failed.iter().map(|k| k.tid).collect();
        let tids: BTreeSet<u32> = exited.iter().map(|k| k.tid).filter(|tid| !still_held.contains(tid)).collect();
        self.exited_threads += tids.len() as u64;
        for tid in &tids {
            self.comms.remove(tid);
        }

        let mut merged = self.retired.clone();
        for (k, hist) in live_entries {
            merged.entry(k).or_insert(LatencyHist::ZERO).merge(&hist);
        }
        let live: Vec<ThreadInfo> = threads.into_values().filter(|t| live_comms.contains_key(&t.tid)).collect();
        let mut roles: BTreeMap<Role, Vec<u32>> = BTreeMap::new();
        for t in &live {
            roles.entry(t.role).or_default().push(t.tid);
        }
        let network_listeners: Vec<&Listener> =
            live.iter().filter(|t| t.role == Role::Network).filter_map(|t| t.listener.as_ref()).collect();
        let listeners = listeners::describe(self.config.as_ref(), &network_listeners);
        let elapsed_seconds = elapsed.as_secs_f64();
        let mut summary = Summary {
            broker: self.broker.clone(),
            elapsed_seconds,
            rows: merged.into_iter().map(|(k, h)| Row::new(k, h)).collect(),
            roles,
            thread_names: if self.jvm_names.is_empty() { ThreadNames::Comm } else { ThreadNames::Jvm },
            threads: live,
            listeners,
            exited_threads: self.exited_threads,
            probes: self.probes.clone(),
            lost: Lost {
                histogram_map_full: counters[counter::HIST_MAP_FULL as usize],
                in_flight_map_full: counters[counter::IN_FLIGHT_MAP_FULL as usize],
                records: counters[counter::RECORDS_LOST as usize],
                probe_runs_skipped,
                histogram_entries_unread: histograms_unread + failed.len() as u64,
                switch_ins_missed: counters[counter::SWITCH_INS_MISSED as usize],
            },
            protocol: ProtocolHealth {
                requests_parsed: counters[counter::REQUESTS_PARSED as usize],
                requests_answered: self.requests_answered,
                tls_connections: counters[counter::TLS_CONNECTIONS as usize],
                framing_errors: counters[counter::FRAMING_ERRORS as usize],
                responses_unmatched: counters[counter::RESPONSES_UNMATCHED as usize],
                state_slots_taken: counters[counter::SLOTS_TAKEN as usize],
                socket_wait_measured: self.probes.socket_wait_measured(),
            },
            requests: self.requests.summary(elapsed_seconds),
            controller_requests: self.requests.controller_summary(elapsed_seconds),
            stalls: StallSummary { delayed: self.requests.delayed(), ..self.attribution.summary(&self.topic_names) },
            findings: Vec::new(),
            broker_config: self.config.clone(),
        };
        summary.findings = findings::findings(&summary);
        summary
    }
}

/// The row an entry of this thread counts in; None for an entry of unknown syscall or verdict.
/// Network threads' rows are split by listener.
fn row_key(t: &ThreadInfo, key: &HistKey) -> Option<RowKey> {
    let listener = t.listener.as_ref().filter(|_| t.role == Role::Network).map(|l| l.name.clone());
    Some(RowKey { role: t.role, listener, syscall: Syscall::from_u8(key.syscall)?, cache: CacheResult::from_u8(key.cache)? })
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        hist::kernel_hist as hist_of,
        kernel::{Evidence, EvidenceStatus},
        roles::RoleSource,
        finding::{Figures, Finding, FindingId},
        summary::empty_summary,
    };
    use kstall_common::events::RequestEvent;

    /// Live threads of one role, and one that exited and was folded away, make one row per
    /// (role, syscall, verdict): the same row as one thread making every call would.
    #[test]
    fn threads_of_one_role_aggregate_into_one_row() {
        let mut agg = Aggregator::new(empty_summary().broker, None, Duration::from_millis(1), kernel_side());
        let write = |tid, latencies: &[u64]| entry(tid, Syscall::Write, CacheResult::NoFileRead, latencies);
        let (a, b, c) = (write(40, &[5_000, 6_000, 9_000_000]), write(41, &[7_000, 12_000_000]), write(42, &[8_000]));
        let read = entry(40, Syscall::Read, CacheResult::NoFileRead, &[1_000]);
        let comms = [(40, "kafka-request-h"), (41, "kafka-request-h"), (42, "kafka-request-h"), (43, "kafka-network-t")];
        let network = entry(43, Syscall::Write, CacheResult::NoFileRead, &[50_000]);
        let all_writes = hist_of(&[5_000, 6_000, 9_000_000, 7_000, 12_000_000, 8_000]);
        let key = |role, syscall| RowKey { role, listener: None, syscall, cache: CacheResult::NoFileRead };
        let row = |s: &Summary, role, syscall| {
            let rows: Vec<&Row> = s.rows.iter().filter(|r| r.role == role && r.syscall == syscall).collect();
            assert_eq!(rows.len(), 1, "one row of {role:?} {syscall:?}");
            serde_json::to_value(rows[0]).unwrap()
        };

        let seen = agg.observe(snapshot(&[a, b, c, read, network], &comms, &[]));
        let s = agg.summarize(seen, Taken::default());
        assert_eq!(row(&s, Role::RequestHandler, Syscall::Write), serde_json::to_value(Row::new(key(Role::RequestHandler, Syscall::Write), all_writes)).unwrap());
        assert_eq!(row(&s, Role::RequestHandler, Syscall::Read), serde_json::to_value(Row::new(key(Role::RequestHandler, Syscall::Read), hist_of(&[1_000]))).unwrap());
        assert_eq!(row(&s, Role::Network, Syscall::Write)["count"], 1, "another role, another row");
        assert_eq!(s.rows.len(), 3);

        // Thread 42 exits: folded into the role's totals, the row stays the same.
        let seen = agg.observe(snapshot(&[a, b, c, read, network], &comms[..2], &[43]));
        assert_eq!(seen.exited, [c.0]);
        let s = agg.summarize(seen, Taken { entries: vec![c], failed: Vec::new() });
        assert_eq!(row(&s, Role::RequestHandler, Syscall::Write), serde_json::to_value(Row::new(key(Role::RequestHandler, Syscall::Write), all_writes)).unwrap());
        assert_eq!((s.exited_threads, s.roles.get(&Role::RequestHandler).cloned()), (1, Some(vec![40, 41])));
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

    fn kernel_side() -> KernelSide {
        // Socket reads and data arrival seen: socket wait is measured.
        let mut probes = ProbeStatus::none();
        probes.evidence = [Evidence::SocketReads, Evidence::DataArrival]
            .map(|evidence| EvidenceStatus { evidence, hooks: Vec::new(), missing: None, cost: evidence.cost() })
            .to_vec();
        KernelSide { probes, start_ns: 0 }
    }

    fn entry(tid: u32, syscall: Syscall, cache: CacheResult, latencies_ns: &[u64]) -> (HistKey, LatencyHist) {
        (HistKey { tid, syscall: syscall as u8, cache: cache as u8, _pad: [0; 2] }, hist_of(latencies_ns))
    }

    fn snapshot(histograms: &[(HistKey, LatencyHist)], comms: &[(u32, &str)], alive_unlisted: &[u32]) -> Snapshot {
        Snapshot {
            histograms: histograms.to_vec(),
            histograms_unread: 0,
            comms: comms.iter().map(|(t, c)| (*t, c.to_string())).collect(),
            alive_unlisted: alive_unlisted.iter().copied().collect(),
            counters: [0; counter::COUNT as usize],
            probe_runs_skipped: 0,
            elapsed: Duration::from_secs(1),
        }
    }

    /// The count of the row of (role, syscall).
    fn count(s: &Summary, role: Role, syscall: Syscall) -> u64 {
        s.rows.iter().filter(|r| r.role == role && r.syscall == syscall).map(|r| r.count).sum()
    }

    #[test]
    fn exited_threads_fold_into_their_role_across_tid_reuse() {
        let mut agg = Aggregator::new(empty_summary().broker, None, Duration::from_millis(1), kernel_side());
        let handler_write = entry(100, Syscall::Write, CacheResult::NoFileRead, &[3_000]);
        // A request handler (by its comm) with one write.
        let seen = agg.observe(snapshot(&[handler_write], &[(100, "kafka-request-h")], &[]));
        assert!(seen.exited.is_empty() && seen.network_threads.is_empty());
        let s = agg.summarize(seen, Taken::default());
        assert_eq!(count(&s, Role::RequestHandler, Syscall::Write), 1);

        // It is gone from the listing, but alive when asked by tid: nothing is taken.
        let seen = agg.observe(snapshot(&[handler_write], &[], &[100]));
        assert!(seen.exited.is_empty(), "a live thread's entry must stay in the kernel");
        let s = agg.summarize(seen, Taken::default());
        assert_eq!(count(&s, Role::RequestHandler, Syscall::Write), 1);

        // It exited: its entry is taken, and what was taken (a second write made between the
        // read and the take) is what counts.
        let seen = agg.observe(snapshot(&[handler_write], &[], &[]));
        assert_eq!(seen.exited, [handler_write.0]);
        let taken = vec![entry(100, Syscall::Write, CacheResult::NoFileRead, &[3_000, 4_000])];
        let s = agg.summarize(seen, Taken { entries: taken, failed: Vec::new() });
        assert_eq!((count(&s, Role::RequestHandler, Syscall::Write), s.exited_threads), (2, 1));
        assert!(s.threads.is_empty() && s.roles.is_empty());

        // The tid comes back as a network thread: its calls go to the network role, the
        // folded handler's stay where they were.
        let reader = entry(100, Syscall::Sendfile, CacheResult::Miss, &[8_000_000]);
        let seen = agg.observe(snapshot(&[reader], &[(100, "kafka-network-t")], &[]));
        assert_eq!(seen.network_threads, [100], "the kernel is told to follow Kafka on it");
        let s = agg.summarize(seen, Taken::default());
        assert_eq!(count(&s, Role::RequestHandler, Syscall::Write), 2);
        assert_eq!(count(&s, Role::Network, Syscall::Sendfile), 1);
        assert_eq!((s.exited_threads, s.roles.get(&Role::Network).cloned()), (1, Some(vec![100])));
        let miss = s.rows.iter().find(|r| r.cache == CacheResult::Miss).unwrap();
        assert_eq!(miss.percentiles.max_ns, 8_000_000);
    }

    #[test]
    fn entries_not_read_or_not_taken_are_counted_until_they_are() {
        let mut agg = Aggregator::new(empty_summary().broker, None, Duration::from_millis(1), kernel_side());
        let reader = entry(200, Syscall::Sendfile, CacheResult::Hit, &[20_000, 30_000]);
        let seen = agg.observe(snapshot(&[reader], &[(200, "kafka-network-t")], &[]));
        let s = agg.summarize(seen, Taken::default());
        assert_eq!((count(&s, Role::Network, Syscall::Sendfile), s.lost.histogram_entries_unread), (2, 0));

        // The thread exits; its entry cannot be taken out (it stays in the kernel): its calls
        // are missing from this summary, and the summary says so.
        let seen = agg.observe(snapshot(&[reader], &[], &[]));
        assert_eq!(seen.exited, [reader.0]);
        let s = agg.summarize(seen, Taken { entries: Vec::new(), failed: vec![reader.0] });
        assert_eq!((count(&s, Role::Network, Syscall::Sendfile), s.lost.histogram_entries_unread), (0, 1));
        assert!(s.findings.iter().any(|f| f.id == FindingId::HistogramsUnread), "{:?}", s.findings);

        // The next refresh takes it: folded into the network role (its comm was seen while it
        // lived), and nothing is unread any more.
        let seen = agg.observe(snapshot(&[reader], &[], &[]));
        let s = agg.summarize(seen, Taken { entries: vec![reader], failed: Vec::new() });
        assert_eq!((count(&s, Role::Network, Syscall::Sendfile), s.lost.histogram_entries_unread), (2, 0));
        assert!(s.findings.iter().all(|f| f.id != FindingId::HistogramsUnread));

        // A read that could not get an entry counts too.
        let mut partial = snapshot(&[], &[(201, "kafka-network-t")], &[]);
        partial.histograms_unread = 2;
        let seen = agg.observe(partial);
        assert_eq!(agg.summarize(seen, Taken::default()).lost.histogram_entries_unread, 2);
    }

    #[test]
    fn network_threads_without_calls_yet_are_known_by_name() {
        let mut agg = Aggregator::new(empty_summary().broker, None, Duration::from_millis(1), kernel_side());
        agg.add_jvm_names(HashMap::from([(7, "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0".to_string())]));
        let seen = agg.observe(snapshot(&[], &[(7, "data-plane-kafk"), (8, "data-plane-kafk")], &[]));
        assert_eq!(seen.network_threads, [7]);
        assert!(agg.comms_need_jvm_names(), "thread 8's comm cannot tell its role");
    }

    fn request(tid: u32, fd: u32, api_key: i16, client: &str, arrival: u64, done: u64) -> RequestEvent {
        crate::requests::tests::request_event(tid, fd, api_key, client, arrival, arrival + 5_000, done)
    }

    #[test]
    fn controller_plane_requests_stay_out_of_client_rows_and_findings() {
        let text = "process.roles=broker,controller\nnode.id=1\nlisteners=PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093\ncontroller.listener.names=CONTROLLER\n";
        let config = BrokerConfig::from_properties("server.properties", &listeners::parse_properties(text));
        let mut agg = Aggregator::new(empty_summary().broker, Some(config), Duration::from_millis(1), kernel_side());
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
                agg.ingest(Event::Request(request(tid, fd, api, client, arrival, done[n])), None);
            }
        }
        // Held until the threads are named.
        assert!(agg.requests.summary(1.0).apis.is_empty());
        agg.add_jvm_names(HashMap::from([
            (controller_tid, "data-plane-kafka-network-thread-1-CONTROLLER-PLAINTEXT-0".to_string()),
            (data_tid, "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0".to_string()),
        ]));
        // A refresh, as the session makes it: the two network threads each wrote a response.
        let writes = [controller_tid, data_tid].map(|tid| entry(tid, Syscall::Write, CacheResult::NoFileRead, &[3_000]));
        let seen = agg.observe(snapshot(&writes, &[(controller_tid, "data-plane-kafk"), (data_tid, "data-plane-kafk")], &[]));
        assert_eq!(seen.network_threads.len(), 2);
        let s = agg.summarize(seen, Taken::default());
        let clients: Vec<(&str, Option<&str>, &str, u64)> =
            s.requests.clients.iter().map(|c| (c.client_id.as_str(), c.listener.as_deref(), c.api, c.count)).collect();
        assert_eq!(clients, [("app", Some("PLAINTEXT"), "Produce", 30)]);
        assert_eq!(s.requests.apis.iter().map(|a| (a.api, a.count)).collect::<Vec<_>>(), [("Produce", 30)]);
        let controller: Vec<(&str, &str, u64)> = s.controller_requests.iter().map(|c| (c.listener.as_str(), c.api, c.count)).collect();
        assert_eq!(controller, [("CONTROLLER", "Produce", 15), ("CONTROLLER", "BrokerHeartbeat", 15)]);
        assert_eq!(s.stalls.produce.requests, 30, "only the clients' Produce is attributed");
        assert_eq!(agg.timeline().produce_seen, 30);
        assert_eq!(s.requests.sync_producers.iter().map(|p| p.client_id.as_str()).collect::<Vec<_>>(), ["app"]);
        let findings: Vec<&Finding> = s.findings.iter().filter(|f| f.id == FindingId::SynchronousProducer).collect();
        assert_eq!(findings.len(), 1);
        assert!(matches!(&findings[0].figures, Figures::SynchronousProducer(p) if p.client_id == "app"));
        let figures = serde_json::to_string(&s.findings).unwrap();
        assert!(!figures.contains("raft-client"), "{figures}");
        let planes: Vec<(&str, Plane)> = s.listeners.iter().map(|l| (l.name.as_str(), l.plane)).collect();
        assert_eq!(planes, [("PLAINTEXT", Plane::Data), ("CONTROLLER", Plane::Controller)]);
        // Once named, records go straight through.
        agg.ingest(Event::Request(request(data_tid, 6, 3, "app", 500 * ms, 501 * ms)), None);
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
        let keys: Vec<(Role, Option<String>)> =
            entries.iter().filter_map(|(k, _)| row_key(&threads[&k.tid], k)).map(|k| (k.role, k.listener)).collect();
        assert_eq!(keys, [(Role::Network, Some("PLAINTEXT".into())), (Role::Network, Some("SSL".into())), (Role::RequestHandler, None)]);
        let json = serde_json::to_value(Row::new(row_key(&threads[&31], &entries[1].0).unwrap(), hist_of(&[1]))).unwrap();
        assert_eq!((json["role"].as_str(), json["listener"].as_str(), json["syscall"].as_str(), json["cache"].as_str()), (Some("network"), Some("SSL"), Some("read"), Some("none")));
    }

    #[test]
    fn client_ids_past_the_tracked_ones_share_the_other_row_with_their_delays() {
        use crate::requests::{MAX_TRACKED_CLIENTS, OTHER_CLIENTS, TOP_CLIENTS};
        let mut agg = Aggregator::new(empty_summary().broker, None, Duration::from_millis(1), kernel_side());
        agg.release_held();
        let ms = 1_000_000;
        // A miss on network thread 1, 100..110 ms; then MAX_TRACKED_CLIENTS + 6 clients each send
        // one Produce there, 105..112 ms: 5 ms of the miss each.
        agg.ingest(Event::Stall(crate::stalls::tests::stall(1, 100, 10, true, Some("cold"))), None);
        let n = MAX_TRACKED_CLIENTS as u32 + 6;
        for i in 0..n {
            agg.ingest(Event::Request(request(1, 100 + i, PRODUCE, &format!("c{i:02}"), 105 * ms, 112 * ms)), None);
        }
        let seen = agg.observe(snapshot(&[], &[], &[]));
        let s = agg.summarize(seen, Taken::default());
        assert_eq!((s.stalls.produce.requests, s.stalls.produce.stalled_by_miss), (n as u64, n as u64));
        assert_eq!(s.requests.untracked_client_requests, 6);
        let rows: Vec<(&str, u64, u64, u64, u64)> =
            s.stalls.delayed.iter().map(|r| (r.client_id.as_str(), r.requests, r.stalled_requests, r.stalled_by_miss, r.added_ns)).collect();
        assert_eq!(rows.len(), MAX_TRACKED_CLIENTS + 1);
        // The untracked six, in one row with their 30 ms, the most delayed.
        assert_eq!(rows[0], (OTHER_CLIENTS, 6, 6, 6, 30 * ms));
        assert_eq!(rows[1], ("c00", 1, 1, 1, 5 * ms));
        assert!(rows.iter().any(|r| r.0 == "c63") && !rows.iter().any(|r| r.0 == "c64"), "the first 64 are tracked");
        // The client table shows the TOP_CLIENTS busiest and folds the rest (tracked or not) in.
        assert_eq!(s.requests.other_client_ids, MAX_TRACKED_CLIENTS - TOP_CLIENTS);
        let other = s.requests.clients.iter().find(|c| c.client_id == OTHER_CLIENTS).unwrap();
        assert_eq!(other.count, (n as usize - TOP_CLIENTS) as u64);
        assert_eq!(s.requests.clients.len(), TOP_CLIENTS + 1);
    }
}
