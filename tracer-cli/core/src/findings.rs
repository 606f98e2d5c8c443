//! The rules: which findings a [`Summary`] makes, how severe, and their figures (see
//! [`crate::finding`]). The presenters put them into words.
use kstall_common::{CacheResult, Syscall};

use crate::{
    finding::{
        AllClear, CauseCount, Culprit, Figures, Finding, ListenerCount, ListenerStalls, MissStalls, ReplicationDelayed,
        Severity, SlowCallStalls, SlowWrites, StalledThread, SyncProducerFigures, ThreadBlocked, ThreadCause, ThreadTotal,
        TlsListener, TlsListeners, Victim, Victims,
    },
    kafka::PRODUCE,
    listeners::Plane,
    requests::DelayedRow,
    roles::Role,
    stalls::{Cause, ListenerProduce},
    summary::{Row, Summary},
    units::in_set,
};

/// Stalls of the causes `pick` keeps, per listener of their network thread, each with its
/// threads, listeners by most stall time; empty when no stalled thread's listener is known
/// (thread names from comm, say), as the sentence about places is then left out.
fn places(s: &Summary, pick: impl Fn(Cause) -> bool) -> Vec<ListenerStalls> {
    let mut out: Vec<ListenerStalls> = Vec::new();
    for t in s.stalls.by_thread.iter().filter(|t| pick(t.cause)) {
        let at = match out.iter().position(|l| l.listener == t.listener) {
            Some(at) => at,
            None => {
                out.push(ListenerStalls { listener: t.listener.clone(), threads: Vec::new() });
                out.len() - 1
            }
        };
        let name = s.thread_name(t.tid);
        match out[at].threads.iter_mut().find(|n| n.thread == name) {
            Some(thread) => {
                thread.stalls += t.stalls;
                thread.stall_ns += t.stall_ns;
            }
            None => out[at].threads.push(ThreadTotal { thread: name, stalls: t.stalls, stall_ns: t.stall_ns }),
        }
    }
    if out.iter().all(|l| l.listener.is_none()) {
        return Vec::new();
    }
    let time = |l: &ListenerStalls| l.threads.iter().map(|t| t.stall_ns).sum::<u64>();
    for l in &mut out {
        l.threads.sort_by(|a, b| b.stall_ns.cmp(&a.stall_ns).then(a.thread.cmp(&b.thread)));
    }
    out.sort_by(|a, b| time(b).cmp(&time(a)).then(a.listener.cmp(&b.listener)));
    out
}

/// The listeners whose clients' Produce requests the stalls delayed (by `delayed`), when the
/// places are known.
fn delayed_by_listener(s: &Summary, places: &[ListenerStalls], delayed: impl Fn(&ListenerProduce) -> u64) -> Vec<ListenerCount> {
    if places.is_empty() {
        return Vec::new();
    }
    s.stalls
        .produce
        .by_listener
        .iter()
        .filter(|p| delayed(p) > 0)
        .map(|p| ListenerCount { listener: p.listener.clone(), requests: delayed(p) })
        .collect()
}

/// TLS listeners among the places: the requests their stalls delayed are not counted.
fn tls_places(s: &Summary, places: &[ListenerStalls]) -> Vec<String> {
    places
        .iter()
        .filter_map(|l| l.listener.as_deref())
        .filter(|l| s.listener(l).is_some_and(|i| i.encrypted))
        .map(str::to_string)
        .collect()
}

/// The network threads were busy enough for a Critical saturation finding, and page-cache-miss
/// stalls were at least half of that busy time: the misses are its cause.
fn misses_saturate_network_threads(s: &Summary) -> bool {
    let Some(busy) = s.network_busy_share().filter(|b| *b >= NETWORK_BUSY_CRITICAL) else { return false };
    let busy_ns = busy * s.network_traced_ns();
    let miss_ns: u64 = s.stalls.by_cause.iter().filter(|c| c.cause == Some(Cause::PageCacheMiss)).map(|c| c.stall_ns).sum();
    miss_ns as f64 * 2.0 >= busy_ns
}

