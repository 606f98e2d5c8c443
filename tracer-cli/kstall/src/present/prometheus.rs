//! The Prometheus view of the aggregation core: a prometheus-client collector that encodes the
//! latest summary on each scrape. Names follow the Prometheus conventions (snake_case, base
//! units, `_total` counters); histograms use power-of-two buckets from ~1 us to ~17 s, which
//! line up with the kernel's buckets, so their counts are exact.
use std::sync::{Arc, Mutex};

use kstall_common::{BUCKETS, bucket_upper_ns, log2_floor};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use kstall_common::CacheResult;
use kstall_core::{
    finding::{FindingId, Severity},
    summary::{Row, Summary},
};

/// Bucket bounds: 2^10 ns (1.02 us) to 2^34 ns (17.2 s), then +Inf.
const FIRST_POW: u32 = 10;
const LAST_POW: u32 = 34;

/// What the exporter knows between refreshes.
#[derive(Debug, Default)]
pub struct ExportState {
    pub summary: Option<Summary>,
    pub target_pid: Option<u32>,
    pub attaches: u64,
}

pub type SharedState = Arc<Mutex<ExportState>>;

/// kstall's own CPU seconds and resident bytes, as the session measures them.
pub type OwnUsage = fn() -> (f64, f64);

#[derive(Debug)]
struct KstallCollector {
    state: SharedState,
    own_usage: OwnUsage,
}

pub fn registry(state: SharedState, own_usage: OwnUsage) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(KstallCollector { state, own_usage }));
    registry
}

/// Prometheus buckets (upper bound in seconds, count in that bucket) from (exclusive upper
/// bound in ns or None for unbounded, count) pairs.
fn prometheus_buckets(buckets: impl Iterator<Item = (Option<u64>, u64)>) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> =
        (FIRST_POW..=LAST_POW).map(|p| ((1u64 << p) as f64 / 1e9, 0)).chain([(f64::MAX, 0)]).collect();
    for (upper, count) in buckets {
        // A value below `upper` is at most the first bound >= upper.
        let slot = match upper {
            Some(u) if u <= 1 << LAST_POW => (if u <= 1 { 0 } else { log2_floor(u - 1) + 1 }).max(FIRST_POW) - FIRST_POW,
            _ => LAST_POW + 1 - FIRST_POW,
        };
        out[slot as usize].1 += count;
    }
    out
}

type Labels = Vec<(&'static str, String)>;
/// One histogram series: labels, sum (seconds), count, buckets.
type HistogramSample = (Labels, f64, u64, Vec<(f64, u64)>);

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        } else {
            family.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, f64)]) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_gauge(value)?;
        } else {
            family.encode_family(labels)?.encode_gauge(value)?;
        }
    }
    Ok(())
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, samples: &[HistogramSample]) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, sum, count, buckets) in samples {
        family.encode_family(labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
    }
    Ok(())
}

