//! Conclusions an operator acts on, drawn from a [`Summary`]: each says what was seen, in
//! numbers, and what fixes it.
use serde::Serialize;

use kstall_common::Syscall;

use crate::{
    aggregate::Summary,
    listeners::ListenerInfo,
    output::{duration, plural},
    stalls::Cause,
};

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

/// A network thread's stalls: its name, how many, how long.
type ThreadTotal = (String, u64, u64);

/// Stalls of the causes `pick` keeps, per listener of their network thread (None: not known),
/// each with its threads, listeners by most stall time.
fn stalls_per_listener(s: &Summary, pick: impl Fn(Cause) -> bool) -> Vec<(Option<&str>, Vec<ThreadTotal>)> {
    let mut out: Vec<(Option<&str>, Vec<ThreadTotal>)> = Vec::new();
    for t in s.stalls.by_thread.iter().filter(|t| pick(t.cause)) {
        let listener = t.listener.as_deref();
        let at = match out.iter().position(|(l, _)| *l == listener) {
            Some(at) => at,
            None => {
                out.push((listener, Vec::new()));
                out.len() - 1
            }
        };
        let name = s.thread_name(t.tid);
        match out[at].1.iter_mut().find(|(n, _, _)| *n == name) {
            Some(thread) => {
                thread.1 += t.stalls;
                thread.2 += t.stall_ns;
            }
            None => out[at].1.push((name, t.stalls, t.stall_ns)),
        }
    }
    let time = |threads: &[ThreadTotal]| threads.iter().map(|t| t.2).sum::<u64>();
    for (_, threads) in &mut out {
        threads.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    }
    out.sort_by(|a, b| time(&b.1).cmp(&time(&a.1)).then(a.0.cmp(&b.0)));
    out
}

