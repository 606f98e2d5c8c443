//! Presenting a [`Summary`]: comfy-table text for people, JSON for scripts.
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use kstall_common::{BUCKETS, CacheResult, LatencyHist, MIN_POW, SUB_BUCKETS, Syscall};

use kstall_core::{
    kafka::PRODUCE,
    kernel::{EvidenceStatus, ProbeStatus},
    listeners::{self, BrokerConfig, Plane},
    requests::MAX_TRACKED_CLIENTS,
    stalls::StallSummary,
    summary::{Row, Summary},
    units::{bytes, duration, of_set, percentile},
};

/// Number of columns of the log2 bar: one below 1 us, one per power of two up to the
/// overflow bucket.
pub const BAR_COLUMNS: usize = 2 + (BUCKETS - 2) / SUB_BUCKETS;

/// Axis under the bar's header: a tick at the powers of two closest to 1 us, 1 ms and 1 s.
pub fn bar_axis() -> String {
    let mut axis = vec![' '; BAR_COLUMNS];
    for (pow, label) in [(10u32, "1us"), (20, "1ms"), (30, "1s")] {
        let col = 1 + (pow - MIN_POW) as usize;
        for (i, ch) in label.chars().enumerate() {
            if let Some(slot) = axis.get_mut(col + i) {
                *slot = ch;
            }
        }
    }
    axis.into_iter().collect()
}

/// One-line log2 histogram: a character per power of two, height by log of the count so a
/// few 8 ms misses stay visible next to millions of 10 us hits.
pub fn log2_bar(hist: &LatencyHist) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut columns = [0u64; BAR_COLUMNS];
    for (bucket, &n) in hist.buckets.iter().enumerate() {
        let col = if bucket == 0 { 0 } else { 1 + (bucket - 1) / SUB_BUCKETS };
        columns[col.min(BAR_COLUMNS - 1)] += n;
    }
    let peak = columns.iter().copied().max().unwrap_or(0);
    if peak == 0 {
        return " ".repeat(BAR_COLUMNS);
    }
    let scale = ((peak + 1) as f64).ln();
    columns
        .iter()
        .map(|&n| {
            if n == 0 {
                ' '
            } else {
                let level = (((n + 1) as f64).ln() / scale * LEVELS.len() as f64).ceil() as usize;
                LEVELS[level.clamp(1, LEVELS.len()) - 1]
            }
        })
        .collect()
}

/// The role column: `network PLAINTEXT` for a network row of a known listener.
pub fn role_cell(row: &Row) -> String {
    match &row.listener {
        Some(l) => format!("{} {l}", row.role.label()),
        None => row.role.label().to_string(),
    }
}

/// A syscall row's cells as text, in the order of [`ROW_COLUMNS`].
fn row_texts(r: &Row) -> Vec<String> {
    let p = &r.percentiles;
    vec![
        role_cell(r),
        r.syscall.name().to_string(),
        if r.cache == CacheResult::NoFileRead { String::new() } else { r.cache.as_str().to_string() },
        r.count.to_string(),
        of_set(r.count, p.p50_ns, percentile),
        of_set(r.count, p.p90_ns, percentile),
        of_set(r.count, p.p99_ns, percentile),
        of_set(r.count, p.p999_ns, percentile),
        of_set(r.count, p.max_ns, duration),
        if r.syscall.returns_bytes() { bytes(r.bytes) } else { String::new() },
        if r.pages_added > 0 { r.pages_added.to_string() } else { String::new() },
    ]
}

const ROW_COLUMNS: [Col; 11] = [Col::Role, Col::Syscall, Col::Cache, Col::Calls, Col::P50, Col::P90, Col::P99, Col::P999, Col::Max, Col::Bytes, Col::PagesAdded];
/// Columns from here on are numbers, aligned right.
const ROW_NUMERIC_FROM: usize = 3;

fn row_cells(row: &Row) -> Vec<Cell> {
    let mut cells: Vec<Cell> = row_texts(row)
        .into_iter()
        .enumerate()
        .map(|(i, text)| if i >= ROW_NUMERIC_FROM { Cell::new(text).set_alignment(CellAlignment::Right) } else { Cell::new(text) })
        .collect();
    cells.push(Cell::new(log2_bar(&row.hist)));
    cells
}