impl Collector for KstallCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let none: Labels = Vec::new();
        gauge(&mut enc, "kstall_build_info", "kstall's version.", &[(vec![("version", env!("CARGO_PKG_VERSION").into())], 1.0)])?;
        let up = state.summary.is_some() as u8 as f64;
        gauge(&mut enc, "kstall_target_up", "1 while kstall is attached to a broker.", &[(none.clone(), up)])?;
        if let Some(pid) = state.target_pid {
            gauge(&mut enc, "kstall_target_pid", "Pid of the broker traced.", &[(none.clone(), pid as f64)])?;
        }
        counter(&mut enc, "kstall_attaches", "Times kstall attached its probes to a broker.", &[(none.clone(), state.attaches)])?;
        let (cpu, rss) = (self.own_usage)();
        counter_f64(&mut enc, "kstall_process_cpu_seconds", "CPU time kstall used (user + system).", cpu)?;
        gauge(&mut enc, "kstall_process_resident_memory_bytes", "kstall's resident memory.", &[(none.clone(), rss)])?;
        let Some(s) = &state.summary else { return Ok(()) };
        let evidence: Vec<(Labels, f64)> = s
            .probes
            .evidence
            .iter()
            .map(|e| {
                let hook = e.hooks.first().map_or("none", |h| h.mechanism.as_str());
                (vec![("evidence", e.evidence.as_str().into()), ("hook", hook.into())], e.available() as u8 as f64)
            })
            .collect();
        gauge(
            &mut enc,
            "kstall_kernel_evidence",
            "1 when this kernel gives kstall this kind of evidence (hook: the mechanism of its probes: tracepoint, raw_tracepoint or kprobe), 0 when it lacks it (kstall check says what that costs).",
            &evidence,
        )?;

        // Network rows of a known listener carry it; other rows have no listener label.
        let with_listener = |mut labels: Labels, listener: &Option<String>| -> Labels {
            if let Some(l) = listener {
                labels.push(("listener", l.clone()));
            }
            labels
        };
        let row_labels = |r: &Row| -> Labels {
            with_listener(
                vec![("role", r.role.as_str().into()), ("syscall", r.syscall.name().into()), ("cache", r.cache.as_str().into())],
                &r.listener,
            )
        };
        let rows: Vec<_> = s
            .rows
            .iter()
            .map(|r| {
                let buckets = prometheus_buckets(
                    r.hist.buckets.iter().enumerate().map(|(b, &n)| ((b < BUCKETS - 1).then(|| bucket_upper_ns(b)), n)),
                );
                (row_labels(r), r.hist.total_ns as f64 / 1e9, r.count, buckets)
            })
            .collect();
        histogram(&mut enc, "kstall_syscall_duration_seconds", "Broker syscall latency by thread role, syscall and page-cache result (hit, miss, none: no file data read).", &rows)?;
        let bytes: Vec<_> = s.rows.iter().filter(|r| r.syscall.returns_bytes()).map(|r| (row_labels(r), r.bytes)).collect();
        counter(&mut enc, "kstall_syscall_bytes", "Bytes moved by broker syscalls.", &bytes)?;
        let pages: Vec<_> = s.rows.iter().filter(|r| r.cache != CacheResult::NoFileRead).map(|r| (row_labels(r), r.pages_added)).collect();
        counter(&mut enc, "kstall_page_cache_pages_added", "Pages the calls brought into the page cache.", &pages)?;
        let misses: Vec<_> = s
            .rows
            .iter()
            .filter(|r| r.cache == CacheResult::Miss)
            .map(|r| (with_listener(vec![("role", r.role.as_str().into()), ("syscall", r.syscall.name().into())], &r.listener), r.count))
            .collect();
        counter(&mut enc, "kstall_page_cache_misses", "File reads that missed the page cache.", &misses)?;

        let requests: Vec<_> = s
            .requests
            .all_clients
            .iter()
            .map(|c| {
                let buckets = prometheus_buckets(c.buckets.iter().map(|b| (b.upper_ns, b.count)));
                (with_listener(vec![("api", c.api.to_string()), ("client_id", c.client_id.clone())], &c.listener), c.sum_ns as f64 / 1e9, c.count, buckets)
            })
            .collect();
        histogram(&mut enc, "kstall_request_duration_seconds", "Kafka request latency (socket wait + broker time) of clients by API, client.id (64 ids tracked, then \"(other)\") and listener; controller-plane requests are not in it.", &requests)?;
        let controller: Vec<_> = s
            .controller_requests
            .iter()
            .map(|c| {
                let buckets = prometheus_buckets(c.buckets.iter().map(|b| (b.upper_ns, b.count)));
                (vec![("api", c.api.to_string()), ("listener", c.listener.clone())], c.sum_ns as f64 / 1e9, c.count, buckets)
            })
            .collect();
        histogram(&mut enc, "kstall_controller_request_duration_seconds", "Latency (socket wait + broker time) of requests answered on controller-plane listeners (the cluster's own traffic: KRaft heartbeats, raft Fetch and Vote), by API and listener.", &controller)?;

        let p = &s.stalls.produce;
        counter(&mut enc, "kstall_produce_requests", "Produce requests answered.", &[(none.clone(), p.requests)])?;
        counter(&mut enc, "kstall_produce_stalled_requests", "Produce requests whose latency a network-thread stall overlapped.", &[(none.clone(), p.stalled_requests)])?;
        counter(&mut enc, "kstall_produce_stalled_by_miss_requests", "Produce requests whose latency a page-cache miss on their network thread overlapped.", &[(none.clone(), p.stalled_by_miss)])?;
        counter_f64(&mut enc, "kstall_produce_stall_added_seconds", "Time stalls overlapped Produce latency, summed over requests.", p.stall_ns_added as f64 / 1e9)?;
        // The blast radius, per API and client.id (the 64 tracked ids, then "(other)").
        let victims = |n: fn(&kstall_core::requests::DelayedRow) -> u64| -> Vec<(Labels, u64)> {
            s.stalls.delayed.iter().map(|r| (vec![("api", r.api.to_string()), ("client_id", r.client_id.clone())], n(r))).collect()
        };
        counter(&mut enc, "kstall_requests_stalled", "Requests of every API whose latency a stall of their network thread overlapped, by API and client.id.", &victims(|r| r.stalled_requests))?;
        let mut family = enc.encode_descriptor("kstall_request_stall_added_seconds", "Time stalls of their network thread overlapped requests, summed over requests, by API and client.id.", None, MetricType::Counter)?;
        for (labels, ns) in victims(|r| r.added_ns) {
            family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&(ns as f64 / 1e9), None)?;
        }
        let r = &s.stalls.replication;
        counter(&mut enc, "kstall_produce_acks_all_requests", "Produce requests with acks=all.", &[(none.clone(), r.produce_acks_all)])?;
        counter(&mut enc, "kstall_produce_replication_delayed_requests", "acks=all Produce requests that waited while a network thread serving a follower's Fetch connection was stalled.", &[(none.clone(), r.produce_delayed)])?;
        counter_f64(&mut enc, "kstall_produce_replication_added_seconds", "Time stalls of followers' Fetch threads overlapped acks=all Produce latency, summed over requests.", r.produce_added_ns as f64 / 1e9)?;
        let followers: Vec<(Labels, u64)> = r
            .followers
            .iter()
            .map(|f| (with_listener(vec![("follower", f.broker_id.to_string()), ("thread", s.thread_name(f.tid))], &f.listener), f.stalled_fetches))
            .collect();
        counter(&mut enc, "kstall_follower_fetches_stalled", "Followers' Fetch requests a stall of their network thread overlapped, by follower broker id and thread.", &followers)?;
        // Threads named only by comm share a name: one series each name, summed.
        let mut stall_series: Vec<(Labels, u64, u64)> = Vec::new();
        for t in &s.stalls.by_thread {
            let labels = with_listener(vec![("thread", s.thread_name(t.tid)), ("cause", t.cause.as_str().into())], &t.listener);
            match stall_series.iter_mut().find(|(l, _, _)| *l == labels) {
                Some(series) => {
                    series.1 += t.stalls;
                    series.2 += t.stall_ns;
                }
                None => stall_series.push((labels, t.stalls, t.stall_ns)),
            }
        }
        let stalls: Vec<_> = stall_series.iter().map(|(labels, n, _)| (labels.clone(), *n)).collect();
        counter(&mut enc, "kstall_stalls", "Network-thread stalls (page-cache misses, calls over the stall threshold) by thread, cause and listener.", &stalls)?;
        let mut family = enc.encode_descriptor("kstall_stall_seconds", "Time network threads spent stalled, by thread, cause and listener.", None, MetricType::Counter)?;
        for (labels, _, ns) in &stall_series {
            family.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(&(*ns as f64 / 1e9), None)?;
        }

        counter(&mut enc, "kstall_records_lost", "Request and stall records lost because the ring buffer was full.", &[(none.clone(), s.lost.records)])?;
        counter(
            &mut enc,
            "kstall_calls_lost",
            "Syscalls not recorded because a kernel map was full.",
            &[
                (vec![("map", "histograms".into())], s.lost.histogram_map_full),
                (vec![("map", "in_flight".into())], s.lost.in_flight_map_full),
            ],
        )?;
        counter(
            &mut enc,
            "kstall_probe_runs_skipped",
            "Probe runs the kernel skipped because another BPF program or a bpf() map syscall held the CPU.",
            &[(none.clone(), s.lost.probe_runs_skipped)],
        )?;
        // A gauge: entries missed at one refresh are read or taken at a later one. Not named
        // after the histogram map: promtool refuses "_histogram" in a gauge's name.
        gauge(
            &mut enc,
            "kstall_map_entries_unread",
            "Entries of the kernel's histogram map kstall could not read or take out at the last refresh: their calls are missing.",
            &[(none.clone(), s.lost.histogram_entries_unread as f64)],
        )?;
        counter(
            &mut enc,
            "kstall_switch_ins_missed",
            "Traced calls whose switch back onto a CPU the kernel ran no sched_switch program for: their off-CPU time is counted from the switch out.",
            &[(none.clone(), s.lost.switch_ins_missed)],
        )?;
        counter(&mut enc, "kstall_tls_connections", "Connections whose bytes were TLS (no request view).", &[(none.clone(), s.protocol.tls_connections)])?;
        counter(&mut enc, "kstall_framing_errors", "Network-thread socket reads that did not parse as Kafka framing.", &[(none, s.protocol.framing_errors)])?;
        // Every (id, severity) pair, zero when absent: a bounded, stable set of series to alert on.
        let findings: Vec<(Labels, f64)> = FindingId::ALL
            .iter()
            .flat_map(|&id| [Severity::Critical, Severity::Warning, Severity::Info].map(move |severity| (id, severity)))
            .map(|(id, severity)| {
                let n = s.findings.iter().filter(|f| f.id == id && f.severity == severity).count();
                (vec![("id", id.as_str().to_string()), ("severity", severity.as_str().to_string())], n as f64)
            })
            .collect();
        gauge(&mut enc, "kstall_findings", "Findings of the latest summary, per finding id and severity (see `kstall report`).", &findings)?;
        Ok(())
    }
}

