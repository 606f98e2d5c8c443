//! The data model every presenter reads: per-role syscall rows, threads, listeners, request
//! latency, stalls and the findings drawn from them.
use std::collections::BTreeMap;

use kstall_common::{CacheResult, LatencyHist, Syscall};
use serde::Serialize;

use crate::{
    broker::Broker,
    finding::Finding,
    hist::{BucketCount, Percentiles, kernel_buckets, percentiles},
    kernel::ProbeStatus,
    listeners::{BrokerConfig, Listener, ListenerInfo},
    requests::{ControllerApiRow, RequestSummary},
    roles::{Role, RoleSource},
    stalls::StallSummary,
};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    pub role: Role,
    /// Network threads' rows are split per listener, when the thread's name tells it.
    pub listener: Option<String>,
    pub syscall: Syscall,
    pub cache: CacheResult,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
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

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Row {
    pub role: Role,
    /// The listener of a network-role row; null for other roles, and for network threads whose
    /// name does not tell.
    pub listener: Option<String>,
    #[serde(serialize_with = "crate::kernel::spelling::syscall")]
    #[schemars(with = "String")]
    pub syscall: Syscall,
    /// "hit", "miss", or "none" (no file data read).
    #[serde(serialize_with = "crate::kernel::spelling::cache")]
    #[schemars(with = "String")]
    pub cache: CacheResult,
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
    pub hist: LatencyHist,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Lost {
    /// Calls not recorded because the histogram map was full.
    pub histogram_map_full: u64,
    /// Calls not timed because the in-flight map was full.
    pub in_flight_map_full: u64,
    /// Request and stall records dropped because the ring buffer was full: request latency
    /// and attribution miss them (the syscall histograms do not).
    pub records: u64,
    /// Runs of the probes the kernel skipped because another BPF program, or a bpf() map
    /// syscall (kstall's own reads among them), held the CPU (5.12+ count them): each may
    /// miss a call, a request or a stall.
    pub probe_runs_skipped: u64,
    /// Entries of the kernel's histogram map (one thread's calls of one syscall and verdict)
    /// that kstall could not read, or could not take out for a thread that exited: those
    /// calls are missing from the rows.
    pub histogram_entries_unread: u64,
    /// Traced calls whose thread's switch back onto a CPU the kernel ran no sched_switch
    /// program for (and counted no skipped run): their off-CPU time is counted from the switch
    /// out to the call's return. Not a loss of calls; an estimate where evidence was missing.
    pub switch_ins_missed: u64,
}

/// How well the Kafka framing could be followed on the network threads' sockets.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct ProtocolHealth {
    pub requests_parsed: u64,
    pub requests_answered: u64,
    /// Connections whose bytes looked like TLS: no request view for them.
    pub tls_connections: u64,
    /// Reads that did not parse as Kafka framing (the parser resyncs at the next read).
    pub framing_errors: u64,
    /// Responses to requests read before kstall attached (or whose request was lost).
    pub responses_unmatched: u64,
    /// Connection or socket state replaced by another's sharing its kernel slot (more than
    /// 16384 fds, or socket addresses hashed alike): a request or an arrival time lost.
    pub state_slots_taken: u64,
    /// The kernel shows socket reads and data arrival (sock tracepoints, 6.3+, or kprobes):
    /// socket wait is measured.
    pub socket_wait_measured: bool,
}

/// Where a summary's thread names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThreadNames {
    /// The kernel's 15-byte comms (jcmd did not answer, or not yet).
    Comm,
    /// The JVM's full thread names (jcmd).
    Jvm,
}

impl ThreadNames {
    pub const fn as_str(self) -> &'static str {
        match self {
            ThreadNames::Comm => "comm",
            ThreadNames::Jvm => "jvm",
        }
    }
}

/// Everything a presenter shows.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
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
    /// Where the thread names (and so the roles) came from.
    pub thread_names: ThreadNames,
    /// The probes as the session attached them: hooks, evidence, what is missing.
    pub probes: ProbeStatus,
    pub lost: Lost,
    pub protocol: ProtocolHealth,
    pub requests: RequestSummary,
    /// Requests answered by controller-plane network threads (the cluster's own traffic:
    /// KRaft's BrokerHeartbeat, Vote, raft Fetch, ...): not in `requests`, attribution or findings.
    pub controller_requests: Vec<ControllerApiRow>,
    pub stalls: StallSummary,
    pub findings: Vec<Finding>,
    /// What kstall read from the broker's properties file; null when it could not.
    pub broker_config: Option<BrokerConfig>,
}

impl Summary {
    /// A thread's JVM name, else its comm, else its tid (threads that exited).
    pub fn thread_name(&self, tid: u32) -> String {
        self.threads.iter().find(|t| t.tid == tid).map_or(tid.to_string(), |t| t.name().to_string())
    }

    /// Thread names (JVM name, else comm) per role.
    pub fn thread_names_by_role(&self) -> BTreeMap<Role, Vec<String>> {
        let mut roles: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        for t in &self.threads {
            roles.entry(t.role).or_default().push(t.name().to_string());
        }
        roles
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
        let traced_ns = self.network_traced_ns();
        let idle_ns: u64 = self
            .rows
            .iter()
            .filter(|r| r.role == Role::Network && matches!(r.syscall, Syscall::EpollWait | Syscall::EpollPwait))
            .map(|r| r.hist.total_ns)
            .sum();
        (traced_ns > 0.0).then(|| (1.0 - idle_ns as f64 / traced_ns).clamp(0.0, 1.0))
    }

    /// The network threads' traced time, summed over them (ns): what their busy share is of.
    pub fn network_traced_ns(&self) -> f64 {
        let threads = self.roles.get(&Role::Network).map_or(0, Vec::len);
        threads as f64 * self.elapsed_seconds * 1e9
    }
}

impl Row {
    /// The row of one (role, listener, syscall, verdict) and its kernel histogram.
    pub fn new(key: RowKey, hist: LatencyHist) -> Row {
        let RowKey { role, listener, syscall, cache } = key;
        Row {
            role,
            listener,
            syscall,
            cache,
            count: hist.count,
            percentiles: percentiles(&hist),
            mean_ns: hist.total_ns.checked_div(hist.count).unwrap_or(0),
            bytes: hist.bytes,
            pages_added: hist.pages_added,
            blocked_ns: hist.blocked_ns,
            buckets: kernel_buckets(&hist),
            hist,
        }
    }
}

/// A summary of nothing, for tests (here and in presenters) to fill in.
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
        thread_names: ThreadNames::Jvm,
        probes: ProbeStatus::none(),
        lost: Lost::default(),
        protocol: ProtocolHealth::default(),
        requests: RequestSummary::default(),
        controller_requests: Vec::new(),
        stalls: StallSummary::default(),
        findings: Vec::new(),
        broker_config: None,
    }
}

