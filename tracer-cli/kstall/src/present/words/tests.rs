//! The rules and their words together: summaries built by hand, the findings the core makes
//! of them, and the sentences the presenters print.
use kstall_common::{CacheResult, Syscall};
use kstall_core::{
    finding::Severity,
    hist::kernel_hist as hist_of,
    kafka::PRODUCE,
    listeners::{self, Listener, ListenerInfo, Plane, SecurityProtocol},
    requests::{DelayedRow, SyncProducer, ThreadConnections},
    roles::{Role, RoleSource},
    stalls::{Cause, CauseTotals, FollowerFetches, ListenerProduce, MissTotals, PartitionCount, ThreadStalls},
    summary::{Row, RowKey, Summary, ThreadInfo, empty_summary},
};

/// A finding as the reader gets it: its id and severity, and its words.
#[derive(Clone, Debug)]
struct Finding {
    id: &'static str,
    severity: Severity,
    title: String,
    detail: String,
    fix: String,
}

/// The core's findings of `s`, in words.
fn findings(s: &Summary) -> Vec<Finding> {
    kstall_core::findings::findings(s)
        .iter()
        .map(|f| {
            let w = super::words(f);
            Finding { id: f.id.as_str(), severity: f.severity, title: w.title, detail: w.detail, fix: w.fix }
        })
        .collect()
}

/// The rules' threshold for a slow log write (`findings::SLOW_WRITE_NS`).
const SLOW_WRITE_NS: u64 = 10_000_000;

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
    ThreadStalls { tid, listener: Some(listener.into()), cause, stalls, stall_ns: ms * 1_000_000, top_reader: None, top_partition: None }
}

/// An fsync row of `fast` calls of 2 us and `slow` of 20 ms.
fn fsync_row(fast: usize, slow: usize) -> Row {
    let latencies: Vec<u64> = std::iter::repeat_n(2_000, fast).chain(std::iter::repeat_n(20_000_000, slow)).collect();
    let key = RowKey { role: Role::Other, listener: None, syscall: Syscall::Fsync, cache: CacheResult::NoFileRead };
    Row::new(key, hist_of(&latencies))
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
    s.stalls.by_thread.push(ThreadStalls { tid: 7, listener: None, cause: Cause::OffCpu, stalls: 2, stall_ns: 4_000_000, top_reader: None, top_partition: None });
    let p = &mut s.stalls.produce;
    (p.requests, p.stalled_requests) = (100, 2);
    p.by_listener = vec![ListenerProduce { listener: None, requests: 100, stalled_requests: 2, stalled_by_miss: 0 }];
    let f = findings(&s);
    let slow = f.iter().find(|f| f.id == "produce_stalled_by_slow_network_thread_calls").unwrap();
    // The numbers and causes, and no sentence about places or whose requests: with no thread's
    // listener known, "of an unknown listener" would say nothing.
    s.stalls.by_cause = vec![CauseTotals { cause: Some(Cause::OffCpu), stalls: 2, stall_ns: 4_000_000 }];
    let with_causes = the(&findings(&s), "produce_stalled_by_slow_network_thread_calls");
    assert_eq!(with_causes.detail, "2 Produce requests overlapped a slow network-thread call that was not a page-cache miss; stalls by cause: 2 off CPU (4.00ms).");
    assert_eq!(slow.detail, "2 Produce requests overlapped a slow network-thread call that was not a page-cache miss; stalls by cause: .");
    // One thread's listener known: the places sentence comes back, the unknown one named so.
    s.stalls.by_thread.push(ThreadStalls { tid: 8, listener: Some("PLAINTEXT".into()), cause: Cause::OffCpu, stalls: 1, stall_ns: 1_000_000, top_reader: None, top_partition: None });
    let known = the(&findings(&s), "produce_stalled_by_slow_network_thread_calls");
    assert!(known.detail.contains(" The slow calls were on the network threads of an unknown listener (7: 2 slow calls, 4.00ms) and of listener PLAINTEXT (8: 1 slow call, 1.00ms)."), "{}", known.detail);
    assert!(known.detail.ends_with(" The Produce requests they delayed were those of clients of an unknown listener (2)."), "{}", known.detail);
}