pub fn table(summary: &Summary) -> String {
    let mut out = title_line(summary);
    for (role, tids) in &summary.roles {
        let names: Vec<String> = summary
            .threads
            .iter()
            .filter(|t| t.role == *role)
            .take(4)
            .map(|t| t.name().to_string())
            .collect();
        let more = if tids.len() > names.len() { ", ..." } else { "" };
        out += &format!("  {:<16} {:>3} threads: {}{more}\n", role.label(), tids.len(), names.join(", "));
    }
    if !summary.listeners.is_empty() {
        let listeners: Vec<String> = summary.listeners.iter().map(listeners::label).collect();
        out += &format!("  listeners: {}\n", listeners.join("; "));
    }
    if let Some(c) = &summary.broker_config {
        out += &format!("  config: {}\n", config_line(c));
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(ROW_COLUMNS.iter().map(|c| c.header().to_string()).chain([format!("{}\n{}", Col::Bar.header(), bar_axis())]));
    for row in &summary.rows {
        table.add_row(row_cells(row));
    }
    out += &table.to_string();
    out.push('\n');
    let lost = &summary.lost;
    if lost.histogram_map_full + lost.in_flight_map_full > 0 {
        out += &format!(
            "warning: calls not recorded: {} (histogram map full), {} (in-flight map full)\n",
            lost.histogram_map_full, lost.in_flight_map_full
        );
    }
    if lost.histogram_entries_unread > 0 {
        out += &format!("warning: {} histogram entries could not be read from the kernel: their calls are missing from the rows\n", lost.histogram_entries_unread);
    }
    if lost.records > 0 {
        out += &format!("warning: {} request and stall records lost (ring buffer full): attribution is incomplete\n", lost.records);
    }
    if lost.probe_runs_skipped > 0 {
        out += &format!("warning: {} probe runs skipped by the kernel (another BPF program or a map syscall held the CPU): counts may be short\n", lost.probe_runs_skipped);
    }
    for e in summary.probes.evidence.iter().filter(|e| !e.available()) {
        out += &format!("note: {}\n", evidence_line(e));
    }
    out += &evidence_sections(summary);
    out += &findings_section(summary);
    out
}

/// `kstall: broker pid 21140 (kafka.Kafka), 30.3s traced, thread names from jvm`, and a newline.
pub fn title_line(summary: &Summary) -> String {
    let b = &summary.broker;
    format!("kstall: broker pid {} ({}), {:.1}s traced, thread names from {}\n", b.pid, b.main_class, summary.elapsed_seconds, summary.thread_names.as_str())
}

/// `/etc/kafka/server.properties (process.roles broker,controller, node.id 1)`.
pub fn config_line(c: &BrokerConfig) -> String {
    let mut notes = Vec::new();
    if !c.process_roles.is_empty() {
        let roles: Vec<&str> = c.process_roles.iter().map(|r| r.as_str()).collect();
        notes.push(format!("process.roles {}", roles.join(",")));
    } else {
        notes.push("ZooKeeper mode".to_string());
    }
    if let Some(id) = c.node_id {
        notes.push(format!("node.id {id}"));
    }
    format!("{} ({})", c.path, notes.join(", "))
}

/// The evidence tables (all but the syscall one, drawn above with its bars), each after a
/// title line; empty ones are left out.
fn evidence_sections(summary: &Summary) -> String {
    let mut out = String::new();
    if summary.requests.apis.is_empty() {
        out += &format!("\n{}\n", no_requests_line(summary));
    }
    for t in measurement_tables(summary).into_iter().skip(1).filter(|t| !t.rows.is_empty()) {
        out += &format!("\n{}\n", t.title);
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled).set_header(t.header());
        for row in t.rows {
            table.add_row(row.into_iter().enumerate().map(|(i, cell)| {
                let c = Cell::new(cell);
                if i >= t.numeric_from { c.set_alignment(CellAlignment::Right) } else { c }
            }));
        }
        out += &table.to_string();
        out += "\n";
        if t.title.starts_with("Produce latency") {
            out += &stalls_line(&summary.stalls);
            out.push('\n');
        }
    }
    if summary.requests.other_client_ids > 0 || summary.requests.untracked_client_requests > 0 {
        out += &format!(
            "(other): {} less active client ids and {} requests of client ids beyond the {} tracked\n",
            summary.requests.other_client_ids,
            summary.requests.untracked_client_requests,
            MAX_TRACKED_CLIENTS
        );
    }
    out
}