pub fn findings(s: &Summary) -> Vec<Finding> {
    let mut out = Vec::new();
    let p = &s.stalls.produce;
    if explains_a_share(p.stalled_by_miss, p.requests, p.slowest_1pct_stalled, p.slowest_1pct) {
        let culprit = |m: &crate::stalls::MissTotals| Culprit { name: m.name.clone(), stalls: m.stalls, stall_ns: m.stall_ns };
        let places = places(s, |c| c == Cause::PageCacheMiss);
        let saturates = misses_saturate_network_threads(s);
        // Critical when the stalled make up half the slowest 1%, or when the misses are what
        // saturates the network threads (the saturation finding then follows its cause).
        let severity =
            if p.slowest_1pct_stalled * 2 >= p.slowest_1pct.max(1) || saturates { Severity::Critical } else { Severity::Warning };
        out.push(Finding::new(
            severity,
            Figures::ProduceStalledByPageCacheMiss(MissStalls {
                requests: p.requests,
                stalled_by_miss: p.stalled_by_miss,
                stalled_requests: p.stalled_requests,
                miss_ns_added: p.miss_ns_added,
                slowest_1pct: p.slowest_1pct,
                slowest_1pct_stalled: p.slowest_1pct_stalled,
                p99_ns: p.all.p99_ns,
                stalled_p99_ns: in_set(p.stalled_requests, p.stalled.p99_ns),
                not_stalled_p99_ns: in_set(p.requests - p.stalled_requests, p.not_stalled.p99_ns),
                top_reader: s.stalls.cold_readers.first().map(culprit),
                top_partition: s.stalls.cold_partitions.first().map(culprit),
                delayed_by_listener: delayed_by_listener(s, &places, |p| p.stalled_by_miss),
                tls_listeners: tls_places(s, &places),
                places,
                partitions: p.stalled_partitions.clone(),
                others_delayed: others_delayed(s, |r| r.stalled_by_miss, |r| r.miss_ns),
                saturates_network_threads: saturates,
            }),
        ));
    }
    let other_stalls = p.stalled_requests - p.stalled_by_miss.min(p.stalled_requests);
    if other_stalls > 0 {
        let places = places(s, |c| c != Cause::PageCacheMiss);
        out.push(Finding::new(
            Severity::Info,
            Figures::ProduceStalledBySlowNetworkThreadCalls(SlowCallStalls {
                threshold_ns: s.stalls.threshold_ns,
                requests: other_stalls,
                by_cause: s
                    .stalls
                    .by_cause
                    .iter()
                    .filter_map(|c| c.cause.map(|cause| CauseCount { cause, stalls: c.stalls, stall_ns: c.stall_ns }))
                    .collect(),
                delayed_by_listener: delayed_by_listener(s, &places, |p| p.stalled_requests.saturating_sub(p.stalled_by_miss)),
                tls_listeners: tls_places(s, &places),
                places,
            }),
        ));
    }
    out.extend(replication_finding(s));
    out.extend(blocked_thread_findings(s));
    // A client pattern never leads while the broker's stalls explain the latency: with half or
    // more of its round trip added by stalls it follows the broker's findings (as Info), and
    // is left out when none of them was made.
    let broker_findings = out.iter().filter(|f| f.id.is_broker_cause()).count();
    for sp in s.requests.sync_producers.iter().take(3) {
        let row = s.stalls.delayed.iter().find(|r| r.api_key == PRODUCE && r.client_id == sp.client_id);
        let added = row.map_or(0, |r| r.added_ns + r.replication_ns);
        let latency = row.map_or(0, |r| r.latency_sum_ns);
        let broker_bound = latency > 0 && added * 2 >= latency;
        if broker_bound && broker_findings == 0 {
            continue;
        }
        out.push(Finding::new(
            if broker_bound { Severity::Info } else { Severity::Warning },
            Figures::SynchronousProducer(SyncProducerFigures {
                client_id: sp.client_id.clone(),
                produce_requests: sp.produce_requests,
                median_gap_ns: sp.median_gap_ns,
                median_latency_ns: sp.median_latency_ns,
                max_requests_per_s: sp.max_requests_per_s,
                stall_added_ns: added,
                latency_ns: latency,
            }),
        ));
    }
    let tls = tls_listeners(s);
    if !tls.is_empty() || s.protocol.tls_connections > 0 {
        out.push(Finding::new(
            Severity::Info,
            Figures::TlsListener(TlsListeners { listeners: tls, tls_connections: s.protocol.tls_connections }),
        ));
    }
    let h = &s.protocol;
    if h.requests_parsed == 0 && h.framing_errors > 0 && h.tls_connections == 0 && !s.listeners.iter().any(|l| l.encrypted) {
        out.push(Finding::new(Severity::Info, Figures::FramingNotParsed { framing_errors: h.framing_errors }));
    }
    if s.lost.records > 0 {
        out.push(Finding::new(Severity::Warning, Figures::RecordsLost { records: s.lost.records }));
    }
    if s.lost.probe_runs_skipped > 0 {
        out.push(Finding::new(Severity::Warning, Figures::ProbeRunsSkipped { probe_runs_skipped: s.lost.probe_runs_skipped }));
    }
    if s.lost.histogram_entries_unread > 0 {
        out.push(Finding::new(
            Severity::Warning,
            Figures::HistogramsUnread { histogram_entries_unread: s.lost.histogram_entries_unread },
        ));
    }
    if let Some(busy) = s.network_busy_share().filter(|b| *b >= NETWORK_BUSY_WARNING) {
        out.push(Finding::new(
            if busy >= NETWORK_BUSY_CRITICAL { Severity::Critical } else { Severity::Warning },
            Figures::NetworkThreadsSaturated { busy_share: busy, traced_seconds: s.elapsed_seconds },
        ));
    }
    for row in s.rows.iter().filter(|r| {
        matches!(r.syscall, Syscall::Fsync | Syscall::Fdatasync | Syscall::Pwrite64)
            && r.count >= SLOW_WRITE_MIN_CALLS
            && r.percentiles.p99_ns >= SLOW_WRITE_NS
            && slow_writes(r) >= SLOW_WRITE_MIN_SLOW
    }) {
        out.push(Finding::new(
            Severity::Warning,
            Figures::SlowLogWrites(SlowWrites {
                role: row.role,
                syscall: row.syscall,
                count: row.count,
                slow_calls: slow_writes(row),
                slow_ns: SLOW_WRITE_NS,
                p50_ns: row.percentiles.p50_ns,
                p99_ns: row.percentiles.p99_ns,
                max_ns: row.percentiles.max_ns,
            }),
        ));
    }
    if !out.iter().any(|f| f.severity <= Severity::Warning) {
        out.push(Finding::new(
            Severity::Info,
            Figures::NoProblemFound(AllClear {
                produce_requests: p.requests,
                produce_p99_ns: p.all.p99_ns,
                network_misses: s
                    .rows
                    .iter()
                    .filter(|r| r.role == Role::Network && r.cache == CacheResult::Miss)
                    .map(|r| r.count)
                    .sum(),
                network_busy_share: s.network_busy_share(),
            }),
        ));
    }
    // Stable: within a severity, causes (pushed first) stay ahead of client patterns.
    out.sort_by_key(|f| f.severity);
    out
}

