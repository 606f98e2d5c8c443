//! What a finding is, as data: a stable id, a severity, and the figures it rests on, each
//! typed and named after the summary field it comes from ([`Source`] gives that field's JSON
//! path). The rules that make findings are in the `findings` module; the sentences are the
//! presenters' (`kstall::present::words`), so a number in a sentence is a figure here, and a
//! figure is one hop from the summary field, whose doc names the probe behind it.
use serde::Serialize;

use crate::{
    listeners::SecurityProtocol,
    roles::Role,
    stalls::{Cause, PartitionCount},
};
use kstall_common::Syscall;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    /// The one machine spelling: JSON, CSS classes, metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// For people: the report's and the table's heading of a finding.
    pub const fn label(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// Every kind of finding: the ids scripts and alerts rely on. The schema's enum, README's
/// table and the `kstall_findings{id}` metric label are this list (tests check each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingId {
    ProduceStalledByPageCacheMiss,
    ProduceStalledBySlowNetworkThreadCalls,
    ReplicationDelayedByStalls,
    NetworkThreadBlocked,
    SynchronousProducer,
    TlsListener,
    FramingNotParsed,
    RecordsLost,
    ProbeRunsSkipped,
    HistogramsUnread,
    NetworkThreadsSaturated,
    SlowLogWrites,
    NoProblemFound,
}

impl FindingId {
    pub const ALL: [FindingId; 13] = [
        FindingId::ProduceStalledByPageCacheMiss,
        FindingId::ProduceStalledBySlowNetworkThreadCalls,
        FindingId::ReplicationDelayedByStalls,
        FindingId::NetworkThreadBlocked,
        FindingId::SynchronousProducer,
        FindingId::TlsListener,
        FindingId::FramingNotParsed,
        FindingId::RecordsLost,
        FindingId::ProbeRunsSkipped,
        FindingId::HistogramsUnread,
        FindingId::NetworkThreadsSaturated,
        FindingId::SlowLogWrites,
        FindingId::NoProblemFound,
    ];

    /// The one machine spelling: JSON, metric label, README.
    pub const fn as_str(self) -> &'static str {
        match self {
            FindingId::ProduceStalledByPageCacheMiss => "produce_stalled_by_page_cache_miss",
            FindingId::ProduceStalledBySlowNetworkThreadCalls => "produce_stalled_by_slow_network_thread_calls",
            FindingId::ReplicationDelayedByStalls => "replication_delayed_by_stalls",
            FindingId::NetworkThreadBlocked => "network_thread_blocked",
            FindingId::SynchronousProducer => "synchronous_producer",
            FindingId::TlsListener => "tls_listener",
            FindingId::FramingNotParsed => "framing_not_parsed",
            FindingId::RecordsLost => "records_lost",
            FindingId::ProbeRunsSkipped => "probe_runs_skipped",
            FindingId::HistogramsUnread => "histograms_unread",
            FindingId::NetworkThreadsSaturated => "network_threads_saturated",
            FindingId::SlowLogWrites => "slow_log_writes",
            FindingId::NoProblemFound => "no_problem_found",
        }
    }

    /// Findings whose cause is on the broker: a client-pattern finding follows them.
    pub const fn is_broker_cause(self) -> bool {
        matches!(
            self,
            FindingId::ProduceStalledByPageCacheMiss
                | FindingId::ProduceStalledBySlowNetworkThreadCalls
                | FindingId::ReplicationDelayedByStalls
                | FindingId::NetworkThreadBlocked
        )
    }
}

/// One conclusion: its id, how bad, and its figures. `sources` says, for each figure, the
/// summary field (JSON path in the report, `[*]` for every element of a list) it was read from.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Finding {
    /// Stable identifier for scripts and alerts.
    pub id: FindingId,
    pub severity: Severity,
    pub figures: Figures,
    pub sources: Vec<Source>,
}

impl Finding {
    pub fn new(severity: Severity, figures: Figures) -> Finding {
        let sources = figures.sources().iter().map(|&(figure, path)| Source { figure, path }).collect();
        Finding { id: figures.id(), severity, figures, sources }
    }
}

/// Where a figure comes from: its name in `figures` and the report's JSON path of the value
/// (or the values) it was computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Source {
    pub figure: &'static str,
    pub path: &'static str,
}