/// What a broker without answered requests shows instead of the request tables.
pub fn no_requests_line(summary: &Summary) -> String {
    let health = &summary.protocol;
    format!(
        "Kafka requests: none answered yet ({} read, {} framing errors, {} TLS connections)",
        health.requests_parsed, health.framing_errors, health.tls_connections
    )
}

/// Stalls by cause and what they did to Produce, in one line.
pub fn stalls_line(st: &StallSummary) -> String {
    let p = &st.produce;
    format!(
        "stalls (page-cache misses, and network-thread calls >= {}): {}; stalled Produce: {} ({} by page-cache misses); slowest 1%: {} of {} stalled; stalls added {} ({} by misses); other requests stalled: {}; acks=all Produce held by stalled followers: {} of {} ({} added)",
        duration(st.threshold_ns),
        if st.by_cause.is_empty() {
            "none".to_string()
        } else {
            st.by_cause.iter().filter_map(|c| c.cause.map(|k| format!("{} {} ({})", c.stalls, k.label(), duration(c.stall_ns)))).collect::<Vec<_>>().join(", ")
        },
        p.stalled_requests,
        p.stalled_by_miss,
        p.slowest_1pct_stalled,
        p.slowest_1pct,
        duration(p.stall_ns_added),
        duration(p.miss_ns_added),
        st.delayed.iter().filter(|r| r.api_key != PRODUCE).map(|r| r.stalled_requests).sum::<u64>(),
        st.replication.produce_delayed,
        st.replication.produce_acks_all,
        duration(st.replication.produce_added_ns),
    )
}

/// A table of the evidence, as text cells: one source for the Markdown and HTML reports.
pub struct MeasurementTable {
    pub title: &'static str,
    pub kind: TableKind,
    pub columns: Vec<Col>,
    pub rows: Vec<Vec<String>>,
    /// Columns (by index) holding numbers: right-aligned.
    pub numeric_from: usize,
}

impl MeasurementTable {
    /// The columns' headers, in order.
    pub fn header(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.header()).collect()
    }
}

/// Which evidence table a table is: the live view lays each out by its own column priorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Syscalls,
    Apis,
    Clients,
    Controller,
    Produce,
    Delayed,
    Replication,
    Connections,
    /// Both: misses by topic-partition and by the client.id served.
    Cold,
    WorstStalls,
    ThreadStalls,
}

/// A column of an evidence table, by what it holds: the presenters name columns by this, never
/// by their header text (the live view keeps them by priority, see `tui::columns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    Role,
    Syscall,
    Cache,
    Calls,
    P50,
    P90,
    P99,
    P999,
    Max,
    Bytes,
    PagesAdded,
    Api,
    Requests,
    PerS,
    BrokerP50,
    BrokerP99,
    SocketWaitP50,
    SocketWaitP99,
    ClientId,
    Listener,
    Connections,
    InFlightMax,
    InFlightMean,
    Produce,
    Delayed,
    DelayAdded,
    P99Delayed,
    P99Not,
    HeldByReplication,
    ReplicationAdded,
    Follower,
    Thread,
    Fetches,
    Stalled,
    MissesServing,
    ClientIds,
    Followers,
    Name,
    Misses,
    MissTime,
    Call,
    Took,
    Cause,
    File,
    Serving,
    DelayedProduce,
    Stalls,
    StallTime,
    Bar,
}