/// Stalls that delayed `affected` of `requests` Produce requests, `slowest_affected` of the
/// `slowest` (the slowest 1%), make a finding when they are 1% of the requests or a tenth of
/// the slowest 1%. A stray miss (an index read, one cold segment) that delayed one request of
/// thousands, even one in the slowest 1%, stays in the tables: the cluster test's layout with
/// the cold reader alone on its thread saw 1 of 15802 stalled on the producer's thread, and 1
/// of 25190 acks=all requests held by a follower's thread.
fn explains_a_share(affected: u64, requests: u64, slowest_affected: u64, slowest: u64) -> bool {
    affected > 0 && (affected * 100 >= requests || slowest_affected * 10 >= slowest.max(1))
}

/// The rows of requests other than Produce (whose numbers lead the finding) that stalls
/// delayed, most delayed first; `stalled` and `added` pick the stalls meant (all, or misses).
fn others_delayed(s: &Summary, stalled: impl Fn(&DelayedRow) -> u64, added: impl Fn(&DelayedRow) -> u64) -> Victims {
    let mut rows: Vec<&DelayedRow> = s.stalls.delayed.iter().filter(|r| r.api_key != PRODUCE && stalled(r) > 0).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(added(r)));
    Victims {
        shown: rows.iter().take(5).map(|r| victim(r, stalled(r), added(r))).collect(),
        more: rows.len().saturating_sub(5),
    }
}

fn victim(r: &DelayedRow, delayed: u64, added_ns: u64) -> Victim {
    Victim {
        api: r.api,
        client_id: r.client_id.clone(),
        delayed,
        requests: r.requests,
        added_ns,
        delayed_p99_ns: in_set(r.stalled_requests, r.stalled.p99_ns),
        not_delayed_p99_ns: in_set(r.requests - r.stalled_requests, r.not_stalled.p99_ns),
    }
}