/// The figures of each kind of finding: what its sentences say, as numbers and names.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Figures {
    ProduceStalledByPageCacheMiss(MissStalls),
    ProduceStalledBySlowNetworkThreadCalls(SlowCallStalls),
    ReplicationDelayedByStalls(ReplicationDelayed),
    NetworkThreadBlocked(ThreadBlocked),
    SynchronousProducer(SyncProducerFigures),
    TlsListener(TlsListeners),
    FramingNotParsed { framing_errors: u64 },
    RecordsLost { records: u64 },
    ProbeRunsSkipped { probe_runs_skipped: u64 },
    HistogramsUnread { histogram_entries_unread: u64 },
    NetworkThreadsSaturated { busy_share: f64, traced_seconds: f64 },
    SlowLogWrites(SlowWrites),
    NoProblemFound(AllClear),
}

impl Figures {
    pub const fn id(&self) -> FindingId {
        match self {
            Figures::ProduceStalledByPageCacheMiss(_) => FindingId::ProduceStalledByPageCacheMiss,
            Figures::ProduceStalledBySlowNetworkThreadCalls(_) => FindingId::ProduceStalledBySlowNetworkThreadCalls,
            Figures::ReplicationDelayedByStalls(_) => FindingId::ReplicationDelayedByStalls,
            Figures::NetworkThreadBlocked(_) => FindingId::NetworkThreadBlocked,
            Figures::SynchronousProducer(_) => FindingId::SynchronousProducer,
            Figures::TlsListener(_) => FindingId::TlsListener,
            Figures::FramingNotParsed { .. } => FindingId::FramingNotParsed,
            Figures::RecordsLost { .. } => FindingId::RecordsLost,
            Figures::ProbeRunsSkipped { .. } => FindingId::ProbeRunsSkipped,
            Figures::HistogramsUnread { .. } => FindingId::HistogramsUnread,
            Figures::NetworkThreadsSaturated { .. } => FindingId::NetworkThreadsSaturated,
            Figures::SlowLogWrites(_) => FindingId::SlowLogWrites,
            Figures::NoProblemFound(_) => FindingId::NoProblemFound,
        }
    }