impl Col {
    /// The header the column is shown under.
    pub const fn header(self) -> &'static str {
        match self {
            Col::Role => "role",
            Col::Syscall => "syscall",
            Col::Cache => "cache",
            Col::Calls => "calls",
            Col::P50 => "p50",
            Col::P90 => "p90",
            Col::P99 => "p99",
            Col::P999 => "p99.9",
            Col::Max => "max",
            Col::Bytes => "bytes",
            Col::PagesAdded => "pages added",
            Col::Api => "api",
            Col::Requests => "requests",
            Col::PerS => "per s",
            Col::BrokerP50 => "broker p50",
            Col::BrokerP99 => "broker p99",
            Col::SocketWaitP50 => "socket wait p50",
            Col::SocketWaitP99 => "socket wait p99",
            Col::ClientId => "client.id",
            Col::Listener => "listener",
            Col::Connections => "connections",
            Col::InFlightMax => "in flight max",
            Col::InFlightMean => "in flight mean",
            Col::Produce => "Produce",
            Col::Delayed => "delayed",
            Col::DelayAdded => "delay added",
            Col::P99Delayed => "p99 delayed",
            Col::P99Not => "p99 not",
            Col::HeldByReplication => "held by replication",
            Col::ReplicationAdded => "replication added",
            Col::Follower => "follower",
            Col::Thread => "thread",
            Col::Fetches => "fetches",
            Col::Stalled => "stalled",
            Col::MissesServing => "misses serving",
            Col::ClientIds => "client.ids",
            Col::Followers => "followers",
            Col::Name => "name",
            Col::Misses => "misses",
            Col::MissTime => "miss time",
            Col::Call => "call",
            Col::Took => "took",
            Col::Cause => "cause",
            Col::File => "file",
            Col::Serving => "serving",
            Col::DelayedProduce => "delayed Produce",
            Col::Stalls => "stalls",
            Col::StallTime => "stall time",
            Col::Bar => "log2 histogram",
        }
    }
}

/// Every evidence table, in the order the table, Markdown and HTML show them.
pub fn measurement_tables(s: &Summary) -> Vec<MeasurementTable> {
    let mut tables = vec![syscall_table(s), api_table(s), client_table(s)];
    tables.extend(controller_table(s));
    tables.push(produce_table(s));
    tables.push(delayed_table(s));
    tables.push(replication_table(s));
    tables.extend(cold_tables(s));
    tables.push(worst_stalls_table(s));
    tables.push(thread_stalls_table(s));
    tables.push(thread_connections_table(s));
    tables
}

/// Every client's requests that stalls delayed, per API, most delayed first (`s.stalls.delayed`
/// rows with a delay): the blast radius.
pub fn delayed_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Requests delayed by stalls, per API and client.id",
        kind: TableKind::Delayed,
        columns: vec![Col::Api, Col::ClientId, Col::Requests, Col::Delayed, Col::DelayAdded, Col::P99Delayed, Col::P99Not, Col::HeldByReplication, Col::ReplicationAdded],
        rows: s
            .stalls
            .delayed
            .iter()
            .filter(|r| r.stalled_requests > 0 || r.replication_delayed > 0)
            .map(|r| {
                vec![
                    r.api.to_string(),
                    if r.client_id.is_empty() { "(none)".into() } else { r.client_id.clone() },
                    r.requests.to_string(),
                    r.stalled_requests.to_string(),
                    duration(r.added_ns),
                    of_set(r.stalled_requests, r.stalled.p99_ns, duration),
                    of_set(r.requests - r.stalled_requests, r.not_stalled.p99_ns, duration),
                    r.replication_delayed.to_string(),
                    duration(r.replication_ns),
                ]
            })
            .collect(),
        numeric_from: 2,
    }
}

/// The followers' Fetch connections on this broker, per (broker id, serving thread).
pub fn replication_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Followers' Fetch connections (replication)",
        kind: TableKind::Replication,
        columns: vec![Col::Follower, Col::Thread, Col::Listener, Col::Fetches, Col::Stalled, Col::DelayAdded],
        rows: s
            .stalls
            .replication
            .followers
            .iter()
            .map(|f| {
                vec![
                    format!("broker {}", f.broker_id),
                    s.thread_name(f.tid),
                    f.listener.clone().unwrap_or_default(),
                    f.fetches.to_string(),
                    f.stalled_fetches.to_string(),
                    duration(f.added_ns),
                ]
            })
            .collect(),
        numeric_from: 3,
    }
}