/// acks=all Produce requests waited on followers whose Fetch connections live on a stalled
/// network thread. Critical when they are half the slowest 1% of Produce requests or more.
fn replication_finding(s: &Summary) -> Option<Finding> {
    let r = &s.stalls.replication;
    let p = &s.stalls.produce;
    if !explains_a_share(r.produce_delayed, r.produce_acks_all, r.slowest_1pct_delayed, p.slowest_1pct) {
        return None;
    }
    let stalled_followers: Vec<_> = r.followers.iter().filter(|f| f.stalled_fetches > 0).collect();
    let mut followers: Vec<i32> = stalled_followers.iter().map(|f| f.broker_id).collect();
    followers.sort_unstable();
    followers.dedup();
    let mut tids: Vec<u32> = stalled_followers.iter().map(|f| f.tid).collect();
    tids.sort_unstable();
    tids.dedup();
    let severity = if r.slowest_1pct_delayed * 2 >= p.slowest_1pct.max(1) { Severity::Critical } else { Severity::Warning };
    // The requests held on those threads (the followers' Fetch among them), by client.id.
    let held = s
        .stalls
        .delayed
        .iter()
        .filter(|d| d.api_key != PRODUCE && d.stalled_requests > 0)
        .filter(|d| s.requests.threads.iter().any(|t| tids.contains(&t.tid) && t.clients.contains(&d.client_id)))
        .take(4)
        .map(|d| victim(d, d.stalled_requests, d.added_ns))
        .collect();
    Some(Finding::new(
        severity,
        Figures::ReplicationDelayedByStalls(ReplicationDelayed {
            produce_acks_all: r.produce_acks_all,
            produce_delayed: r.produce_delayed,
            followers,
            threads: tids.iter().map(|&tid| stalled_thread(s, tid)).collect(),
            added_ns: r.produce_added_ns,
            miss_ns: r.produce_miss_ns,
            slowest_1pct: p.slowest_1pct,
            slowest_1pct_delayed: r.slowest_1pct_delayed,
            p99_ns: p.all.p99_ns,
            delayed_p99_ns: in_set(r.produce_delayed, r.delayed.p99_ns),
            not_delayed_p99_ns: in_set(r.produce_acks_all - r.produce_delayed, r.not_delayed.p99_ns),
            partitions: r.partitions.clone(),
            held,
        }),
    ))
}

/// A network thread's stalls by cause, most stall time first.
fn stalled_thread(s: &Summary, tid: u32) -> StalledThread {
    let mut rows: Vec<_> = s.stalls.by_thread.iter().filter(|t| t.tid == tid).collect();
    rows.sort_by_key(|t| std::cmp::Reverse(t.stall_ns));
    StalledThread {
        tid,
        thread: s.thread_name(tid),
        listener: rows.iter().find_map(|t| t.listener.clone()),
        causes: rows
            .iter()
            .map(|t| ThreadCause {
                cause: t.cause,
                stalls: t.stalls,
                stall_ns: t.stall_ns,
                top_reader: t.top_reader.clone(),
                top_partition: t.top_partition.clone(),
            })
            .collect(),
    }
}