/// Three PLAINTEXT network threads (tids 1-3) traced 20 s; the cold reader on thread 3
/// with broker 2's replica fetcher, the producer alone on thread 1.
fn three_threads_cold_on_the_followers() -> Summary {
    let mut s = empty_summary();
    s.elapsed_seconds = 20.0;
    for tid in 1..=3u32 {
        let name = format!("data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-{}", tid - 1);
        s.threads.push(ThreadInfo {
            tid,
            comm: "data-plane-kafk".into(),
            listener: listeners::thread_listener(&name, None),
            jvm_name: Some(name),
            role: Role::Network,
            role_source: RoleSource::JvmName,
        });
        s.roles.entry(Role::Network).or_default().push(tid);
    }
    // Idle 40 of the 60 thread-seconds: busy 33% on average.
    let key = RowKey { role: Role::Network, listener: None, syscall: Syscall::EpollWait, cache: CacheResult::NoFileRead };
    s.rows.push(Row::new(key, hist_of(&[40_000_000_000])));
    let mut t = thread_stalls(3, "PLAINTEXT", Cause::PageCacheMiss, 284, 18_800);
    (t.top_reader, t.top_partition) = (Some("cold-reader".into()), Some("cold-0".into()));
    s.stalls.by_thread.push(t);
    let thread = |tid: u32, clients: &[&str], followers: &[i32]| ThreadConnections {
        tid,
        listener: Some("PLAINTEXT".into()),
        connections: clients.len(),
        clients: clients.iter().map(|c| c.to_string()).collect(),
        other_clients: 0,
        followers: followers.to_vec(),
    };
    s.requests.threads = vec![
        thread(1, &["sync-producer"], &[]),
        thread(2, &["broker-3-fetcher-0"], &[3]),
        thread(3, &["broker-2-fetcher-0", "cold-reader"], &[2]),
    ];
    let r = &mut s.stalls.replication;
    (r.produce_acks_all, r.produce_delayed, r.produce_added_ns, r.produce_miss_ns, r.slowest_1pct_delayed) =
        (280, 190, 15_000_000_000, 15_000_000_000, 3);
    r.delayed.p99_ns = 157_000_000;
    r.partitions = vec![PartitionCount { partition: "hot-0".into(), requests: 190 }];
    r.not_delayed.p99_ns = 15_600_000;
    r.followers = vec![
        FollowerFetches { broker_id: 2, tid: 3, listener: Some("PLAINTEXT".into()), fetches: 300, stalled_fetches: 250, added_ns: 16_000_000_000 },
        FollowerFetches { broker_id: 3, tid: 2, listener: Some("PLAINTEXT".into()), fetches: 900, stalled_fetches: 0, added_ns: 0 },
    ];
    let p = &mut s.stalls.produce;
    (p.requests, p.slowest_1pct, p.all.p99_ns) = (280, 3, 157_000_000);
    s.requests.sync_producers = vec![SyncProducer {
        client_id: "sync-producer".into(),
        fd: 9,
        produce_requests: 280,
        median_gap_ns: 50_000,
        median_latency_ns: 70_000_000,
        max_requests_per_s: 14.0,
    }];
    let mut produce = delayed_row(PRODUCE, "sync-producer", 280, 0, 0);
    (produce.replication_delayed, produce.replication_ns, produce.latency_sum_ns) = (190, 15_000_000_000, 19_600_000_000);
    s.stalls.delayed = vec![produce, delayed_row(kstall_core::kafka::FETCH, "broker-2-fetcher-0", 300, 250, 16_000)];
    s
}

fn delayed_row(api_key: i16, client: &str, requests: u64, stalled: u64, added_ms: u64) -> DelayedRow {
    DelayedRow {
        api: kstall_core::kafka::api_name(api_key),
        api_key,
        client_id: client.into(),
        requests,
        stalled_requests: stalled,
        stalled_by_miss: stalled,
        added_ns: added_ms * 1_000_000,
        miss_ns: added_ms * 1_000_000,
        replication_delayed: 0,
        replication_ns: 0,
        stalled: Default::default(),
        not_stalled: Default::default(),
        latency_sum_ns: requests * 1_000_000,
    }
}

#[test]
fn replication_behind_a_stalled_follower_thread_leads_and_the_sync_producer_follows() {
    let s = three_threads_cold_on_the_followers();
    let f = findings(&s);
    assert_eq!(ids(&f), ["replication_delayed_by_stalls", "network_thread_blocked", "synchronous_producer"]);
    assert_eq!((f[0].severity, f[1].severity, f[2].severity), (Severity::Critical, Severity::Critical, Severity::Info));
    for part in ["190 of 280 acks=all Produce requests (67.9%) waited for follower broker 2", "284 page-cache misses, 18.8s serving \"cold-reader\" on cold-0", "3 of the 3 slowest 1%", "157ms when delayed so, 15.6ms when not", "They wrote to hot-0 (190).", "Fetch of \"broker-2-fetcher-0\" (250 of 300 delayed, 16.0s added"] {
        assert!(f[0].detail.contains(part), "{part}: {}", f[0].detail);
    }
    assert!(f[0].fix.contains("\"cold-reader\"") && f[0].fix.contains("inter.broker.listener.name"), "{}", f[0].fix);
    assert!(f[1].title.ends_with("PLAINTEXT-2 was blocked 94% of the trace"), "{}", f[1].title);
    assert!(f[1].detail.contains("belong to follower broker 2, \"broker-2-fetcher-0\", \"cold-reader\""), "{}", f[1].detail);
    assert!(f[2].detail.contains("Stalls on this broker added 15.0s to its Produce requests, 76.5% of their latency"), "{}", f[2].detail);
}

#[test]
fn a_sync_producer_the_broker_slowed_never_stands_alone() {
    let mut s = three_threads_cold_on_the_followers();
    // No finding names the broker's part (say the stalls were under every threshold).
    s.stalls.by_thread.clear();
    s.stalls.replication = Default::default();
    assert!(!ids(&findings(&s)).contains(&"synchronous_producer"));
    // The broker added nothing: the client's pattern is the finding.
    s.stalls.delayed[0].replication_ns = 0;
    let f = findings(&s);
    let sync = f.iter().find(|f| f.id == "synchronous_producer").unwrap();
    assert_eq!(sync.severity, Severity::Warning);
    assert!(!sync.detail.contains("Stalls on this broker"), "{}", sync.detail);
}