/// Who lives on each network thread, and how long it was stalled: what waits when it is blocked.
pub fn thread_connections_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Network threads' connections (stalled: share of the time traced; misses serving: the top cold reader and partition)",
        kind: TableKind::Connections,
        columns: vec![Col::Thread, Col::Listener, Col::MissesServing, Col::ClientIds, Col::Followers, Col::Connections, Col::Stalled],
        rows: s
            .requests
            .threads
            .iter()
            .map(|t| {
                let mut clients = t.clients.join(", ");
                if t.other_clients > 0 {
                    clients += &format!(" (+{} more)", t.other_clients);
                }
                let stalls = s.stalls.by_thread.iter().filter(|b| b.tid == t.tid);
                let stall_ns = s.stalls.thread_stall_ns(t.tid);
                let culprit = stalls
                    .filter_map(|b| match (&b.top_reader, &b.top_partition) {
                        (Some(reader), Some(partition)) => Some(format!("{reader} on {partition}")),
                        (reader, partition) => reader.clone().or_else(|| partition.clone()),
                    })
                    .next()
                    .unwrap_or_default();
                vec![
                    s.thread_name(t.tid),
                    t.listener.clone().unwrap_or_default(),
                    culprit,
                    clients,
                    t.followers.iter().map(i32::to_string).collect::<Vec<_>>().join(", "),
                    t.connections.to_string(),
                    format!("{:.0}%", stall_ns as f64 / (s.elapsed_seconds * 1e9).max(1.0) * 100.0),
                ]
            })
            .collect(),
        numeric_from: 4,
    }
}

pub fn syscall_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Syscall latency per thread role",
        kind: TableKind::Syscalls,
        columns: ROW_COLUMNS.to_vec(),
        rows: s.rows.iter().map(row_texts).collect(),
        numeric_from: ROW_NUMERIC_FROM,
    }
}

/// One row per API, in `s.requests.apis` order.
pub fn api_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Kafka requests per API (latency = socket wait + broker time)",
        kind: TableKind::Apis,
        columns: vec![Col::Api, Col::Requests, Col::PerS, Col::P50, Col::P99, Col::P999, Col::Max, Col::BrokerP50, Col::BrokerP99, Col::SocketWaitP50, Col::SocketWaitP99],
        rows: s
            .requests
            .apis
            .iter()
            .map(|a| {
                let waited = a.count.saturating_sub(a.socket_wait_unknown);
                let total = |ns| of_set(a.count, ns, duration);
                vec![
                    a.api.to_string(),
                    a.count.to_string(),
                    format!("{:.1}", a.rate_per_s),
                    total(a.total.p50_ns),
                    total(a.total.p99_ns),
                    total(a.total.p999_ns),
                    total(a.total.max_ns),
                    total(a.broker.p50_ns),
                    total(a.broker.p99_ns),
                    of_set(waited, a.socket_wait.p50_ns, duration),
                    of_set(waited, a.socket_wait.p99_ns, duration),
                ]
            })
            .collect(),
        numeric_from: 1,
    }
}

/// One row per (client.id, listener, API), in `s.requests.clients` order.
pub fn client_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Kafka requests per client.id",
        kind: TableKind::Clients,
        columns: vec![Col::ClientId, Col::Listener, Col::Api, Col::Requests, Col::PerS, Col::P50, Col::P99, Col::Max, Col::Connections, Col::InFlightMax, Col::InFlightMean],
        rows: s
            .requests
            .clients
            .iter()
            .map(|c| {
                vec![
                    if c.client_id.is_empty() { "(none)".into() } else { c.client_id.clone() },
                    c.listener.clone().unwrap_or_default(),
                    c.api.to_string(),
                    c.count.to_string(),
                    format!("{:.1}", c.rate_per_s),
                    of_set(c.count, c.total.p50_ns, duration),
                    of_set(c.count, c.total.p99_ns, duration),
                    of_set(c.count, c.total.max_ns, duration),
                    c.connections.to_string(),
                    c.max_in_flight.to_string(),
                    format!("{:.2}", c.mean_in_flight),
                ]
            })
            .collect(),
        numeric_from: 3,
    }
}