/// A network thread blocked (stalled) for a large share of the trace, whatever the others do:
/// every connection on it waited meanwhile.
fn blocked_thread_findings(s: &Summary) -> Vec<Finding> {
    let traced_ns = s.elapsed_seconds * 1e9;
    if traced_ns <= 0.0 {
        return Vec::new();
    }
    let network = s.roles.get(&Role::Network).map(Vec::as_slice).unwrap_or_default();
    let mut tids: Vec<(u32, u64)> = s.stalls.by_thread.iter().map(|t| (t.tid, s.stalls.thread_stall_ns(t.tid))).collect();
    tids.dedup();
    tids.retain(|(tid, ns)| network.contains(tid) && *ns as f64 >= THREAD_BLOCKED_WARNING * traced_ns);
    tids.sort_by_key(|(tid, ns)| (std::cmp::Reverse(*ns), *tid));
    tids.into_iter()
        .map(|(tid, ns)| {
            let share = ns as f64 / traced_ns;
            let conns = s.requests.threads.iter().find(|t| t.tid == tid);
            // Its clients' requests that stalls delayed, most delayed first (a client with
            // connections on several threads shows its delays from all of them).
            let delayed = s
                .stalls
                .delayed
                .iter()
                .filter(|d| d.stalled_requests > 0 && conns.is_some_and(|c| c.clients.contains(&d.client_id)))
                .take(5)
                .map(|d| victim(d, d.stalled_requests, d.added_ns))
                .collect();
            // The threads its listener's acceptor deals connections to: the network threads of
            // the same listener (a KRaft broker's CONTROLLER listener has its own), else all.
            let thread = stalled_thread(s, tid);
            let same_listener = s
                .threads
                .iter()
                .filter(|t| t.role == Role::Network && t.listener.as_ref().map(|l| &l.name) == thread.listener.as_ref())
                .count();
            let listener_threads = if thread.listener.is_some() && same_listener > 0 { same_listener } else { network.len() };
            Finding::new(
                if share >= THREAD_BLOCKED_CRITICAL { Severity::Critical } else { Severity::Warning },
                Figures::NetworkThreadBlocked(ThreadBlocked {
                    thread,
                    blocked_ns: ns,
                    traced_seconds: s.elapsed_seconds,
                    connections: conns.map(|c| c.connections),
                    followers: conns.map(|c| c.followers.clone()).unwrap_or_default(),
                    clients: conns.map(|c| c.clients.clone()).unwrap_or_default(),
                    other_clients: conns.map_or(0, |c| c.other_clients),
                    delayed,
                    listener_threads,
                }),
            )
        })
        .collect()
}

/// Known before any byte is seen: the TLS listeners (SSL, SASL_SSL), where kstall has no
/// per-request view, with what it does measure on them.
fn tls_listeners(s: &Summary) -> Vec<TlsListener> {
    s.listeners
        .iter()
        .filter(|l| l.encrypted)
        .map(|l| {
            let (mut stalls, mut stall_ns, mut misses) = (0, 0, 0);
            for t in s.stalls.by_thread.iter().filter(|t| t.listener.as_deref() == Some(l.name.as_str())) {
                stalls += t.stalls;
                stall_ns += t.stall_ns;
                misses += if t.cause == Cause::PageCacheMiss { t.stalls } else { 0 };
            }
            TlsListener {
                name: l.name.clone(),
                security_protocol: l.security_protocol,
                address: l.address.clone(),
                controller_plane: l.plane == Plane::Controller,
                threads: s
                    .threads
                    .iter()
                    .filter(|t| t.listener.as_ref().is_some_and(|tl| tl.name == l.name) && t.role == Role::Network)
                    .map(|t| t.name().to_string())
                    .collect(),
                stalls,
                stall_ns,
                misses,
            }
        })
        .collect()
}

/// Network threads busier than this are a bottleneck in the making.
const NETWORK_BUSY_WARNING: f64 = 0.7;
const NETWORK_BUSY_CRITICAL: f64 = 0.9;
/// A single network thread stalled this share of the trace is reported, whatever the average.
const THREAD_BLOCKED_WARNING: f64 = 0.3;
const THREAD_BLOCKED_CRITICAL: f64 = 0.8;
/// fsync/fdatasync/pwrite p99 from which the disk is holding threads up.
const SLOW_WRITE_NS: u64 = 10_000_000;
/// A single slow flush is not a pattern: at least this many calls, and this many of them slow
/// (a KRaft broker fsyncs its metadata log on every append, quickly, and a checkpoint file
/// now and then: one slow checkpoint among a dozen fast appends is a p99 of 10+ ms).
const SLOW_WRITE_MIN_CALLS: u64 = 10;
const SLOW_WRITE_MIN_SLOW: u64 = 3;

/// Calls of a row that surely took SLOW_WRITE_NS or more (their bucket starts there or above).
fn slow_writes(row: &Row) -> u64 {
    row.buckets.iter().filter(|b| b.lower_ns >= SLOW_WRITE_NS).map(|b| b.count).sum()
}

#[cfg(test)]
mod tests {
    //! The rules' numbers and thresholds are tested with their words, in the presenters'
    //! `present/words/tests.rs`; here, what makes a finding data: every id can be made, and
    //! every figure names the summary field it comes from.
    use std::collections::BTreeSet;

    use kstall_common::{CacheResult, Syscall};
    use serde_json::Value;

