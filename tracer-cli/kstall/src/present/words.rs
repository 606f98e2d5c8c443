//! The findings in words: a title, what was seen (in numbers) and what fixes it, written from
//! a finding's figures alone (`kstall_core::finding`). Every number in a sentence is one of
//! the finding's figures, and the finding's `sources` give the summary field behind each, so
//! Markdown, HTML and the terminal say the same thing and a reader gets from a sentence to its
//! number in one hop.
use kstall_core::{
    finding::{
        AllClear, Figures, Finding, ListenerCount, ListenerStalls, MissStalls, ReplicationDelayed, SlowCallStalls,
        SlowWrites, StalledThread, SyncProducerFigures, ThreadBlocked, TlsListeners, Victim, Victims,
    },
    stalls::Cause,
    units::{duration, or_dash, plural},
};

/// A finding as a person reads it.
pub struct Words {
    pub title: String,
    pub detail: String,
    pub fix: String,
}

pub fn words(f: &Finding) -> Words {
    match &f.figures {
        Figures::ProduceStalledByPageCacheMiss(m) => miss(m),
        Figures::ProduceStalledBySlowNetworkThreadCalls(c) => slow_calls(c),
        Figures::ReplicationDelayedByStalls(r) => replication(r),
        Figures::NetworkThreadBlocked(b) => blocked(b),
        Figures::SynchronousProducer(p) => sync_producer(p),
        Figures::TlsListener(t) => tls(t),
        Figures::FramingNotParsed { framing_errors } => Words {
            title: "No Kafka request could be parsed on the network threads' sockets".into(),
            detail: format!(
                "{framing_errors} socket reads of the network threads did not parse as Kafka requests, and none did. Request latency and client attribution are unavailable; syscall latency and page-cache misses are unaffected."
            ),
            fix: "Check that the traced process is a Kafka broker with a PLAINTEXT or SASL_PLAINTEXT listener.".into(),
        },
        Figures::RecordsLost { records } => Words {
            title: "Request and stall records were lost".into(),
            detail: format!(
                "{records} records were dropped because the ring buffer was full; request latency and attribution are missing them (syscall histograms are complete)."
            ),
            fix: "Raise --stall-threshold so fewer slow calls are reported; kstall drains its 4 MiB buffer every 100 ms.".into(),
        },
        Figures::ProbeRunsSkipped { probe_runs_skipped } => Words {
            title: "The kernel skipped some of kstall's probe runs".into(),
            detail: format!(
                "{probe_runs_skipped} probe runs did not happen because another BPF program or a bpf() map syscall held the CPU at the time; counts of calls, requests and stalls may be short by up to as many."
            ),
            fix: "Look for other BPF tools on this host (bpftool prog) and trace while they are not running; a kernel with preempt=voluntary makes kstall's own map reads unpreemptible.".into(),
        },
        Figures::HistogramsUnread { histogram_entries_unread } => Words {
            title: "Some syscall histograms could not be read from the kernel".into(),
            detail: format!(
                "{histogram_entries_unread} entries of the kernel's histogram map (each one thread's calls of one syscall and page-cache verdict) could not be read, or taken out for a thread that exited; their calls are missing from the syscall rows (requests and stalls are unaffected)."
            ),
            fix: "Trace again; if it repeats, report it with the kernel release (uname -r) and `kstall check --format json`.".into(),
        },
        Figures::NetworkThreadsSaturated { busy_share, traced_seconds } => Words {
            title: format!("Network threads are busy {:.0}% of the time", busy_share * 100.0),
            detail: format!(
                "The network threads spent {:.0}% of the {traced_seconds:.0} s traced outside epoll_wait. Every connection of a thread waits while it works: requests queue in their sockets (see socket wait).",
                busy_share * 100.0,
            ),
            fix: "Raise num.network.threads, and look at what the busy time is spent on in the network rows (sendfile misses, large responses).".into(),
        },
        Figures::SlowLogWrites(w) => slow_writes(w),
        Figures::NoProblemFound(a) => all_clear(a),
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "0%".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

/// " The misses were on the network thread of listener PLAINTEXT (name: 380 misses, 24.7s)."
/// and whose Produce requests they delayed; empty when no stalled thread's listener is known.
/// `what`: the stalls' name, one and many.
fn places_sentences(places: &[ListenerStalls], delayed: &[ListenerCount], tls: &[String], what: (&str, &str)) -> String {
    if places.is_empty() {
        return String::new();
    }
    let threads: usize = places.iter().map(|l| l.threads.len()).sum();
    let groups: Vec<String> = places
        .iter()
        .map(|l| {
            let shown: Vec<String> = l
                .threads
                .iter()
                .take(4)
                .map(|t| format!("{}: {} {}, {}", t.thread, t.stalls, if t.stalls == 1 { what.0 } else { what.1 }, duration(t.stall_ns)))
                .collect();
            let more = if l.threads.len() > 4 { format!("; {} more", l.threads.len() - 4) } else { String::new() };
            let of = l.listener.as_ref().map_or("an unknown listener".into(), |l| format!("listener {l}"));
            format!("{of} ({}{more})", shown.join("; "))
        })
        .collect();
    let mut out = format!(" The {} were on the network thread{} of {}.", what.1, plural(threads as u64), groups.join(" and of "));
    let clients: Vec<String> = delayed
        .iter()
        .map(|d| match &d.listener {
            Some(l) => format!("{l} clients ({})", d.requests),
            None => format!("clients of an unknown listener ({})", d.requests),
        })
        .collect();
    if !clients.is_empty() {
        out += &format!(" The Produce requests they delayed were those of {}.", clients.join(" and of "));
    }
    if !tls.is_empty() {
        let (listener, verb, its) = if tls.len() == 1 { ("Listener", "is", "its") } else { ("Listeners", "are", "their") };
        out += &format!(" {listener} {} {verb} TLS: the requests {its} stalls delayed are unknown to kstall, not counted here.", tls.join(", "));
    }
    out
}

/// `Fetch of "tail-consumer" (12 of 40 delayed, 310ms added; p99 136ms delayed vs 2.10ms not)`.
fn victim(v: &Victim) -> String {
    format!(
        "{} of \"{}\" ({} of {} delayed, {} added; p99 {} delayed vs {} not)",
        v.api,
        v.client_id,
        v.delayed,
        v.requests,
        duration(v.added_ns),
        or_dash(v.delayed_p99_ns, duration),
        or_dash(v.not_delayed_p99_ns, duration)
    )
}

fn victims(v: &[Victim]) -> String {
    v.iter().map(victim).collect::<Vec<_>>().join(", ")
}

/// " Other requests on those threads waited too: Fetch of "tail" (...), ...".
fn others_sentence(v: &Victims) -> String {
    if v.shown.is_empty() {
        return String::new();
    }
    let more = if v.more > 0 { format!(", and {} more", v.more) } else { String::new() };
    format!(" Other requests on those threads waited too: {}{more}.", victims(&v.shown))
}

/// " They wrote to hot-0 (190), hot-1 (12)." (the first partition each request writes), empty
/// when the requests' bodies were not read.
fn partitions_sentence(partitions: &[kstall_core::stalls::PartitionCount]) -> String {
    if partitions.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = partitions.iter().take(5).map(|p| format!("{} ({})", p.partition, p.requests)).collect();
    format!(" They wrote to {}.", shown.join(", "))
}

/// "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-1 (listener PLAINTEXT): 284
/// page-cache misses, 18.8s serving "cold-reader" on cold-0".
fn thread_cause(t: &StalledThread) -> String {
    let listener = t.listener.as_ref().map_or(String::new(), |l| format!(" (listener {l})"));
    let parts: Vec<String> = t
        .causes
        .iter()
        .map(|c| {
            let mut part = match c.cause {
                Cause::PageCacheMiss => {
                    format!("{} page-cache miss{}, {}", c.stalls, if c.stalls == 1 { "" } else { "es" }, duration(c.stall_ns))
                }
                cause => format!("{} stall{} {}, {}", c.stalls, plural(c.stalls), cause.label(), duration(c.stall_ns)),
            };
            if let Some(reader) = &c.top_reader {
                part += &format!(" serving \"{reader}\"");
            }
            if let Some(partition) = &c.top_partition {
                part += &format!(" on {partition}");
            }
            part
        })
        .collect();
    format!("{}{listener}: {}", t.thread, parts.join(", "))
}

fn miss(m: &MissStalls) -> Words {
    let mut detail = format!(
        "{} of {} Produce requests ({}) were delayed by page-cache-miss reads on their network thread, {} in all; they are {} of the {} slowest 1% (p99 {}). Produce p99 was {} when stalled, {} when not.",
        m.stalled_by_miss,
        m.requests,
        percent(m.stalled_by_miss, m.requests),
        duration(m.miss_ns_added),
        m.slowest_1pct_stalled,
        m.slowest_1pct,
        duration(m.p99_ns),
        or_dash(m.stalled_p99_ns, duration),
        or_dash(m.not_stalled_p99_ns, duration),
    );
    if let Some(r) = &m.top_reader {
        detail += &format!(" Top cold reader: client.id \"{}\" ({} misses, {}).", r.name, r.stalls, duration(r.stall_ns));
    }
    if let Some(t) = &m.top_partition {
        detail += &format!(" Top cold partition: {} ({} misses, {}).", t.name, t.stalls, duration(t.stall_ns));
    }
    detail += &places_sentences(&m.places, &m.delayed_by_listener, &m.tls_listeners, ("miss", "misses"));
    detail += &partitions_sentence(&m.partitions);
    detail += &others_sentence(&m.others_delayed);
    let who = m.top_reader.as_ref().map_or("lagging consumers".to_string(), |r| format!("\"{}\"", r.name));
    Words {
        title: "Produce requests wait behind page-cache misses of Fetch sendfile on network threads".into(),
        detail,
        fix: format!(
            "A network thread serves Fetch with sendfile; reading data no longer in the page cache blocks every connection of that thread (KAFKA-7504). Keep {who} from reading cold data at peak (or throttle it with a fetch quota), give the page cache more memory, or raise num.network.threads to shrink the blast radius."
        ),
    }
}

fn slow_calls(c: &SlowCallStalls) -> Words {
    let causes: Vec<String> = c.by_cause.iter().map(|c| format!("{} {} ({})", c.stalls, c.cause.label(), duration(c.stall_ns))).collect();
    Words {
        title: format!("Network-thread calls slower than {} delayed Produce requests", duration(c.threshold_ns)),
        detail: format!(
            "{} Produce requests overlapped a slow network-thread call that was not a page-cache miss; stalls by cause: {}.{}",
            c.requests,
            causes.join(", "),
            places_sentences(&c.places, &c.delayed_by_listener, &c.tls_listeners, ("slow call", "slow calls")),
        ),
        fix: "Off-CPU stalls point at CPU contention on the broker host; blocked-in-kernel ones at I/O or locks outside the page cache.".into(),
    }
}

fn replication(r: &ReplicationDelayed) -> Words {
    let brokers = match r.followers.as_slice() {
        [] => "followers".to_string(),
        [one] => format!("follower broker {one}"),
        many => format!("follower brokers {}", many.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")),
    };
    let threads: Vec<String> = r.threads.iter().map(thread_cause).collect();
    let n = r.threads.len() as u64;
    let culprit = r.threads.iter().flat_map(|t| &t.causes).find_map(|c| c.top_reader.as_ref());
    let who = culprit.map_or("the cold readers".to_string(), |c| format!("\"{c}\""));
    let mut detail = format!(
        "{} of {} acks=all Produce requests ({}) waited for {brokers} while the network thread{} serving {} Fetch connection{} {} stalled: {}. The stalls overlapped them by {} in all ({} of it page-cache misses); they are {} of the {} slowest 1% of Produce requests (p99 {}). acks=all Produce p99 was {} when delayed so, {} when not.",
        r.produce_delayed,
        r.produce_acks_all,
        percent(r.produce_delayed, r.produce_acks_all),
        plural(n),
        if r.followers.len() == 1 { "its" } else { "their" },
        plural(n),
        if n == 1 { "was" } else { "were" },
        threads.join("; "),
        duration(r.added_ns),
        duration(r.miss_ns),
        r.slowest_1pct_delayed,
        r.slowest_1pct,
        duration(r.p99_ns),
        or_dash(r.delayed_p99_ns, duration),
        or_dash(r.not_delayed_p99_ns, duration),
    );
    detail += &partitions_sentence(&r.partitions);
    if !r.held.is_empty() {
        detail += &format!(" Requests held on those threads: {}.", victims(&r.held));
    }
    Words {
        title: format!("acks=all Produce waits on replication: {brokers} fetch on a stalled network thread"),
        detail,
        fix: format!(
            "A leader answers an acks=all Produce only when the in-sync followers have fetched it, and a follower's Fetch connection shares its network thread with every client on it (KAFKA-7504). Remove the stalls: keep {who} from reading cold data at peak (a fetch quota), give the page cache more memory, or raise num.network.threads; and give replication a listener of its own (inter.broker.listener.name, with listener.name.<name>.num.network.threads) so no client can block it."
        ),
    }
}

fn blocked(b: &ThreadBlocked) -> Words {
    let mut waiting: Vec<String> = b.followers.iter().map(|f| format!("follower broker {f}")).collect();
    waiting.extend(b.clients.iter().map(|id| format!("\"{id}\"")));
    if b.other_clients > 0 {
        waiting.push(format!("{} more client.ids", b.other_clients));
    }
    let who = if waiting.is_empty() {
        "no request was answered on it during the trace".to_string()
    } else {
        format!("its connections ({} of them) belong to {}", b.connections.unwrap_or(0), waiting.join(", "))
    };
    let hurt = if b.delayed.is_empty() { String::new() } else { format!(" Delayed: {}.", victims(&b.delayed)) };
    Words {
        title: format!("Network thread {} was blocked {:.0}% of the trace", b.thread.thread, b.share() * 100.0),
        detail: format!(
            "{}. While it was blocked none of its connections was read or answered; {who}.{hurt} New connections land on the {} network threads in turn, so one in {} of the clients that connect next will wait here too.",
            thread_cause(&b.thread),
            b.listener_threads,
            b.listener_threads.max(1)
        ),
        fix: "Remove what blocks it: page-cache misses come from readers of cold data (throttle them with a fetch quota, or give the page cache more memory, KAFKA-7504); other stalls from CPU contention or I/O on the host. More network threads (num.network.threads) shrink the share of clients behind one.".into(),
    }
}

fn sync_producer(p: &SyncProducerFigures) -> Words {
    let broker_share = if p.stall_added_ns > 0 {
        format!(
            " Stalls on this broker added {} to its Produce requests, {} of their latency: fix those first (see above).",
            duration(p.stall_added_ns),
            percent(p.stall_added_ns, p.latency_ns)
        )
    } else {
        String::new()
    };
    Words {
        title: format!("client.id \"{}\" produces synchronously", p.client_id),
        detail: format!(
            "{} Produce requests on one connection, strictly one at a time: each sent {} (median) after the previous response, each taking {}. Its throughput is capped near {:.0} requests/s by the round trip, whatever the broker's capacity.{broker_share}",
            p.produce_requests,
            duration(p.median_gap_ns),
            duration(p.median_latency_ns),
            p.max_requests_per_s
        ),
        fix: "Produce asynchronously: send without waiting for each result (callbacks or futures), and let the client batch (linger.ms, batch.size) with several requests in flight.".into(),
    }
}

fn tls(t: &TlsListeners) -> Words {
    let connections = format!("{} connection{}", t.tls_connections, plural(t.tls_connections));
    if t.listeners.is_empty() {
        return Words {
            title: "Some connections are TLS: no request view for them".into(),
            detail: format!(
                "{connections} of the network threads carried TLS records, which kstall cannot parse from the broker's syscalls. Their syscall latency and page-cache misses (TLS brokers read log segments with pread on the network thread) are still shown; their request latency and client attribution are not."
            ),
            fix: "Trace a PLAINTEXT or SASL_PLAINTEXT listener for request-level attribution.".into(),
        };
    }
    let mut detail = String::new();
    for l in &t.listeners {
        let protocol = l.security_protocol.map_or("TLS", |p| p.as_str());
        let address = l.address.as_ref().map_or(String::new(), |a| format!(", {a}"));
        let on_threads = if l.threads.is_empty() {
            "its network threads".to_string()
        } else {
            format!("its network thread{} {}", plural(l.threads.len() as u64), l.threads.join(", "))
        };
        let plane = if l.controller_plane { ", controller plane" } else { "" };
        let stalls = if l.stalls == 0 {
            "none in this trace".to_string()
        } else {
            format!(
                "{} stall{}, {} ({} page-cache miss{})",
                l.stalls,
                plural(l.stalls),
                duration(l.stall_ns),
                l.misses,
                if l.misses == 1 { "" } else { "es" }
            )
        };
        detail += &format!(
            "On listener {} ({protocol}{address}{plane}), requests are encrypted, so kstall has no per-request view there: no API, client.id or request latency, and no join of Produce requests to the stalls that delayed them. What it measures there: the syscalls of {on_threads} (the \"network {}\" rows), page-cache hit/miss verdicts of their file reads (TLS brokers read log segments with pread64 on the network thread, not sendfile), and stalls with their thread and file: {stalls}. ",
            l.name, l.name,
        );
    }
    if t.tls_connections > 0 {
        detail += &format!("{connections} of the network threads carried TLS records.");
    }
    let names: Vec<&str> = t.listeners.iter().map(|l| l.name.as_str()).collect();
    let (listener_word, verb) = if names.len() == 1 { ("Listener", "is") } else { ("Listeners", "are") };
    Words {
        title: format!("{listener_word} {} {verb} TLS: no per-request view there", names.join(", ")),
        detail: detail.trim_end().to_string(),
        fix: format!(
            "Stalls on {} are still reported by thread and file. For request-level attribution (which requests a stall delayed), trace while the clients in question use a PLAINTEXT or SASL_PLAINTEXT listener.",
            names.join(", ")
        ),
    }
}

fn slow_writes(w: &SlowWrites) -> Words {
    Words {
        title: format!("{} threads wait on {}: p99 {}", w.role.label(), w.syscall.name(), duration(w.p99_ns)),
        detail: format!(
            "{} {} calls on {} threads ({} of them {} or longer), p50 {}, p99 {}, max {}. Writes that wait on the disk hold the thread that makes them (a request handler: its requests wait; the log flusher: flushes fall behind).",
            w.count,
            w.syscall.name(),
            w.role.label(),
            w.slow_calls,
            duration(w.slow_ns),
            duration(w.p50_ns),
            duration(w.p99_ns),
            duration(w.max_ns)
        ),
        fix: "Check the log disk's write latency (iostat -x), and flush settings (log.flush.interval.*): Kafka relies on replication, not fsync, for durability.".into(),
    }
}

fn all_clear(a: &AllClear) -> Words {
    let busy = a.network_busy_share.map_or("n/a".to_string(), |b| format!("{:.0}%", b * 100.0));
    Words {
        title: "No problem found".into(),
        detail: format!(
            "{}; {} page-cache misses on network threads; network threads busy {busy}; no slow log writes.",
            if a.produce_requests > 0 {
                format!("Produce p99 {} over {} requests", duration(a.produce_p99_ns), a.produce_requests)
            } else {
                "no Produce requests traced".into()
            },
            a.network_misses,
        ),
        fix: "Nothing to fix in what kstall can see. If clients still see latency, look between them and the broker (network, client-side batching).".into(),
    }
}

/// "figures from `summary.stalls.produce.requests`, ...": where the numbers of a finding come
/// from, for the report's reader (the JSON's `sources` says which figure is which).
pub fn sources_line(f: &Finding) -> String {
    let mut paths: Vec<&str> = Vec::new();
    for s in &f.sources {
        if !paths.contains(&s.path) {
            paths.push(s.path);
        }
    }
    format!("figures from {}", paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests;