#[test]
fn one_blocked_thread_of_three_is_a_finding_under_the_average() {
    let mut s = three_threads_cold_on_the_followers();
    // A KRaft broker's CONTROLLER listener has network threads of its own: not where a
    // client's next connection can land.
    let name = "data-plane-kafka-network-thread-1-ListenerName(CONTROLLER)-PLAINTEXT-0";
    s.threads.push(ThreadInfo {
        tid: 9,
        comm: "data-plane-kafk".into(),
        listener: listeners::thread_listener(name, None),
        jvm_name: Some(name.into()),
        role: Role::Network,
        role_source: RoleSource::JvmName,
    });
    s.roles.entry(Role::Network).or_default().push(9);
    s.stalls.replication = Default::default();
    s.stalls.by_thread[0].stall_ns = 7_000_000_000; // 35% of 20 s
    let f = findings(&s);
    let blocked = f.iter().find(|f| f.id == "network_thread_blocked").unwrap();
    assert_eq!(blocked.severity, Severity::Warning);
    assert!(blocked.detail.contains("one in 3 of the clients"), "{}", blocked.detail);
    s.stalls.by_thread[0].stall_ns = 5_000_000_000; // 25%
    assert!(!ids(&findings(&s)).contains(&"network_thread_blocked"));
}

#[test]
fn a_stray_miss_among_thousands_of_produce_is_no_finding() {
    let mut s = empty_summary();
    s.stalls.by_thread.push(thread_stalls(1, "PLAINTEXT", Cause::PageCacheMiss, 1, 9));
    let p = &mut s.stalls.produce;
    // One of 15802 stalled, one of the 159 slowest 1%: a cold layout's stray index read.
    (p.requests, p.stalled_requests, p.stalled_by_miss, p.slowest_1pct, p.slowest_1pct_stalled) = (15802, 1, 1, 159, 1);
    assert!(!ids(&findings(&s)).contains(&"produce_stalled_by_page_cache_miss"));
    // A tenth of the slowest 1% is.
    s.stalls.produce.slowest_1pct_stalled = 16;
    assert!(ids(&findings(&s)).contains(&"produce_stalled_by_page_cache_miss"));
}

#[test]
fn one_acks_all_request_held_by_a_stray_miss_on_a_followers_thread_is_no_finding() {
    let mut s = three_threads_cold_on_the_followers();
    let r = &mut s.stalls.replication;
    // The cold reader alone elsewhere; one miss on broker 2's thread held 1 of 25190.
    (r.produce_acks_all, r.produce_delayed, r.slowest_1pct_delayed) = (25190, 1, 1);
    s.stalls.produce.slowest_1pct = 252;
    assert!(!ids(&findings(&s)).contains(&"replication_delayed_by_stalls"));
    s.stalls.replication.produce_delayed = 252;
    assert!(ids(&findings(&s)).contains(&"replication_delayed_by_stalls"), "1% of the acks=all requests is");
}

#[test]
fn empty_sets_read_as_a_dash() {
    let mut s = empty_summary();
    s.stalls.by_thread.push(thread_stalls(1, "PLAINTEXT", Cause::PageCacheMiss, 30, 300));
    let p = &mut s.stalls.produce;
    (p.requests, p.stalled_requests, p.stalled_by_miss, p.slowest_1pct, p.slowest_1pct_stalled) = (20, 20, 20, 1, 1);
    p.stalled.p99_ns = 281_000_000;
    let f = findings(&s);
    assert!(f[0].detail.contains("Produce p99 was 281ms when stalled, - when not."), "{}", f[0].detail);
}

// ---- helpers shared by the per-rule tests below ----

fn ids(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.id).collect()
}

fn fires(s: &Summary, id: &str) -> bool {
    findings(s).iter().any(|f| f.id == id)
}

/// The one finding of this id (fails if there are none or several).
fn the(f: &[Finding], id: &str) -> Finding {
    let mut of_id = f.iter().filter(|f| f.id == id);
    let one = of_id.next().unwrap_or_else(|| panic!("no {id} in {:?}", ids(f))).clone();
    assert!(of_id.next().is_none(), "several {id} in {:?}", ids(f));
    one
}

fn ms(n: u64) -> u64 {
    n * 1_000_000
}

fn row(role: Role, syscall: Syscall, cache: CacheResult, latencies: &[u64]) -> Row {
    Row::new(RowKey { role, listener: None, syscall, cache }, hist_of(latencies))
}

/// A row of `fast` calls of 2 us and `slow` calls of `slow_ns`.
fn write_row(role: Role, syscall: Syscall, fast: usize, slow: usize, slow_ns: u64) -> Row {
    let latencies: Vec<u64> = std::iter::repeat_n(2_000, fast).chain(std::iter::repeat_n(slow_ns, slow)).collect();
    row(role, syscall, CacheResult::NoFileRead, &latencies)
}

/// 2^24 ns: the lowest value of its kernel bucket, so the bucket's representative is capped
/// at the max and the row's p99 and max are exactly this (16.8ms).
const SLOW_16_8MS: u64 = 1 << 24;