    use super::findings;
    use crate::{
        finding::{Figures, FindingId, Severity},
        hist::kernel_hist,
        listeners::{self, ListenerInfo, Plane, SecurityProtocol},
        requests::{DelayedRow, SyncProducer, ThreadConnections},
        roles::{Role, RoleSource},
        stalls::{CauseTotals, FollowerFetches, ListenerProduce, MissTotals, PartitionCount, ThreadStalls},
        summary::{Row, RowKey, Summary, ThreadInfo, empty_summary},
    };

    /// One summary that makes every finding but two (`framing_not_parsed` needs no TLS, and
    /// `no_problem_found` no warning), with every list the figures read non-empty.
    fn everything_wrong() -> Summary {
        let mut s = empty_summary();
        let name = "data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-0";
        s.threads.push(ThreadInfo {
            tid: 1,
            comm: "data-plane-kafk".into(),
            listener: listeners::thread_listener(name, None),
            jvm_name: Some(name.into()),
            role: Role::Network,
            role_source: RoleSource::JvmName,
        });
        s.roles.insert(Role::Network, vec![1]);
        s.listeners = vec![ListenerInfo {
            name: "SSL".into(),
            security_protocol: Some(SecurityProtocol::Ssl),
            plane: Plane::Data,
            encrypted: true,
            address: None,
            network_threads: 1,
        }];
        let miss = |tid| ThreadStalls {
            tid,
            listener: Some("PLAINTEXT".into()),
            cause: crate::stalls::Cause::PageCacheMiss,
            stalls: 300,
            stall_ns: 9_000_000_000,
            top_reader: Some("cold".into()),
            top_partition: Some("cold-0".into()),
        };
        s.stalls.by_thread = vec![miss(1)];
        s.stalls.by_cause = vec![CauseTotals { cause: Some(crate::stalls::Cause::PageCacheMiss), stalls: 300, stall_ns: 9_000_000_000 }];
        let totals = |name: &str| MissTotals { name: name.into(), stalls: 300, stall_ns: 9_000_000_000, ..Default::default() };
        (s.stalls.cold_readers, s.stalls.cold_partitions) = (vec![totals("cold")], vec![totals("cold-0")]);
        let p = &mut s.stalls.produce;
        (p.requests, p.stalled_requests, p.stalled_by_miss, p.slowest_1pct, p.slowest_1pct_stalled) = (1000, 300, 200, 10, 10);
        p.by_listener = vec![ListenerProduce { listener: Some("PLAINTEXT".into()), requests: 1000, stalled_requests: 300, stalled_by_miss: 200 }];
        p.stalled_partitions = vec![PartitionCount { partition: "hot-0".into(), requests: 200 }];
        let r = &mut s.stalls.replication;
        (r.produce_acks_all, r.produce_delayed, r.slowest_1pct_delayed) = (1000, 100, 5);
        r.followers = vec![FollowerFetches { broker_id: 2, tid: 1, listener: Some("PLAINTEXT".into()), fetches: 50, stalled_fetches: 20, added_ns: 1 }];
        r.partitions = p.stalled_partitions.clone();
        let row = |api_key, client: &str| DelayedRow {
            api: crate::kafka::api_name(api_key),
            api_key,
            client_id: client.into(),
            requests: 100,
            stalled_requests: 20,
            stalled_by_miss: 20,
            added_ns: 1_000_000,
            miss_ns: 1_000_000,
            replication_delayed: 0,
            replication_ns: 0,
            stalled: Default::default(),
            not_stalled: Default::default(),
            latency_sum_ns: 100_000_000,
        };
        s.stalls.delayed = vec![row(crate::kafka::PRODUCE, "sync"), row(crate::kafka::FETCH, "broker-2-fetcher-0")];
        s.requests.threads = vec![ThreadConnections {
            tid: 1,
            listener: Some("PLAINTEXT".into()),
            connections: 3,
            clients: vec!["sync".into(), "broker-2-fetcher-0".into()],
            other_clients: 1,
            followers: vec![2],
        }];
        s.requests.sync_producers = vec![SyncProducer {
            client_id: "sync".into(),
            fd: 9,
            produce_requests: 100,
            median_gap_ns: 1_000,
            median_latency_ns: 1_000_000,
            max_requests_per_s: 999.0,
        }];
        s.protocol.tls_connections = 1;
        (s.lost.records, s.lost.probe_runs_skipped, s.lost.histogram_entries_unread) = (1, 1, 1);
        let fsync: Vec<u64> = std::iter::repeat_n(2_000, 10).chain(std::iter::repeat_n(20_000_000, 3)).collect();
        s.rows.push(Row::new(RowKey { role: Role::Other, listener: None, syscall: Syscall::Fsync, cache: CacheResult::NoFileRead }, kernel_hist(&fsync)));
        s
    }