    /// Each figure (a top-level field of the figures' JSON) and the report path it comes from.
    pub const fn sources(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Figures::ProduceStalledByPageCacheMiss(_) => &[
                ("requests", "summary.stalls.produce.requests"),
                ("stalled_by_miss", "summary.stalls.produce.stalled_by_miss"),
                ("stalled_requests", "summary.stalls.produce.stalled_requests"),
                ("miss_ns_added", "summary.stalls.produce.miss_ns_added"),
                ("slowest_1pct", "summary.stalls.produce.slowest_1pct"),
                ("slowest_1pct_stalled", "summary.stalls.produce.slowest_1pct_stalled"),
                ("p99_ns", "summary.stalls.produce.all.p99_ns"),
                ("stalled_p99_ns", "summary.stalls.produce.stalled.p99_ns"),
                ("not_stalled_p99_ns", "summary.stalls.produce.not_stalled.p99_ns"),
                ("top_reader", "summary.stalls.cold_readers[*]"),
                ("top_partition", "summary.stalls.cold_partitions[*]"),
                ("places", "summary.stalls.by_thread[*]"),
                ("delayed_by_listener", "summary.stalls.produce.by_listener[*].stalled_by_miss"),
                ("tls_listeners", "summary.listeners[*].encrypted"),
                ("partitions", "summary.stalls.produce.stalled_partitions[*]"),
                ("others_delayed", "summary.stalls.delayed[*]"),
                ("saturates_network_threads", "summary.stalls.by_cause[*].stall_ns"),
            ],
            Figures::ProduceStalledBySlowNetworkThreadCalls(_) => &[
                ("threshold_ns", "summary.stalls.threshold_ns"),
                ("requests", "summary.stalls.produce.stalled_requests"),
                ("by_cause", "summary.stalls.by_cause[*]"),
                ("places", "summary.stalls.by_thread[*]"),
                ("delayed_by_listener", "summary.stalls.produce.by_listener[*].stalled_requests"),
                ("tls_listeners", "summary.listeners[*].encrypted"),
            ],
            Figures::ReplicationDelayedByStalls(_) => &[
                ("produce_acks_all", "summary.stalls.replication.produce_acks_all"),
                ("produce_delayed", "summary.stalls.replication.produce_delayed"),
                ("followers", "summary.stalls.replication.followers[*].broker_id"),
                ("threads", "summary.stalls.by_thread[*]"),
                ("added_ns", "summary.stalls.replication.produce_added_ns"),
                ("miss_ns", "summary.stalls.replication.produce_miss_ns"),
                ("slowest_1pct", "summary.stalls.produce.slowest_1pct"),
                ("slowest_1pct_delayed", "summary.stalls.replication.slowest_1pct_delayed"),
                ("p99_ns", "summary.stalls.produce.all.p99_ns"),
                ("delayed_p99_ns", "summary.stalls.replication.delayed.p99_ns"),
                ("not_delayed_p99_ns", "summary.stalls.replication.not_delayed.p99_ns"),
                ("partitions", "summary.stalls.replication.partitions[*]"),
                ("held", "summary.stalls.delayed[*]"),
            ],
            Figures::NetworkThreadBlocked(_) => &[
                ("thread", "summary.stalls.by_thread[*]"),
                ("blocked_ns", "summary.stalls.by_thread[*].stall_ns"),
                ("traced_seconds", "summary.elapsed_seconds"),
                ("connections", "summary.requests.threads[*].connections"),
                ("followers", "summary.requests.threads[*].followers"),
                ("clients", "summary.requests.threads[*].clients"),
                ("other_clients", "summary.requests.threads[*].other_clients"),
                ("delayed", "summary.stalls.delayed[*]"),
                ("listener_threads", "summary.threads[*].listener"),
            ],
            Figures::SynchronousProducer(_) => &[
                ("client_id", "summary.requests.sync_producers[*].client_id"),
                ("produce_requests", "summary.requests.sync_producers[*].produce_requests"),
                ("median_gap_ns", "summary.requests.sync_producers[*].median_gap_ns"),
                ("median_latency_ns", "summary.requests.sync_producers[*].median_latency_ns"),
                ("max_requests_per_s", "summary.requests.sync_producers[*].max_requests_per_s"),
                ("stall_added_ns", "summary.stalls.delayed[*].added_ns"),
                ("latency_ns", "summary.stalls.delayed[*]"),
            ],
            Figures::TlsListener(_) => &[
                ("listeners", "summary.listeners[*]"),
                ("tls_connections", "summary.protocol.tls_connections"),
            ],
            Figures::FramingNotParsed { .. } => &[("framing_errors", "summary.protocol.framing_errors")],
            Figures::RecordsLost { .. } => &[("records", "summary.lost.records")],
            Figures::ProbeRunsSkipped { .. } => &[("probe_runs_skipped", "summary.lost.probe_runs_skipped")],
            Figures::HistogramsUnread { .. } => &[("histogram_entries_unread", "summary.lost.histogram_entries_unread")],
            Figures::NetworkThreadsSaturated { .. } => {
                &[("busy_share", "summary.rows[*]"), ("traced_seconds", "summary.elapsed_seconds")]
            }
            Figures::SlowLogWrites(_) => &[
                ("role", "summary.rows[*].role"),
                ("syscall", "summary.rows[*].syscall"),
                ("count", "summary.rows[*].count"),
                ("slow_calls", "summary.rows[*].buckets"),
                ("slow_ns", "summary.rows[*].buckets"),
                ("p50_ns", "summary.rows[*].p50_ns"),
                ("p99_ns", "summary.rows[*].p99_ns"),
                ("max_ns", "summary.rows[*].max_ns"),
            ],
            Figures::NoProblemFound(_) => &[
                ("produce_requests", "summary.stalls.produce.requests"),
                ("produce_p99_ns", "summary.stalls.produce.all.p99_ns"),
                ("network_misses", "summary.rows[*].count"),
                ("network_busy_share", "summary.rows[*]"),
            ],
        }
    }
}

/// A name (client.id, partition) and the stalls it is behind.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Culprit {
    pub name: String,
    pub stalls: u64,
    pub stall_ns: u64,
}

/// One network thread's stalls of the causes a finding is about.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ThreadTotal {
    pub thread: String,
    pub stalls: u64,
    pub stall_ns: u64,
}

/// The threads of one listener (null: not known) that stalled, most stall time first.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ListenerStalls {
    pub listener: Option<String>,
    pub threads: Vec<ThreadTotal>,
}

/// Requests of one listener's clients (null: not known) that the stalls delayed.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ListenerCount {
    pub listener: Option<String>,
    pub requests: u64,
}

/// Requests of one (API, client.id) that stalls delayed; the p99s are null for an empty set.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Victim {
    pub api: &'static str,
    pub client_id: String,
    pub delayed: u64,
    pub requests: u64,
    pub added_ns: u64,
    pub delayed_p99_ns: Option<u64>,
    pub not_delayed_p99_ns: Option<u64>,
}