/// Only for brokers with a controller plane (KRaft combined mode, control.plane.listener.name).
pub fn controller_table(s: &Summary) -> Option<MeasurementTable> {
    let controller_plane = s.listeners.iter().any(|l| l.plane == Plane::Controller);
    (controller_plane || !s.controller_requests.is_empty()).then(|| MeasurementTable {
        title: "Controller-plane requests (the cluster's own traffic; not in the client tables, attribution or findings)",
        kind: TableKind::Controller,
        columns: vec![Col::Listener, Col::Api, Col::Requests, Col::PerS, Col::P50, Col::P99, Col::Max, Col::BrokerP50, Col::BrokerP99],
        rows: s
            .controller_requests
            .iter()
            .map(|a| {
                let total = |ns| of_set(a.count, ns, duration);
                vec![
                    a.listener.clone(),
                    a.api.to_string(),
                    a.count.to_string(),
                    format!("{:.1}", a.rate_per_s),
                    total(a.total.p50_ns),
                    total(a.total.p99_ns),
                    total(a.total.max_ns),
                    total(a.broker.p50_ns),
                    total(a.broker.p99_ns),
                ]
            })
            .collect(),
        numeric_from: 2,
    })
}

/// Produce latency: all, stalled, not stalled (a set that can be empty: `-`).
pub fn produce_table(s: &Summary) -> MeasurementTable {
    let p = &s.stalls.produce;
    MeasurementTable {
        title: "Produce latency, stalled and not",
        kind: TableKind::Produce,
        columns: vec![Col::Produce, Col::Requests, Col::P50, Col::P99, Col::P999, Col::Max],
        rows: [("all", p.requests, &p.all), ("stalled", p.stalled_requests, &p.stalled), ("not stalled", p.requests - p.stalled_requests, &p.not_stalled)]
            .into_iter()
            .map(|(label, n, q)| {
                let at = |ns| of_set(n, ns, duration);
                vec![label.into(), n.to_string(), at(q.p50_ns), at(q.p99_ns), at(q.p999_ns), at(q.max_ns)]
            })
            .collect(),
        numeric_from: 1,
    }
}

/// Page-cache misses by topic-partition, then by the client.id served: rows in
/// `s.stalls.cold_partitions` and `cold_readers` order.
pub fn cold_tables(s: &Summary) -> [MeasurementTable; 2] {
    [
        ("Page-cache misses by topic-partition (or file)", &s.stalls.cold_partitions),
        ("Page-cache misses by client.id served (cold readers)", &s.stalls.cold_readers),
    ]
    .map(|(title, rows)| MeasurementTable {
        title,
        kind: TableKind::Cold,
        columns: vec![Col::Name, Col::Misses, Col::MissTime, Col::Bytes, Col::PagesAdded],
        rows: rows
            .iter()
            .map(|m| vec![m.name.clone(), m.stalls.to_string(), duration(m.stall_ns), bytes(m.bytes), m.pages_added.to_string()])
            .collect(),
        numeric_from: 1,
    })
}

/// The longest stalls, in `s.stalls.worst` order, with what they delayed.
pub fn worst_stalls_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Longest network-thread stalls",
        kind: TableKind::WorstStalls,
        columns: vec![Col::Call, Col::Took, Col::Thread, Col::Listener, Col::Cause, Col::File, Col::Serving, Col::DelayedProduce, Col::DelayAdded],
        rows: s
            .stalls
            .worst
            .iter()
            .map(|w| {
                let (delayed, added) = if w.delayed_produce_known {
                    (w.delayed_produce.to_string(), duration(w.delayed_produce_ns))
                } else {
                    ("unknown inside TLS".to_string(), "-".to_string())
                };
                vec![
                    w.syscall.map_or("?", Syscall::name).to_string(),
                    duration(w.duration_ns),
                    s.thread_name(w.tid),
                    w.listener.clone().unwrap_or_default(),
                    w.cause.label().to_string(),
                    match (&w.topic_partition, &w.segment, &w.file) {
                        (Some(tp), Some(seg), _) => format!("{tp} {seg}"),
                        (_, _, Some(path)) => path.display().to_string(),
                        _ => String::new(),
                    },
                    w.request.as_ref().map_or(String::new(), |r| format!("{} {} #{}", r.api, r.client_id, r.correlation_id)),
                    delayed,
                    added,
                ]
            })
            .collect(),
        numeric_from: 7,
    }
}