fn counter_f64(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// The classic Prometheus text format (0.0.4) from prometheus-client's OpenMetrics text: the
/// same samples, without the `# EOF` and `# UNIT` lines, and counters typed under their
/// `_total` sample name.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out += renamed.as_deref().unwrap_or(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_log2_buckets_land_on_exact_bounds() {
        // A kernel bucket [8192, 9216) ns is at most 2^14 ns; [2^13, 2^14) too.
        let b = prometheus_buckets([(Some(9216), 3), (Some(1 << 14), 4), (Some(1000), 1), (None, 2)].into_iter());
        assert_eq!(b.len(), (LAST_POW - FIRST_POW + 2) as usize);
        assert_eq!(b[0], ((1u64 << 10) as f64 / 1e9, 1));
        assert_eq!(b[4], ((1u64 << 14) as f64 / 1e9, 7));
        assert_eq!(b.last(), Some(&(f64::MAX, 2)));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 10);
    }

    #[test]
    fn classic_text_types_counters_by_their_sample_name() {
        let om = "# HELP kstall_attaches Times.\n# TYPE kstall_attaches counter\nkstall_attaches_total 2\n# HELP kstall_target_up Up.\n# TYPE kstall_target_up gauge\nkstall_target_up 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP kstall_attaches_total Times.\n# TYPE kstall_attaches_total counter\nkstall_attaches_total 2\n# HELP kstall_target_up Up.\n# TYPE kstall_target_up gauge\nkstall_target_up 1\n"
        );
    }

    #[test]
    fn scrape_without_a_target_says_down() {
        let state = SharedState::default();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(state, || (0.0, 0.0))).unwrap();
        assert!(text.contains("kstall_target_up 0.0\n"), "{text}");
        assert!(text.contains("kstall_build_info{version=\"") && text.ends_with("# EOF\n"));
        assert!(!text.contains("kstall_syscall_duration_seconds_bucket"));
    }

    #[test]
    fn listener_labels_and_controller_requests_have_their_own_series() {
        use kstall_common::{CacheResult, LatencyHist, Syscall};

        use kstall_core::{
            requests::ControllerApiRow,
            roles::Role,
            stalls::{Cause, ThreadStalls},
            summary::{RowKey, empty_summary},
        };
        let mut s = empty_summary();
        let mut hist = LatencyHist::ZERO;
        hist.buckets[40] = 3;
        hist.count = 3;
        for (role, listener) in [(Role::Network, Some("PLAINTEXT")), (Role::Network, Some("CONTROLLER")), (Role::Network, None), (Role::Other, None)] {
            let key = RowKey { role, listener: listener.map(String::from), syscall: Syscall::Read, cache: CacheResult::Miss };
            s.rows.push(Row::new(key, hist));
        }
        // Two comm-named threads: one series for their name.
        for tid in [5, 6] {
            s.stalls.by_thread.push(ThreadStalls { tid, listener: None, cause: Cause::OffCpu, stalls: 1, stall_ns: 2_000_000, top_reader: None, top_partition: None });
        }
        s.stalls.by_thread.push(ThreadStalls { tid: 7, listener: Some("SSL".into()), cause: Cause::PageCacheMiss, stalls: 2, stall_ns: 9_000_000, top_reader: None, top_partition: None });
        s.controller_requests.push(ControllerApiRow {
            listener: "CONTROLLER".into(),
            api: "BrokerHeartbeat",
            api_key: 63,
            count: 7,
            rate_per_s: 0.5,
            total: Default::default(),
            broker: Default::default(),
            buckets: vec![kstall_core::hist::BucketCount { lower_ns: 1 << 20, upper_ns: Some(1 << 21), count: 7 }],
            sum_ns: 14_000_000,
        });
        let state = SharedState::default();
        state.lock().unwrap().summary = Some(s);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(state, || (0.0, 0.0))).unwrap();
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k)).collect();
        let mut unique = series.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), series.len(), "duplicate series in\n{text}");
        for expected in [
            r#"kstall_page_cache_misses_total{role="network",syscall="read",listener="PLAINTEXT"}"#,
            r#"kstall_page_cache_misses_total{role="network",syscall="read"}"#,
            r#"kstall_syscall_duration_seconds_count{role="network",syscall="read",cache="miss",listener="CONTROLLER"}"#,
            r#"kstall_controller_request_duration_seconds_count{api="BrokerHeartbeat",listener="CONTROLLER"}"#,
            r#"kstall_stalls_total{thread="5",cause="off_cpu"}"#,
            r#"kstall_stalls_total{thread="7",cause="page_cache_miss",listener="SSL"}"#,
        ] {
            assert!(series.contains(&expected), "{expected} in\n{text}");
        }
    }

    /// Every finding id is a label value of `kstall_findings`, with the count of that finding.
    #[test]
    fn every_finding_id_has_its_series() {
        let mut s = kstall_core::summary::empty_summary();
        s.lost.records = 2;
        s.findings = kstall_core::findings::findings(&s);
        let state = SharedState::default();
        state.lock().unwrap().summary = Some(s);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(state, || (0.0, 0.0))).unwrap();
        for id in FindingId::ALL {
            for severity in ["critical", "warning", "info"] {
                let value = if (id, severity) == (FindingId::RecordsLost, "warning") { "1.0" } else { "0.0" };
                let line = format!("kstall_findings{{id=\"{}\",severity=\"{severity}\"}} {value}\n", id.as_str());
                assert!(text.contains(&line), "{line} in\n{text}");
            }
        }
    }

    /// The evidence gauge's hook label is the mechanism of its first probe, as typed in the
    /// probe status: raw tracepoints are `raw_tracepoint` (they were labelled `tracepoint`).
    #[test]
    fn evidence_is_labelled_by_the_mechanism_of_its_hooks() {
        use kstall_core::{
            kernel::{Evidence, EvidenceStatus, Hook, Mechanism},
            summary::empty_summary,
        };
        let mut s = empty_summary();
        let status = |evidence: Evidence, hooks: Vec<Hook>| EvidenceStatus {
            evidence,
            missing: hooks.is_empty().then(|| "no tracepoint".to_string()),
            hooks,
            cost: evidence.cost(),
        };
        s.probes.evidence = vec![
            status(Evidence::FileLookups, Vec::new()),
            status(Evidence::Readahead, vec![Hook::tracepoint("readahead", "page_cache_sync_ra")]),
            status(Evidence::SocketReads, vec![Hook::new(Mechanism::RawTracepoint, "sock_recv_length")]),
            status(Evidence::DataArrival, vec![Hook::new(Mechanism::Kprobe, "sock_def_readable")]),
        ];
        let state = SharedState::default();
        state.lock().unwrap().summary = Some(s);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(state, || (0.0, 0.0))).unwrap();
        for expected in [
            r#"kstall_kernel_evidence{evidence="file_lookups",hook="none"} 0"#,
            r#"kstall_kernel_evidence{evidence="readahead",hook="tracepoint"} 1"#,
            r#"kstall_kernel_evidence{evidence="socket_reads",hook="raw_tracepoint"} 1"#,
            r#"kstall_kernel_evidence{evidence="data_arrival",hook="kprobe"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }
}