    /// What the other two need: bytes that never parsed on a plaintext broker.
    fn nothing_parsed() -> Summary {
        let mut s = empty_summary();
        s.protocol.framing_errors = 3;
        s
    }

    #[test]
    fn every_finding_id_can_be_made() {
        let made: BTreeSet<FindingId> = [everything_wrong(), nothing_parsed()].iter().flat_map(findings).map(|f| f.id).collect();
        assert_eq!(made, FindingId::ALL.into_iter().collect(), "ids never made: the rule or this fixture is wrong");
    }

    /// The value at a report path ("summary.a.b[*].c"), from the first element of each list;
    /// Null past an empty list or an absent optional value. None: the path names no field.
    fn at(report: &Value, path: &str) -> Option<Value> {
        let mut v = report.clone();
        for part in path.split('.') {
            let (name, each) = part.strip_suffix("[*]").map_or((part, false), |n| (n, true));
            v = v.as_object()?.get(name)?.clone();
            if each {
                let list = v.as_array()?;
                match list.first() {
                    Some(first) => v = first.clone(),
                    None => return Some(Value::Null),
                }
            }
            if v.is_null() {
                return Some(Value::Null);
            }
        }
        Some(v)
    }

    #[test]
    fn every_figure_names_a_field_of_the_report_it_comes_from() {
        for s in [everything_wrong(), nothing_parsed()] {
            let report = serde_json::json!({ "summary": serde_json::to_value(&s).unwrap() });
            for f in findings(&s) {
                let figures: BTreeSet<String> = match serde_json::to_value(&f.figures).unwrap() {
                    Value::Object(o) => o.keys().cloned().collect(),
                    other => panic!("{:?}: figures are an object, not {other}", f.id),
                };
                let named: BTreeSet<String> = f.sources.iter().map(|s| s.figure.to_string()).collect();
                assert_eq!(figures, named, "{:?}: a figure without its source, or a source of no figure", f.id);
                for source in &f.sources {
                    assert!(source.path.starts_with("summary."), "{}", source.path);
                    assert!(at(&report, source.path).is_some(), "{:?}: {} is not in the report", f.id, source.path);
                }
            }
        }
    }

    #[test]
    fn figures_carry_the_numbers_of_the_summary() {
        let s = everything_wrong();
        let f = findings(&s);
        let miss = f.iter().find(|f| f.id == FindingId::ProduceStalledByPageCacheMiss).unwrap();
        let Figures::ProduceStalledByPageCacheMiss(m) = &miss.figures else { panic!("{:?}", miss.figures) };
        assert_eq!((m.stalled_by_miss, m.requests, m.slowest_1pct_stalled), (200, 1000, 10));
        assert_eq!(miss.severity, Severity::Critical, "all of the slowest 1% stalled");
        assert_eq!(m.top_reader.as_ref().map(|r| r.name.as_str()), Some("cold"));
        assert_eq!(m.places.len(), 1, "the PLAINTEXT thread");
        assert_eq!(m.others_delayed.shown.len(), 1, "the follower's Fetch, not the Produce the finding leads with");
        // A p99 of no requests is null, not zero.
        assert_eq!((m.stalled_p99_ns, m.not_stalled_p99_ns), (Some(0), Some(0)));
        let blocked = f.iter().find(|f| f.id == FindingId::NetworkThreadBlocked).unwrap();
        let Figures::NetworkThreadBlocked(b) = &blocked.figures else { panic!() };
        assert_eq!((b.blocked_ns, b.connections, b.followers.as_slice(), b.listener_threads), (9_000_000_000, Some(3), &[2][..], 1));
        assert!((b.share() - 0.9).abs() < 1e-9);
    }

    /// README's table of ids is this enum, in order.
    #[test]
    fn readme_lists_every_finding_id() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| id | made when | severity |"))
            .skip(2)
            .take_while(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        let ids: Vec<&str> = FindingId::ALL.iter().map(|id| id.as_str()).collect();
        assert_eq!(table, ids, "README's findings table");
    }
}