/// A summary whose produce attribution says: 2000 Produce requests, 150 stalled, 120 of
/// them by a page-cache miss, 10 of the 20 slowest 1% stalled.
fn produce_stalled_by_misses() -> Summary {
    let mut s = empty_summary();
    let p = &mut s.stalls.produce;
    (p.requests, p.stalled_requests, p.stalled_by_miss) = (2000, 150, 120);
    (p.slowest_1pct, p.slowest_1pct_stalled) = (20, 10);
    p.miss_ns_added = 3_450_000_000;
    p.all.p99_ns = ms(250);
    p.stalled.p99_ns = ms(480);
    p.not_stalled.p99_ns = 12_300_000;
    s
}

fn miss_totals(name: &str, stalls: u64, stall_ns: u64) -> MissTotals {
    MissTotals { name: name.into(), stalls, stall_ns, ..Default::default() }
}

/// `threads` network threads over the summary's 10 s, `idle_ns` of it in epoll_wait and
/// epoll_pwait (half each), plus an idle non-network thread that must not count.
fn network_idle(threads: u32, idle_ns: u64) -> Summary {
    let mut s = empty_summary();
    assert_eq!(s.elapsed_seconds, 10.0);
    s.roles.insert(Role::Network, (1..=threads).collect());
    s.roles.insert(Role::Other, vec![100]);
    let half = idle_ns / 2;
    s.rows.push(row(Role::Network, Syscall::EpollWait, CacheResult::NoFileRead, &[half / 2, half - half / 2]));
    s.rows.push(row(Role::Network, Syscall::EpollPwait, CacheResult::NoFileRead, &[idle_ns - half]));
    s.rows.push(row(Role::Other, Syscall::EpollWait, CacheResult::NoFileRead, &[ms(5_000), ms(5_000)]));
    s
}

fn sync_producer(client_id: &str, produce_requests: u64, gap_ns: u64, latency_ns: u64) -> SyncProducer {
    SyncProducer {
        client_id: client_id.into(),
        fd: 40,
        produce_requests,
        median_gap_ns: gap_ns,
        median_latency_ns: latency_ns,
        max_requests_per_s: 1e9 / (gap_ns + latency_ns) as f64,
    }
}

fn listener_info(name: &str, protocol: SecurityProtocol, plane: Plane, address: Option<&str>) -> ListenerInfo {
    ListenerInfo {
        name: name.into(),
        security_protocol: Some(protocol),
        plane,
        encrypted: protocol.is_encrypted(),
        address: address.map(Into::into),
        network_threads: 0,
    }
}

// ---- produce_stalled_by_page_cache_miss ----

#[test]
fn page_cache_miss_finding_numbers_and_critical_when_half_the_slowest_were_stalled() {
    let mut s = produce_stalled_by_misses();
    s.stalls.cold_readers = vec![miss_totals("analytics-backfill", 90, 2_100_000_000), miss_totals("second", 5, ms(9))];
    s.stalls.cold_partitions = vec![miss_totals("events-3", 70, 1_500_000_000), miss_totals("events-4", 1, ms(2))];
    let f = findings(&s);
    let miss = the(&f, "produce_stalled_by_page_cache_miss");
    // 10 of the 20 slowest: 10 * 2 >= 20.
    assert_eq!(miss.severity, Severity::Critical);
    // 120 / 2000 = 6.0%; 3.45e9 ns = 3.45s.
    assert!(
        miss.detail.starts_with(
            "120 of 2000 Produce requests (6.0%) were delayed by page-cache-miss reads on their network thread, 3.45s in all; \
             they are 10 of the 20 slowest 1% (p99 250ms). Produce p99 was 480ms when stalled, 12.3ms when not."
        ),
        "{}",
        miss.detail
    );
    assert!(miss.detail.contains(" Top cold reader: client.id \"analytics-backfill\" (90 misses, 2.10s)."), "{}", miss.detail);
    assert!(miss.detail.contains(" Top cold partition: events-3 (70 misses, 1.50s)."), "{}", miss.detail);
    assert!(!miss.detail.contains("second") && !miss.detail.contains("events-4"), "only the top ones: {}", miss.detail);
    assert!(miss.fix.contains("Keep \"analytics-backfill\" from reading cold data"), "{}", miss.fix);
    assert_eq!(f[0].id, "produce_stalled_by_page_cache_miss");
}

#[test]
fn page_cache_miss_finding_is_a_warning_below_half_of_the_slowest() {
    let mut s = produce_stalled_by_misses();
    s.stalls.produce.slowest_1pct_stalled = 9; // 9 * 2 < 20
    let miss = the(&findings(&s), "produce_stalled_by_page_cache_miss");
    assert_eq!(miss.severity, Severity::Warning);
    assert!(miss.detail.contains("they are 9 of the 20 slowest 1%"), "{}", miss.detail);
    // No cold reader or partition known: no such sentences, and the fix names no client.
    assert!(!miss.detail.contains("Top cold"), "{}", miss.detail);
    assert!(miss.fix.contains("Keep lagging consumers from reading cold data"), "{}", miss.fix);
    // No slowest 1% at all is not "all of them stalled".
    let p = &mut s.stalls.produce;
    (p.slowest_1pct, p.slowest_1pct_stalled) = (0, 0);
    assert_eq!(the(&findings(&s), "produce_stalled_by_page_cache_miss").severity, Severity::Warning);
}