/// "The misses were on the network thread of listener PLAINTEXT (name: 380 misses, 24.7s)." and
/// which listeners' clients' Produce requests were delayed; empty when no stalled thread's
/// listener is known (thread names from comm, say). `what`: the stalls' name, one and many.
fn listener_sentences(
    s: &Summary,
    what: (&str, &str),
    pick: impl Fn(Cause) -> bool,
    delayed: impl Fn(&crate::stalls::ListenerProduce) -> u64,
) -> String {
    let places = stalls_per_listener(s, pick);
    if places.iter().all(|(l, _)| l.is_none()) {
        return String::new();
    }
    let threads: usize = places.iter().map(|(_, t)| t.len()).sum();
    let groups: Vec<String> = places
        .iter()
        .map(|(listener, threads)| {
            let shown: Vec<String> = threads
                .iter()
                .take(4)
                .map(|(name, n, ns)| format!("{name}: {n} {}, {}", if *n == 1 { what.0 } else { what.1 }, duration(*ns)))
                .collect();
            let more = if threads.len() > 4 { format!("; {} more", threads.len() - 4) } else { String::new() };
            let of = match listener {
                Some(l) => format!("listener {l}"),
                None => "an unknown listener".into(),
            };
            format!("{of} ({}{more})", shown.join("; "))
        })
        .collect();
    let mut out = format!(" The {} were on the network thread{} of {}.", what.1, plural(threads as u64), groups.join(" and of "));
    let clients: Vec<String> = s
        .stalls
        .produce
        .by_listener
        .iter()
        .filter(|p| delayed(p) > 0)
        .map(|p| match &p.listener {
            Some(l) => format!("{l} clients ({})", delayed(p)),
            None => format!("clients of an unknown listener ({})", delayed(p)),
        })
        .collect();
    if !clients.is_empty() {
        out += &format!(" The Produce requests they delayed were those of {}.", clients.join(" and of "));
    }
    let blind: Vec<&str> =
        places.iter().filter_map(|(l, _)| *l).filter(|l| s.listener(l).is_some_and(|i| i.encrypted)).collect();
    if !blind.is_empty() {
        let (listener, verb, its) = if blind.len() == 1 { ("Listener", "is", "its") } else { ("Listeners", "are", "their") };
        out += &format!(
            " {listener} {} {verb} TLS: the requests {its} stalls delayed are unknown to kstall, not counted here.",
            blind.join(", ")
        );
    }
    out
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
        detail += &listener_sentences(s, ("miss", "misses"), |c| c == Cause::PageCacheMiss, |p| p.stalled_by_miss);
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
                "{} Produce requests overlapped a slow network-thread call that was not a page-cache miss; stalls by cause: {}.{}",
                other_stalls,
                causes.join(", "),
                listener_sentences(s, ("slow call", "slow calls"), |c| c != Cause::PageCacheMiss, |p| p.stalled_requests.saturating_sub(p.stalled_by_miss)),
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
    let encrypted: Vec<&ListenerInfo> = s.listeners.iter().filter(|l| l.encrypted).collect();
    if !encrypted.is_empty() {
        out.push(tls_listener_finding(s, &encrypted));
    } else if s.protocol.tls_connections > 0 {
        out.push(Finding {
            id: "tls_listener",
            severity: Severity::Info,
            title: "Some connections are TLS: no request view for them".into(),
            detail: format!(
                "{} connection{} of the network threads carried TLS records, which kstall cannot parse from the broker's syscalls. Their syscall latency and page-cache misses (TLS brokers read log segments with pread on the network thread) are still shown; their request latency and client attribution are not.",
                s.protocol.tls_connections,
                plural(s.protocol.tls_connections)
            ),
            fix: "Trace a PLAINTEXT or SASL_PLAINTEXT listener for request-level attribution.".into(),
        });
    }
    let h = &s.protocol;
    if h.requests_parsed == 0 && h.framing_errors > 0 && h.tls_connections == 0 && encrypted.is_empty() {
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
            && slow_writes(r) >= SLOW_WRITE_MIN_SLOW
    }) {
        out.push(Finding {
            id: "slow_log_writes",
            severity: Severity::Warning,
            title: format!("{} threads wait on {}: p99 {}", row.role.label(), row.syscall, duration(row.percentiles.p99_ns)),
            detail: format!(
                "{} {} calls on {} threads ({} of them {} or longer), p50 {}, p99 {}, max {}. Writes that wait on the disk hold the thread that makes them (a request handler: its requests wait; the log flusher: flushes fall behind).",
                row.count,
                row.syscall,
                row.role.label(),
                slow_writes(row),
                duration(SLOW_WRITE_NS),
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

/// Known before any byte is seen: these listeners are TLS (SSL, SASL_SSL), so kstall has no
/// per-request view there. Says what it does measure on them, and their stalls.
fn tls_listener_finding(s: &Summary, encrypted: &[&ListenerInfo]) -> Finding {
    let names: Vec<&str> = encrypted.iter().map(|l| l.name.as_str()).collect();
    let mut detail = String::new();
    for l in encrypted {
        let protocol = l.security_protocol.map_or("TLS", |p| p.as_str());
        let address = l.address.as_ref().map_or(String::new(), |a| format!(", {a}"));
        let threads: Vec<String> = s
            .threads
            .iter()
            .filter(|t| t.listener.as_ref().is_some_and(|tl| tl.name == l.name) && t.role == crate::roles::Role::Network)
            .map(|t| t.name().to_string())
            .collect();
        let on_threads = if threads.is_empty() {
            "its network threads".to_string()
        } else {
            format!("its network thread{} {}", plural(threads.len() as u64), threads.join(", "))
        };
        let stalls = s.stalls.by_thread.iter().filter(|t| t.listener.as_deref() == Some(l.name.as_str()));
        let (mut n, mut ns, mut misses) = (0, 0, 0);
        for t in stalls {
            n += t.stalls;
            ns += t.stall_ns;
            misses += if t.cause == Cause::PageCacheMiss { t.stalls } else { 0 };
        }
        let plane = if l.plane == crate::listeners::Plane::Controller { ", controller plane" } else { "" };
        let stalls = if n == 0 {
            "none in this trace".to_string()
        } else {
            format!("{n} stall{}, {} ({misses} page-cache miss{})", plural(n), duration(ns), if misses == 1 { "" } else { "es" })
        };
        detail += &format!(
            "On listener {} ({protocol}{address}{plane}), requests are encrypted, so kstall has no per-request view there: no API, client.id or request latency, and no join of Produce requests to the stalls that delayed them. What it measures there: the syscalls of {on_threads} (the \"network {}\" rows), page-cache hit/miss verdicts of their file reads (TLS brokers read log segments with pread64 on the network thread, not sendfile), and stalls with their thread and file: {stalls}. ",
            l.name, l.name,
        );
    }
    if s.protocol.tls_connections > 0 {
        detail += &format!(
            "{} connection{} of the network threads carried TLS records.",
            s.protocol.tls_connections,
            plural(s.protocol.tls_connections)
        );
    }
    let (listener_word, verb) = if names.len() == 1 { ("Listener", "is") } else { ("Listeners", "are") };
    Finding {
        id: "tls_listener",
        severity: Severity::Info,
        title: format!("{listener_word} {} {verb} TLS: no per-request view there", names.join(", ")),
        detail: detail.trim_end().to_string(),
        fix: format!(
            "Stalls on {} are still reported by thread and file. For request-level attribution (which requests a stall delayed), trace while the clients in question use a PLAINTEXT or SASL_PLAINTEXT listener.",
            names.join(", ")
        ),
    }
}

/// Network threads busier than this are a bottleneck in the making.
const NETWORK_BUSY_WARNING: f64 = 0.7;
const NETWORK_BUSY_CRITICAL: f64 = 0.9;
/// fsync/fdatasync/pwrite p99 from which the disk is holding threads up.
const SLOW_WRITE_NS: u64 = 10_000_000;
/// A single slow flush is not a pattern: at least this many calls, and this many of them slow
/// (a KRaft broker fsyncs its metadata log on every append, quickly, and a checkpoint file
/// now and then: one slow checkpoint among a dozen fast appends is a p99 of 10+ ms).
const SLOW_WRITE_MIN_CALLS: u64 = 10;
const SLOW_WRITE_MIN_SLOW: u64 = 3;

/// Calls of a row that surely took SLOW_WRITE_NS or more (their bucket starts there or above).
fn slow_writes(row: &crate::aggregate::Row) -> u64 {
    row.buckets.iter().filter(|b| b.lower_ns >= SLOW_WRITE_NS).map(|b| b.count).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{ThreadInfo, empty_summary},
        listeners::{self, Listener},
        roles::{Role, RoleSource},
        stalls::{ListenerProduce, ThreadStalls},
    };

    const PLAINTEXT_THREAD: &str = "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0";
    const SSL_THREAD: &str = "data-plane-kafka-network-thread-1-SSL-SSL-1";

    /// A broker with a PLAINTEXT and an SSL listener, one network thread each (tids 1, 2).
    fn two_listeners() -> Summary {
        let mut s = empty_summary();
        for (tid, name) in [(1, PLAINTEXT_THREAD), (2, SSL_THREAD)] {
            s.threads.push(ThreadInfo {
                tid,
                comm: "data-plane-kafk".into(),
                jvm_name: Some(name.into()),
                role: Role::Network,
                role_source: RoleSource::JvmName,
                listener: listeners::thread_listener(name, None),
            });
        }
        let network: Vec<&Listener> = s.threads.iter().filter_map(|t| t.listener.as_ref()).collect();
        s.listeners = listeners::describe(None, &network);
        s
    }

    fn thread_stalls(tid: u32, listener: &str, cause: Cause, stalls: u64, ms: u64) -> ThreadStalls {
        ThreadStalls { tid, listener: Some(listener.into()), cause, stalls, stall_ns: ms * 1_000_000 }
    }

    /// An fsync row of `fast` calls of 2 us and `slow` of 20 ms.
    fn fsync_row(fast: usize, slow: usize) -> crate::aggregate::Row {
        let latencies: Vec<u64> = std::iter::repeat_n(2_000, fast).chain(std::iter::repeat_n(20_000_000, slow)).collect();
        let key = crate::aggregate::RowKey { role: Role::Other, listener: None, syscall: Syscall::Fsync, cache: kstall_common::CacheResult::NoFileRead };
        crate::aggregate::row(key, crate::aggregate::tests::hist_of(&latencies))
    }

    #[test]
    fn one_slow_fsync_among_fast_ones_is_not_a_finding_three_are() {
        let mut s = empty_summary();
        s.rows.push(fsync_row(12, 1));
        assert!(s.rows[0].percentiles.p99_ns >= SLOW_WRITE_NS, "the p99 alone would say slow");
        assert!(!findings(&s).iter().any(|f| f.id == "slow_log_writes"));
        s.rows[0] = fsync_row(12, 3);
        let f = findings(&s);
        let slow = f.iter().find(|f| f.id == "slow_log_writes").expect("three slow fsyncs are");
        assert!(slow.detail.contains("15 fsync calls on other threads (3 of them 10.0ms or longer)"), "{}", slow.detail);
    }

    #[test]
    fn tls_finding_names_the_ssl_listener_and_what_it_still_measures() {
        let mut s = two_listeners();
        s.stalls.by_thread.push(thread_stalls(2, "SSL", Cause::PageCacheMiss, 4, 40));
        s.stalls.by_thread.push(thread_stalls(2, "SSL", Cause::OffCpu, 1, 2));
        let f = findings(&s);
        let tls = f.iter().find(|f| f.id == "tls_listener").expect("a TLS finding before any TLS byte was seen");
        assert_eq!(tls.title, "Listener SSL is TLS: no per-request view there");
        assert!(tls.detail.starts_with("On listener SSL (SSL), requests are encrypted, so kstall has no per-request view there"), "{}", tls.detail);
        for part in ["no API, client.id or request latency", "pread64", SSL_THREAD, "5 stalls, 42.0ms (4 page-cache misses)"] {
            assert!(tls.detail.contains(part), "{part}: {}", tls.detail);
        }
        assert!(!tls.detail.contains("PLAINTEXT"), "{}", tls.detail);
        assert!(!f.iter().any(|f| f.id == "framing_not_parsed"));
        // Without a TLS listener, and no TLS bytes, no such finding.
        assert!(!findings(&empty_summary()).iter().any(|f| f.id == "tls_listener"));
    }

    #[test]
    fn miss_finding_says_which_listener_stalled_and_whose_produce_waited() {
        let mut s = two_listeners();
        s.stalls.by_thread.push(thread_stalls(1, "PLAINTEXT", Cause::PageCacheMiss, 380, 24_700));
        s.stalls.by_thread.push(thread_stalls(2, "SSL", Cause::PageCacheMiss, 3, 30));
        let p = &mut s.stalls.produce;
        (p.requests, p.stalled_requests, p.stalled_by_miss, p.slowest_1pct, p.slowest_1pct_stalled) = (1790, 327, 327, 18, 18);
        p.by_listener = vec![ListenerProduce { listener: Some("PLAINTEXT".into()), requests: 1790, stalled_requests: 327, stalled_by_miss: 327 }];
        let f = findings(&s);
        let miss = f.iter().find(|f| f.id == "produce_stalled_by_page_cache_miss").unwrap();
        let expected = format!(
            "The misses were on the network threads of listener PLAINTEXT ({PLAINTEXT_THREAD}: 380 misses, 24.7s) and of listener SSL ({SSL_THREAD}: 3 misses, 30.0ms). The Produce requests they delayed were those of PLAINTEXT clients (327). Listener SSL is TLS"
        );
        assert!(miss.detail.contains(&expected), "{}", miss.detail);
        assert_eq!(f[0].id, "produce_stalled_by_page_cache_miss");
    }

    #[test]
    fn listeners_unknown_keep_the_finding_as_it_was() {
        let mut s = empty_summary();
        s.stalls.by_thread.push(ThreadStalls { tid: 7, listener: None, cause: Cause::OffCpu, stalls: 2, stall_ns: 4_000_000 });
        let p = &mut s.stalls.produce;
        (p.requests, p.stalled_requests) = (100, 2);
        p.by_listener = vec![ListenerProduce { listener: None, requests: 100, stalled_requests: 2, stalled_by_miss: 0 }];
        let f = findings(&s);
        let slow = f.iter().find(|f| f.id == "produce_stalled_by_slow_network_thread_calls").unwrap();
        assert!(!slow.detail.contains("listener"), "{}", slow.detail);
    }
}
