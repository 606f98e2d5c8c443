//! Conclusions an operator acts on, drawn from a [`Summary`]: each says what was seen, in
//! numbers, and what fixes it.
use serde::Serialize;

use kstall_ebpf::Syscall;

use crate::{aggregate::Summary, output::duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Stable identifier for scripts and alerts.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    pub fix: String,
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "0%".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

pub fn findings(s: &Summary) -> Vec<Finding> {
    let mut out = Vec::new();
    let p = &s.stalls.produce;
    if p.stalled_by_miss > 0 {
        let reader = s.stalls.cold_readers.first();
        let partition = s.stalls.cold_partitions.first();
        let mut detail = format!(
            "{} of {} Produce requests ({}) were delayed by page-cache-miss reads on their network thread, {} in all; they are {} of the {} slowest 1% (p99 {}). Produce p99 was {} when stalled, {} when not.",
            p.stalled_by_miss,
            p.requests,
            percent(p.stalled_by_miss, p.requests),
            duration(p.miss_ns_added),
            p.slowest_1pct_stalled,
            p.slowest_1pct,
            duration(p.all.p99_ns),
            duration(p.stalled.p99_ns),
            duration(p.not_stalled.p99_ns),
        );
        if let Some(r) = reader {
            detail += &format!(" Top cold reader: client.id \"{}\" ({} misses, {}).", r.name, r.stalls, duration(r.stall_ns));
        }
        if let Some(t) = partition {
            detail += &format!(" Top cold partition: {} ({} misses, {}).", t.name, t.stalls, duration(t.stall_ns));
        }
        let who = reader.map_or("lagging consumers".to_string(), |r| format!("\"{}\"", r.name));
        out.push(Finding {
            id: "produce_stalled_by_page_cache_miss",
            severity: if p.slowest_1pct_stalled * 2 >= p.slowest_1pct.max(1) { Severity::Critical } else { Severity::Warning },
            title: "Produce requests wait behind page-cache misses of Fetch sendfile on network threads".into(),
            detail,
            fix: format!(
                "A network thread serves Fetch with sendfile; reading data no longer in the page cache blocks every connection of that thread (KAFKA-7504). Keep {who} from reading cold data at peak (or throttle it with a fetch quota), give the page cache more memory, or raise num.network.threads to shrink the blast radius."
            ),
        });
    }
    let other_stalls = p.stalled_requests - p.stalled_by_miss.min(p.stalled_requests);
    if other_stalls > 0 {
        let causes: Vec<String> = s
            .stalls
            .by_cause
            .iter()
            .filter_map(|c| c.cause.map(|cause| format!("{} {} ({})", c.stalls, cause.label(), duration(c.stall_ns))))
            .collect();
        out.push(Finding {
            id: "produce_stalled_by_slow_network_thread_calls",
            severity: Severity::Info,
            title: format!("Network-thread calls slower than {} delayed Produce requests", duration(s.stalls.threshold_ns)),
            detail: format!(
                "{} Produce requests overlapped a slow network-thread call that was not a page-cache miss; stalls by cause: {}.",
                other_stalls,
                causes.join(", ")
            ),
            fix: "Off-CPU stalls point at CPU contention on the broker host; blocked-in-kernel ones at I/O or locks outside the page cache.".into(),
        });
    }
    for sp in s.requests.sync_producers.iter().take(3) {
        out.push(Finding {
            id: "synchronous_producer",
            severity: Severity::Warning,
            title: format!("client.id \"{}\" produces synchronously", sp.client_id),
            detail: format!(
                "{} Produce requests on one connection, strictly one at a time: each sent {} (median) after the previous response, each taking {}. Its throughput is capped near {:.0} requests/s by the round trip, whatever the broker's capacity.",
                sp.produce_requests,
                duration(sp.median_gap_ns),
                duration(sp.median_latency_ns),
                sp.max_requests_per_s
            ),
            fix: "Produce asynchronously: send without waiting for each result (callbacks or futures), and let the client batch (linger.ms, batch.size) with several requests in flight.".into(),
        });
    }
    if s.protocol.tls_connections > 0 {
        out.push(Finding {
            id: "tls_listener",
            severity: Severity::Info,
            title: "Some connections are TLS: no request view for them".into(),
            detail: format!(
                "{} connection{} of the network threads carried TLS records, which kstall cannot parse from the broker's syscalls. Their syscall latency and page-cache misses (TLS brokers read log segments with pread on the network thread) are still shown; their request latency and client attribution are not.",
                s.protocol.tls_connections,
                if s.protocol.tls_connections == 1 { "" } else { "s" }
            ),
            fix: "Trace a PLAINTEXT or SASL_PLAINTEXT listener for request-level attribution.".into(),
        });
    }
    let h = &s.protocol;
    if h.requests_parsed == 0 && h.framing_errors > 0 && h.tls_connections == 0 {
        out.push(Finding {
            id: "framing_not_parsed",
            severity: Severity::Info,
            title: "No Kafka request could be parsed on the network threads' sockets".into(),
            detail: format!(
                "{} socket reads of the network threads did not parse as Kafka requests, and none did. Request latency and client attribution are unavailable; syscall latency and page-cache misses are unaffected.",
                h.framing_errors
            ),
            fix: "Check that the traced process is a Kafka broker with a PLAINTEXT or SASL_PLAINTEXT listener.".into(),
        });
    }
    if s.lost.events > 0 {
        out.push(Finding {
            id: "events_lost",
            severity: Severity::Warning,
            title: "Request and stall records were lost".into(),
            detail: format!(
                "{} records were dropped because the ring buffer was full; request latency and attribution are missing them (syscall histograms are complete).",
                s.lost.events
            ),
            fix: "Raise --stall-threshold so fewer slow calls are reported; kstall drains its 4 MiB buffer every 100 ms.".into(),
        });
    }
    if let Some(busy) = s.network_busy_share().filter(|b| *b >= NETWORK_BUSY_WARNING) {
        out.push(Finding {
            id: "network_threads_saturated",
            severity: if busy >= NETWORK_BUSY_CRITICAL { Severity::Critical } else { Severity::Warning },
            title: format!("Network threads are busy {:.0}% of the time", busy * 100.0),
            detail: format!(
                "The network threads spent {:.0}% of the {:.0} s traced outside epoll_wait. Every connection of a thread waits while it works: requests queue in their sockets (see socket wait).",
                busy * 100.0,
                s.elapsed_seconds
            ),
            fix: "Raise num.network.threads, and look at what the busy time is spent on in the network rows (sendfile misses, large responses).".into(),
        });
    }
    for row in s.rows.iter().filter(|r| {
        matches!(r.key.syscall, Syscall::Fsync | Syscall::Fdatasync | Syscall::Pwrite64)
            && r.count >= SLOW_WRITE_MIN_CALLS
            && r.percentiles.p99_ns >= SLOW_WRITE_NS
    }) {
        out.push(Finding {
            id: "slow_log_writes",
            severity: Severity::Warning,
            title: format!("{} threads wait on {}: p99 {}", row.role.label(), row.syscall, duration(row.percentiles.p99_ns)),
            detail: format!(
                "{} {} calls on {} threads, p50 {}, p99 {}, max {}. Writes that wait on the disk hold the thread that makes them (a request handler: its requests wait; the log flusher: flushes fall behind).",
                row.count,
                row.syscall,
                row.role.label(),
                duration(row.percentiles.p50_ns),
                duration(row.percentiles.p99_ns),
                duration(row.percentiles.max_ns)
            ),
            fix: "Check the log disk's write latency (iostat -x), and flush settings (log.flush.interval.*): Kafka relies on replication, not fsync, for durability.".into(),
        });
    }
    if !out.iter().any(|f| f.severity <= Severity::Warning) {
        let busy = s.network_busy_share().map_or("n/a".to_string(), |b| format!("{:.0}%", b * 100.0));
        let misses: u64 = s
            .rows
            .iter()
            .filter(|r| r.role == crate::roles::Role::Network && r.cache == "miss")
            .map(|r| r.count)
            .sum();
        out.push(Finding {
            id: "no_problem_found",
            severity: Severity::Info,
            title: "No problem found".into(),
            detail: format!(
                "{}; {} page-cache misses on network threads; network threads busy {}; no slow log writes.",
                if p.requests > 0 {
                    format!("Produce p99 {} over {} requests", duration(p.all.p99_ns), p.requests)
                } else {
                    "no Produce requests traced".into()
                },
                misses,
                busy
            ),
            fix: "Nothing to fix in what kstall can see. If clients still see latency, look between them and the broker (network, client-side batching).".into(),
        });
    }
    out.sort_by_key(|f| f.severity);
    out
}

/// Network threads busier than this are a bottleneck in the making.
const NETWORK_BUSY_WARNING: f64 = 0.7;
const NETWORK_BUSY_CRITICAL: f64 = 0.9;
/// fsync/fdatasync/pwrite p99 from which the disk is holding threads up.
const SLOW_WRITE_NS: u64 = 10_000_000;
/// A single slow flush is not a pattern.
const SLOW_WRITE_MIN_CALLS: u64 = 10;