#[test]
fn misses_that_saturate_a_network_thread_make_the_stall_finding_critical_and_first() {
    // One network thread, 10 s traced, 0.5 s in epoll_wait (95% busy), 8 s of it in
    // page-cache-miss stalls; only 9 of the 20 slowest Produce stalled (a warning alone).
    let mut s = network_idle(1, ms(500));
    s.stalls.produce = produce_stalled_by_misses().stalls.produce;
    s.stalls.produce.slowest_1pct_stalled = 9;
    s.stalls.by_cause = vec![CauseTotals { cause: Some(Cause::PageCacheMiss), stalls: 120, stall_ns: ms(8_000) }];
    let f = findings(&s);
    assert_eq!(the(&f, "network_threads_saturated").severity, Severity::Critical);
    assert_eq!(the(&f, "produce_stalled_by_page_cache_miss").severity, Severity::Critical);
    assert_eq!((f[0].id, f[1].id), ("produce_stalled_by_page_cache_miss", "network_threads_saturated"));
    // Misses only a third of the busy time: the saturation has another cause, and leads.
    s.stalls.by_cause[0].stall_ns = ms(3_000);
    let f = findings(&s);
    assert_eq!(the(&f, "produce_stalled_by_page_cache_miss").severity, Severity::Warning);
    assert_eq!(f[0].id, "network_threads_saturated");
}

#[test]
fn no_page_cache_miss_finding_without_a_produce_stalled_by_a_miss() {
    let mut s = produce_stalled_by_misses();
    s.stalls.produce.stalled_by_miss = 0;
    // The miss stalls themselves (not joined to any Produce) are not enough.
    s.stalls.by_thread.push(ThreadStalls { tid: 1, listener: None, cause: Cause::PageCacheMiss, stalls: 50, stall_ns: ms(500), top_reader: None, top_partition: None });
    assert!(!fires(&s, "produce_stalled_by_page_cache_miss"));
    s.stalls.produce.stalled_by_miss = 1;
    assert!(fires(&s, "produce_stalled_by_page_cache_miss"));
}

// ---- produce_stalled_by_slow_network_thread_calls ----

#[test]
fn slow_call_finding_counts_the_stalled_requests_a_miss_does_not_explain() {
    let mut s = two_listeners();
    s.stalls.threshold_ns = ms(5);
    s.stalls.by_cause = vec![
        CauseTotals { cause: Some(Cause::OffCpu), stalls: 20, stall_ns: ms(180) },
        CauseTotals { cause: Some(Cause::BlockedInKernel), stalls: 5, stall_ns: ms(40) },
        CauseTotals { cause: None, stalls: 99, stall_ns: ms(999) },
    ];
    s.stalls.by_thread.push(thread_stalls(1, "PLAINTEXT", Cause::OffCpu, 20, 180));
    s.stalls.by_thread.push(thread_stalls(1, "PLAINTEXT", Cause::PageCacheMiss, 15, 300));
    let p = &mut s.stalls.produce;
    (p.requests, p.stalled_requests, p.stalled_by_miss) = (2000, 40, 15);
    p.by_listener = vec![ListenerProduce { listener: Some("PLAINTEXT".into()), requests: 2000, stalled_requests: 40, stalled_by_miss: 15 }];
    let f = findings(&s);
    let slow = the(&f, "produce_stalled_by_slow_network_thread_calls");
    assert_eq!(slow.severity, Severity::Info);
    assert_eq!(slow.title, "Network-thread calls slower than 5.00ms delayed Produce requests");
    // 40 stalled - 15 by a miss = 25; the cause-less totals row is left out.
    let expected = format!(
        "25 Produce requests overlapped a slow network-thread call that was not a page-cache miss; \
         stalls by cause: 20 off CPU (180ms), 5 blocked in kernel (40.0ms). \
         The slow calls were on the network thread of listener PLAINTEXT ({PLAINTEXT_THREAD}: 20 slow calls, 180ms). \
         The Produce requests they delayed were those of PLAINTEXT clients (25)."
    );
    assert_eq!(slow.detail, expected);
}

#[test]
fn no_slow_call_finding_when_misses_explain_every_stalled_request() {
    let mut s = empty_summary();
    let p = &mut s.stalls.produce;
    (p.requests, p.stalled_requests, p.stalled_by_miss) = (100, 7, 7);
    assert!(!fires(&s, "produce_stalled_by_slow_network_thread_calls"));
    // More by a miss than stalled at all (inconsistent input): no finding, no underflow.
    s.stalls.produce.stalled_by_miss = 9;
    assert!(!fires(&s, "produce_stalled_by_slow_network_thread_calls"));
    // One more stalled request than misses explain: the finding, with that one.
    (s.stalls.produce.stalled_requests, s.stalls.produce.stalled_by_miss) = (8, 7);
    let slow = the(&findings(&s), "produce_stalled_by_slow_network_thread_calls");
    assert!(slow.detail.starts_with("1 Produce request") && slow.detail.contains(" overlapped a slow"), "{}", slow.detail);
}

// ---- synchronous_producer ----