pub fn thread_stalls_table(s: &Summary) -> MeasurementTable {
    MeasurementTable {
        title: "Network-thread stalls per thread",
        kind: TableKind::ThreadStalls,
        columns: vec![Col::Thread, Col::Listener, Col::Cause, Col::Stalls, Col::StallTime],
        rows: s
            .stalls
            .by_thread
            .iter()
            .map(|t| {
                vec![
                    s.thread_name(t.tid),
                    t.listener.clone().unwrap_or_default(),
                    t.cause.label().to_string(),
                    t.stalls.to_string(),
                    duration(t.stall_ns),
                ]
            })
            .collect(),
        numeric_from: 3,
    }
}

/// The findings, each with its detail and fix; empty without findings.
pub fn findings_section(summary: &Summary) -> String {
    let mut out = String::new();
    if summary.findings.is_empty() {
        return out;
    }
    out += "\nFindings\n";
    for f in &summary.findings {
        let w = super::words::words(f);
        out += &format!("[{}] {}\n  {}\n  fix: {}\n", f.severity.label(), w.title, w.detail, w.fix);
    }
    out
}

/// The optional tracepoints this kernel lacks, in words: `sock:sock_recv_length, ...` or `none`.
pub fn unavailable(probes: &ProbeStatus) -> String {
    if probes.unavailable.is_empty() {
        "none".into()
    } else {
        probes.unavailable.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// One kind of kernel evidence in words: its hooks, or what is missing and what that costs.
pub fn evidence_line(e: &EvidenceStatus) -> String {
    match &e.missing {
        None => format!("{}: {}", e.evidence.as_str(), e.hooks_text()),
        Some(why) => format!("{}: missing ({why}); without it, {}", e.evidence.as_str(), e.cost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstall_common::bucket_index;

    #[test]
    fn bar_shows_hits_and_misses_apart() {
        let mut h = LatencyHist::ZERO;
        h.buckets[bucket_index(13_000)] += 100_000; // 2^13 ns column
        h.buckets[bucket_index(8_000_000)] += 3; // 2^22 ns column
        let bar: Vec<char> = log2_bar(&h).chars().collect();
        assert_eq!(bar.len(), BAR_COLUMNS);
        assert_eq!(bar[1 + 13 - MIN_POW as usize], '█');
        assert!(bar[1 + 22 - MIN_POW as usize] != ' ', "misses must stay visible");
        assert_eq!(bar.iter().filter(|c| **c != ' ').count(), 2);
        assert_eq!(bar_axis().chars().count(), BAR_COLUMNS);
        assert_eq!(bar_axis().find("1ms"), Some(11));
    }

    /// Produce requests none of which a stall delayed: the stalled set is empty, and its
    /// percentiles read `-` (they are zeros, which would read as a measured `0ns`).
    #[test]
    fn empty_sets_read_a_dash() {
        let mut s = kstall_core::summary::empty_summary();
        let p = &mut s.stalls.produce;
        p.requests = 5;
        p.all = kstall_core::hist::Percentiles { p50_ns: 2_000_000, p90_ns: 2_000_000, p99_ns: 3_000_000, p999_ns: 3_000_000, max_ns: 3_000_000 };
        p.not_stalled = p.all;
        let text = table(&s);
        let stalled = text.lines().find(|l| l.starts_with("│ stalled ")).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(stalled.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>(), ["stalled", "0", "-", "-", "-", "-"]);
        assert!(text.contains("│ not stalled ┆        5 ┆ 2.00ms ┆ 3.00ms ┆ 3.00ms ┆ 3.00ms │"), "{text}");
        assert!(!text.contains("0ns ┆"), "{text}");
    }
}