/// Up to five victims, most delayed first, and how many more there were.
#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Victims {
    pub shown: Vec<Victim>,
    pub more: usize,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct MissStalls {
    pub requests: u64,
    pub stalled_by_miss: u64,
    pub stalled_requests: u64,
    pub miss_ns_added: u64,
    pub slowest_1pct: u64,
    pub slowest_1pct_stalled: u64,
    pub p99_ns: u64,
    pub stalled_p99_ns: Option<u64>,
    pub not_stalled_p99_ns: Option<u64>,
    pub top_reader: Option<Culprit>,
    pub top_partition: Option<Culprit>,
    /// Empty when no stalled thread's listener is known.
    pub places: Vec<ListenerStalls>,
    pub delayed_by_listener: Vec<ListenerCount>,
    /// TLS listeners among `places`: the requests their stalls delayed are unknown.
    pub tls_listeners: Vec<String>,
    pub partitions: Vec<PartitionCount>,
    pub others_delayed: Victims,
    /// The misses are at least half of the network threads' busy time, itself critical.
    pub saturates_network_threads: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CauseCount {
    pub cause: Cause,
    pub stalls: u64,
    pub stall_ns: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct SlowCallStalls {
    pub threshold_ns: u64,
    /// Produce requests a slow call other than a page-cache miss overlapped.
    pub requests: u64,
    pub by_cause: Vec<CauseCount>,
    pub places: Vec<ListenerStalls>,
    pub delayed_by_listener: Vec<ListenerCount>,
    pub tls_listeners: Vec<String>,
}

/// One cause of one thread's stalls, with what the misses were serving.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ThreadCause {
    pub cause: Cause,
    pub stalls: u64,
    pub stall_ns: u64,
    pub top_reader: Option<String>,
    pub top_partition: Option<String>,
}

/// A network thread and its stalls by cause, most stall time first.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StalledThread {
    pub tid: u32,
    pub thread: String,
    pub listener: Option<String>,
    pub causes: Vec<ThreadCause>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ReplicationDelayed {
    pub produce_acks_all: u64,
    pub produce_delayed: u64,
    /// Broker ids of the followers whose Fetch connections sat on a stalled thread.
    pub followers: Vec<i32>,
    pub threads: Vec<StalledThread>,
    pub added_ns: u64,
    pub miss_ns: u64,
    pub slowest_1pct: u64,
    pub slowest_1pct_delayed: u64,
    pub p99_ns: u64,
    pub delayed_p99_ns: Option<u64>,
    pub not_delayed_p99_ns: Option<u64>,
    pub partitions: Vec<PartitionCount>,
    /// Other requests held on those threads (up to four).
    pub held: Vec<Victim>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ThreadBlocked {
    pub thread: StalledThread,
    pub blocked_ns: u64,
    pub traced_seconds: f64,
    /// Null when no request was answered on it during the trace.
    pub connections: Option<usize>,
    pub followers: Vec<i32>,
    pub clients: Vec<String>,
    pub other_clients: usize,
    /// Its clients' requests that stalls delayed (up to five).
    pub delayed: Vec<Victim>,
    /// Network threads new connections of its listener are dealt to in turn.
    pub listener_threads: usize,
}

impl ThreadBlocked {
    pub fn share(&self) -> f64 {
        if self.traced_seconds > 0.0 { self.blocked_ns as f64 / (self.traced_seconds * 1e9) } else { 0.0 }
    }
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct SyncProducerFigures {
    pub client_id: String,
    pub produce_requests: u64,
    pub median_gap_ns: u64,
    pub median_latency_ns: u64,
    pub max_requests_per_s: f64,
    /// Time this broker's stalls (own thread and replication) added to its Produce requests,
    /// and their summed latency.
    pub stall_added_ns: u64,
    pub latency_ns: u64,
}

/// A TLS listener and what kstall still measures on it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TlsListener {
    pub name: String,
    pub security_protocol: Option<SecurityProtocol>,
    pub address: Option<String>,
    pub controller_plane: bool,
    pub threads: Vec<String>,
    pub stalls: u64,
    pub stall_ns: u64,
    pub misses: u64,
}

/// TLS listeners from the config (empty when only TLS bytes on the wire told).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TlsListeners {
    pub listeners: Vec<TlsListener>,
    pub tls_connections: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct SlowWrites {
    pub role: Role,
    #[serde(serialize_with = "crate::kernel::spelling::syscall")]
    #[schemars(with = "String")]
    pub syscall: Syscall,
    pub count: u64,
    /// Calls that took `slow_ns` or more.
    pub slow_calls: u64,
    pub slow_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct AllClear {
    pub produce_requests: u64,
    pub produce_p99_ns: u64,
    pub network_misses: u64,
    /// Null without network threads.
    pub network_busy_share: Option<f64>,
}