#[test]
fn synchronous_producers_are_warnings_for_the_first_three_only() {
    let mut s = empty_summary();
    s.requests.sync_producers = vec![
        sync_producer("billing", 900, 1_500_000, 2_500_000),
        sync_producer("audit", 500, ms(1), ms(1)),
        sync_producer("metrics", 300, ms(1), ms(1)),
        sync_producer("fourth", 100, ms(1), ms(1)),
    ];
    let f = findings(&s);
    let sync: Vec<&Finding> = f.iter().filter(|f| f.id == "synchronous_producer").collect();
    let titles: Vec<&str> = sync.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "client.id \"billing\" produces synchronously",
            "client.id \"audit\" produces synchronously",
            "client.id \"metrics\" produces synchronously"
        ]
    );
    assert!(sync.iter().all(|f| f.severity == Severity::Warning));
    // 1.5 ms gap + 2.5 ms latency = 4 ms a round: 250 requests/s.
    assert!(
        sync[0].detail.starts_with(
            "900 Produce requests on one connection, strictly one at a time: each sent 1.50ms (median) after the previous response, \
             each taking 2.50ms. Its throughput is capped near 250 requests/s"
        ),
        "{}",
        sync[0].detail
    );
    assert!(!fires(&empty_summary(), "synchronous_producer"));
}

// ---- tls_listener ----

#[test]
fn tls_bytes_without_a_tls_listener_are_an_info_finding() {
    let mut s = empty_summary();
    assert!(!fires(&s, "tls_listener"));
    s.protocol.tls_connections = 1;
    let tls = the(&findings(&s), "tls_listener");
    assert_eq!(tls.severity, Severity::Info);
    assert_eq!(tls.title, "Some connections are TLS: no request view for them");
    assert!(tls.detail.starts_with("1 connection of the network threads carried TLS records"), "{}", tls.detail);
    s.protocol.tls_connections = 3;
    let tls = the(&findings(&s), "tls_listener");
    assert!(tls.detail.starts_with("3 connections of the network threads carried TLS records"), "{}", tls.detail);
}

#[test]
fn tls_listeners_are_one_finding_naming_each_and_the_tls_connections() {
    let mut s = empty_summary();
    s.listeners = vec![
        listener_info("PLAINTEXT", SecurityProtocol::Plaintext, Plane::Data, Some("0.0.0.0:9092")),
        listener_info("CONTROLLER", SecurityProtocol::Ssl, Plane::Controller, Some("broker1:9093")),
        listener_info("CLIENTS", SecurityProtocol::SaslSsl, Plane::Data, None),
    ];
    s.protocol.tls_connections = 2;
    let f = findings(&s);
    let tls = the(&f, "tls_listener");
    assert_eq!(tls.severity, Severity::Info);
    assert_eq!(tls.title, "Listeners CONTROLLER, CLIENTS are TLS: no per-request view there");
    for part in [
        "On listener CONTROLLER (SSL, broker1:9093, controller plane), requests are encrypted",
        "the syscalls of its network threads (the \"network CONTROLLER\" rows)",
        "On listener CLIENTS (SASL_SSL), requests are encrypted",
        "stalls with their thread and file: none in this trace.",
    ] {
        assert!(tls.detail.contains(part), "{part}: {}", tls.detail);
    }
    assert!(tls.detail.ends_with(" 2 connections of the network threads carried TLS records."), "{}", tls.detail);
    assert!(!tls.detail.contains("PLAINTEXT") && !tls.title.contains("PLAINTEXT"), "{}", tls.detail);
    assert!(tls.fix.starts_with("Stalls on CONTROLLER, CLIENTS are still reported"), "{}", tls.fix);
}

// ---- framing_not_parsed ----

#[test]
fn framing_not_parsed_when_reads_failed_and_none_parsed_on_plaintext() {
    let mut s = empty_summary();
    s.protocol.framing_errors = 42;
    let framing = the(&findings(&s), "framing_not_parsed");
    assert_eq!(framing.severity, Severity::Info);
    assert!(framing.detail.starts_with("42 socket reads of the network threads did not parse as Kafka requests"), "{}", framing.detail);
}

#[test]
fn no_framing_finding_when_one_request_parsed_none_failed_or_tls_explains_it() {
    let failing = || {
        let mut s = empty_summary();
        s.protocol.framing_errors = 42;
        s
    };
    let mut s = failing();
    s.protocol.requests_parsed = 1;
    assert!(!fires(&s, "framing_not_parsed"));
    let mut s = failing();
    s.protocol.framing_errors = 0;
    assert!(!fires(&s, "framing_not_parsed"));
    let mut s = failing();
    s.protocol.tls_connections = 1;
    assert!(!fires(&s, "framing_not_parsed"));
    let mut s = failing();
    s.listeners = vec![listener_info("SSL", SecurityProtocol::Ssl, Plane::Data, None)];
    assert!(!fires(&s, "framing_not_parsed"));
}

// ---- probe_runs_skipped ----
#[test]
fn skipped_probe_runs_are_a_warning_that_says_how_many() {
    let mut s = empty_summary();
    assert!(!fires(&s, "probe_runs_skipped"));
    s.lost.probe_runs_skipped = 3;
    let skipped = the(&findings(&s), "probe_runs_skipped");
    assert_eq!(skipped.severity, Severity::Warning);
    assert!(skipped.detail.starts_with("3 probe runs did not happen"), "{}", skipped.detail);
}

// ---- histograms_unread ----
#[test]
fn unread_histogram_entries_are_a_warning_that_names_their_count() {
    let mut s = empty_summary();
    assert!(!fires(&s, "histograms_unread"));
    s.lost.histogram_entries_unread = 3;
    let f = the(&findings(&s), "histograms_unread");
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.detail.starts_with("3 entries of the kernel's histogram map"), "{}", f.detail);
}

// ---- records_lost ----

#[test]
fn records_lost_is_a_warning_from_one_lost_record() {
    let mut s = empty_summary();
    assert!(!fires(&s, "records_lost"));
    // The other losses (map full) do not make this finding.
    (s.lost.histogram_map_full, s.lost.in_flight_map_full) = (5, 5);
    assert!(!fires(&s, "records_lost"));
    s.lost.records = 1;
    assert_eq!(the(&findings(&s), "records_lost").severity, Severity::Warning);
    s.lost.records = 1234;
    let lost = the(&findings(&s), "records_lost");
    assert!(lost.detail.starts_with("1234 records were dropped because the ring buffer was full"), "{}", lost.detail);
}

// ---- network_threads_saturated ----

#[test]
fn network_threads_busy_70_percent_is_a_warning_69_is_nothing() {
    // 2 threads x 10 s = 20 s traced; 6 s idle: busy 70%.
    let f = findings(&network_idle(2, ms(6_000)));
    let busy = the(&f, "network_threads_saturated");
    assert_eq!(busy.severity, Severity::Warning);
    assert_eq!(busy.title, "Network threads are busy 70% of the time");
    assert!(busy.detail.starts_with("The network threads spent 70% of the 10 s traced outside epoll_wait."), "{}", busy.detail);
    // 6.2 s idle: busy 69%.
    assert!(!fires(&network_idle(2, ms(6_200)), "network_threads_saturated"));
}

#[test]
fn network_threads_busy_90_percent_is_critical_89_a_warning() {
    // 2 s idle of 20 s: busy 90%.
    let f = findings(&network_idle(2, ms(2_000)));
    let busy = the(&f, "network_threads_saturated");
    assert_eq!(busy.severity, Severity::Critical);
    assert_eq!(busy.title, "Network threads are busy 90% of the time");
    assert_eq!(f[0].id, "network_threads_saturated");
    // 2.2 s idle: busy 89%.
    let busy = the(&findings(&network_idle(2, ms(2_200))), "network_threads_saturated");
    assert_eq!(busy.severity, Severity::Warning);
    assert_eq!(busy.title, "Network threads are busy 89% of the time");
}

#[test]
fn no_saturation_finding_without_network_threads() {
    let mut s = network_idle(2, 0);
    assert!(fires(&s, "network_threads_saturated"), "100% busy");
    s.roles.remove(&Role::Network);
    assert!(!fires(&s, "network_threads_saturated"));
}

// ---- slow_log_writes ----

#[test]
fn slow_log_writes_numbers_and_the_syscalls_it_covers() {
    let mut s = empty_summary();
    s.rows.push(write_row(Role::RequestHandler, Syscall::Pwrite64, 7, 3, SLOW_16_8MS));
    s.rows.push(write_row(Role::Other, Syscall::Fdatasync, 20, 4, SLOW_16_8MS));
    // Plain write and writev never count, however slow.
    s.rows.push(write_row(Role::RequestHandler, Syscall::Write, 7, 3, SLOW_16_8MS));
    s.rows.push(write_row(Role::RequestHandler, Syscall::Writev, 7, 3, SLOW_16_8MS));
    let f = findings(&s);
    let slow: Vec<&Finding> = f.iter().filter(|f| f.id == "slow_log_writes").collect();
    assert_eq!(slow.len(), 2, "{:?}", ids(&f));
    assert!(slow.iter().all(|f| f.severity == Severity::Warning));
    assert_eq!(slow[0].title, "request-handler threads wait on pwrite64: p99 16.8ms");
    assert!(
        slow[0].detail.starts_with("10 pwrite64 calls on request-handler threads (3 of them 10.0ms or longer)"),
        "{}",
        slow[0].detail
    );
    assert!(slow[0].detail.contains("p99 16.8ms, max 16.8ms."), "{}", slow[0].detail);
    assert_eq!(slow[1].title, "other threads wait on fdatasync: p99 16.8ms");
    assert!(slow[1].detail.starts_with("24 fdatasync calls on other threads (4 of them 10.0ms or longer)"), "{}", slow[1].detail);
}

#[test]
fn slow_log_writes_needs_ten_calls() {
    let mut s = empty_summary();
    s.rows.push(write_row(Role::Other, Syscall::Fsync, 6, 3, SLOW_16_8MS));
    assert!(s.rows[0].percentiles.p99_ns >= SLOW_WRITE_NS, "only the count is short");
    assert!(!fires(&s, "slow_log_writes"), "9 calls");
    s.rows[0] = write_row(Role::Other, Syscall::Fsync, 7, 3, SLOW_16_8MS);
    assert!(fires(&s, "slow_log_writes"), "10 calls");
}

#[test]
fn slow_log_writes_needs_three_slow_calls() {
    let mut s = empty_summary();
    s.rows.push(fsync_row(10, 2));
    assert!(s.rows[0].percentiles.p99_ns >= SLOW_WRITE_NS, "only the slow count is short");
    assert!(!fires(&s, "slow_log_writes"), "2 slow");
    s.rows[0] = fsync_row(10, 3);
    assert!(fires(&s, "slow_log_writes"), "3 slow");
}

#[test]
fn slow_log_writes_needs_a_p99_of_10ms() {
    // 3 slow of 400 calls (0.75%): p99 is a fast call.
    let mut s = empty_summary();
    s.rows.push(write_row(Role::Other, Syscall::Fsync, 397, 3, SLOW_16_8MS));
    assert!(s.rows[0].percentiles.p99_ns < SLOW_WRITE_NS);
    assert!(!fires(&s, "slow_log_writes"));
    // 3 slow of 200 (1.5%): p99 is slow.
    s.rows[0] = write_row(Role::Other, Syscall::Fsync, 197, 3, SLOW_16_8MS);
    assert!(fires(&s, "slow_log_writes"));
}

#[test]
fn slow_log_writes_slow_means_a_bucket_starting_at_10ms_or_more() {
    // 2^23 + 2 x 2^20 = 10_485_760 ns: the lowest kernel bucket bound at or above 10 ms.
    let mut s = empty_summary();
    s.rows.push(write_row(Role::Other, Syscall::Fsync, 7, 3, 10_485_760));
    let slow = the(&findings(&s), "slow_log_writes");
    assert_eq!(slow.title, "other threads wait on fsync: p99 10.5ms");
    // One nanosecond less is in the bucket from 2^23 + 2^20 = 9.44 ms: not surely 10 ms, p99 under 10 ms.
    s.rows[0] = write_row(Role::Other, Syscall::Fsync, 7, 3, 10_485_759);
    assert!(!fires(&s, "slow_log_writes"));
    // Even with a p99 over 10 ms (the two in the next bucket), that call is not a third slow one.
    let mut latencies = vec![2_000; 7];
    latencies.extend([10_485_759, 10_485_760, 10_485_760]);
    s.rows[0] = row(Role::Other, Syscall::Fsync, CacheResult::NoFileRead, &latencies);
    assert!(s.rows[0].percentiles.p99_ns >= SLOW_WRITE_NS);
    assert!(!fires(&s, "slow_log_writes"));
}

// ---- no_problem_found ----

#[test]
fn no_problem_found_sums_network_misses_and_says_how_busy() {
    let mut s = network_idle(1, ms(5_000)); // 5 s idle of 10 s: busy 50%
    let mut miss = |listener: &str, syscall, n: usize| {
        let mut r = row(Role::Network, syscall, CacheResult::Miss, &vec![ms(1); n]);
        r.listener = Some(listener.into());
        s.rows.push(r);
    };
    miss("PLAINTEXT", Syscall::Sendfile, 4);
    miss("SSL", Syscall::Pread64, 2);
    // Not network threads, or not misses: not counted.
    s.rows.push(row(Role::RequestHandler, Syscall::Pread64, CacheResult::Miss, &[ms(1); 100]));
    s.rows.push(row(Role::Network, Syscall::Sendfile, CacheResult::Hit, &[2_000; 50]));
    (s.stalls.produce.requests, s.stalls.produce.all.p99_ns) = (500, 3_500_000);
    let f = findings(&s);
    assert_eq!(ids(&f), ["no_problem_found"]);
    assert_eq!(f[0].severity, Severity::Info);
    assert_eq!(
        f[0].detail,
        "Produce p99 3.50ms over 500 requests; 6 page-cache misses on network threads; network threads busy 50%; no slow log writes."
    );
    assert_eq!(
        findings(&empty_summary())[0].detail,
        "no Produce requests traced; 0 page-cache misses on network threads; network threads busy n/a; no slow log writes."
    );
}

#[test]
fn info_findings_still_leave_no_problem_found_any_warning_removes_it() {
    let mut s = empty_summary();
    s.protocol.tls_connections = 1;
    assert_eq!(ids(&findings(&s)), ["tls_listener", "no_problem_found"]);
    s.lost.records = 1;
    assert_eq!(ids(&findings(&s)), ["records_lost", "tls_listener"]);
    // A critical one alone also does.
    assert_eq!(ids(&findings(&network_idle(2, ms(1_000)))), ["network_threads_saturated"]);
}

// ---- ordering ----

#[test]
fn findings_are_ordered_critical_then_warning_then_info_stable_within_each() {
    let mut s = network_idle(2, ms(1_000)); // busy 95%: critical, found after most others
    s.requests.sync_producers = vec![sync_producer("billing", 900, ms(1), ms(1))];
    s.protocol.tls_connections = 1;
    s.lost.records = 3;
    s.rows.push(fsync_row(12, 3));
    (s.stalls.produce.stalled_requests, s.stalls.produce.stalled_by_miss) = (5, 0);
    let f = findings(&s);
    assert_eq!(
        ids(&f),
        [
            "network_threads_saturated",
            "synchronous_producer",
            "records_lost",
            "slow_log_writes",
            "produce_stalled_by_slow_network_thread_calls",
            "tls_listener",
        ]
    );
    let severities: Vec<Severity> = f.iter().map(|f| f.severity).collect();
    assert!(severities.is_sorted(), "{severities:?}");
    assert_eq!(severities[0], Severity::Critical);
}

