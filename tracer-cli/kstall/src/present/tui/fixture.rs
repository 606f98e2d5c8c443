//! The tests' summary and helpers: the demo's cold-read case by hand, a Tui showing it, and
//! the frame rendered as text.
use crossterm::event::{KeyCode, KeyEvent};
use kstall_common::{CacheResult, Syscall};
use kstall_core::{
    hist::{Percentiles, kernel_hist},
    listeners::{ListenerInfo, Plane, SecurityProtocol},
    requests::{ApiRow, ClientRow},
    roles::{Role, RoleSource},
    stalls::{Cause, MissTotals, RequestRef, Stall, ThreadStalls},
    finding::{Figures, Finding, MissStalls, Severity, SyncProducerFigures, TlsListeners},
    summary::{Row, RowKey, Summary, ThreadInfo, empty_summary},
};
use ratatui::{Terminal, backend::TestBackend};

use super::{Context, Tui};

pub(super) const MISS_TITLE: &str = "Produce requests wait behind page-cache misses of Fetch sendfile on network threads";
pub(super) const THREAD: &str = "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0";

pub(super) fn ms(n: u64) -> u64 {
    n * 1_000_000
}

pub(super) fn row(role: Role, listener: Option<&str>, syscall: Syscall, cache: CacheResult, latencies: &[u64]) -> Row {
    Row::new(RowKey { role, listener: listener.map(String::from), syscall, cache }, kernel_hist(latencies))
}

pub(super) fn percentiles(p50_ns: u64, max_ns: u64) -> Percentiles {
    Percentiles { p50_ns, p90_ns: max_ns, p99_ns: max_ns, p999_ns: max_ns, max_ns }
}


/// The demo's case, by hand: a cold reader's sendfile misses on the PLAINTEXT network
/// thread, Produce delayed behind them.
pub(super) fn cold_read() -> Summary {
    let mut s = empty_summary();
    s.broker.pid = 21140;
    s.elapsed_seconds = 30.3;
    s.roles.insert(Role::Network, vec![11, 12]);
    s.roles.insert(Role::RequestHandler, (20..28).collect());
    s.roles.insert(Role::Other, (30..90).collect());
    s.listeners.push(ListenerInfo {
        name: "PLAINTEXT".into(),
        security_protocol: Some(SecurityProtocol::Plaintext),
        plane: Plane::Data,
        encrypted: false,
        address: Some("127.0.0.1:39595".into()),
        network_threads: 1,
    });
    let hits: Vec<u64> = (0..1300).map(|i| 20_000 + i * 30).collect();
    s.rows = vec![
        row(Role::Network, Some("PLAINTEXT"), Syscall::Sendfile, CacheResult::Hit, &hits),
        row(Role::Network, Some("PLAINTEXT"), Syscall::Sendfile, CacheResult::Miss, &[ms(65); 405]),
        row(Role::Network, Some("PLAINTEXT"), Syscall::EpollWait, CacheResult::NoFileRead, &[ms(2); 3000]),
        row(Role::RequestHandler, None, Syscall::Fdatasync, CacheResult::NoFileRead, &[ms(3); 40]),
        row(Role::Other, None, Syscall::Pwrite64, CacheResult::NoFileRead, &[9_000; 500]),
    ];
    s.requests.apis = vec![
        ApiRow { api: "Produce", api_key: 0, count: 1260, rate_per_s: 41.6, total: percentiles(ms(1), ms(131)), broker: percentiles(ms(1), ms(69)), socket_wait: percentiles(58_000, ms(67)), socket_wait_unknown: 1, buckets: Vec::new() },
        ApiRow { api: "Fetch", api_key: 1, count: 400, rate_per_s: 13.2, total: percentiles(ms(65), ms(103)), broker: percentiles(ms(65), ms(103)), socket_wait: Percentiles::default(), socket_wait_unknown: 400, buckets: Vec::new() },
    ];
    s.requests.clients = ["sync-producer", "analytics-backfill"]
        .into_iter()
        .map(|client_id| ClientRow {
            client_id: client_id.into(),
            listener: Some("PLAINTEXT".into()),
            api: if client_id == "sync-producer" { "Produce" } else { "Fetch" },
            count: 700,
            rate_per_s: 23.1,
            total: percentiles(ms(1), ms(100)),
            connections: 1,
            max_in_flight: 1,
            mean_in_flight: 1.0,
            buckets: Vec::new(),
            sum_ns: 0,
        })
        .collect();
    s.threads.push(ThreadInfo { tid: 12, comm: "data-plane-kafk".into(), jvm_name: Some(THREAD.into()), role: Role::Network, role_source: RoleSource::JvmName, listener: None });
    let p = &mut s.stalls.produce;
    (p.requests, p.stalled_requests, p.stalled_by_miss) = (1260, 327, 327);
    (p.all, p.stalled, p.not_stalled) = (percentiles(ms(1), ms(147)), percentiles(ms(65), ms(147)), percentiles(ms(1), ms(7)));
    s.stalls.threshold_ns = ms(1);
    s.stalls.by_thread.push(ThreadStalls { tid: 12, listener: Some("PLAINTEXT".into()), cause: Cause::PageCacheMiss, stalls: 405, stall_ns: ms(25_100), top_reader: Some("analytics-backfill".into()), top_partition: Some("cold-0".into()) });
    s.stalls.worst = (0..10)
        .map(|i| Stall {
            tid: 12,
            listener: Some("PLAINTEXT".into()),
            syscall: Some(Syscall::Sendfile),
            cache: Some(CacheResult::Miss),
            cause: Cause::PageCacheMiss,
            start_ns: i,
            duration_ns: ms(103 - i),
            off_cpu_ns: 0,
            blocked_ns: ms(100),
            pages_added: 256,
            bytes: 1 << 20,
            file: None,
            topic_partition: Some("cold-0".into()),
            segment: Some("00000000000000000000.log".into()),
            file_range: None,
            request: Some(RequestRef { api: "Fetch", correlation_id: 5 + i as i32, client_id: "analytics-backfill".into() }),
            delayed_requests: 2 * i,
            delayed_replication: 0,
            delayed_produce: i,
            delayed_produce_ns: ms(i),
            delayed_produce_known: true,
        })
        .collect();
    let cold = |name: &str, stalls| MissTotals { name: name.into(), stalls, stall_ns: ms(stalls * 60), bytes: stalls << 20, pages_added: stalls * 256 };
    s.stalls.cold_partitions = vec![cold("cold-0", 404), cold("hot-0", 1)];
    s.stalls.cold_readers = vec![cold("analytics-backfill", 404)];
    s.findings = vec![
        Finding::new(Severity::Critical, Figures::ProduceStalledByPageCacheMiss(MissStalls { requests: 2000, stalled_by_miss: 404, ..Default::default() })),
        Finding::new(Severity::Warning, Figures::SynchronousProducer(SyncProducerFigures { client_id: "sync-producer".into(), ..Default::default() })),
        Finding::new(Severity::Warning, Figures::NetworkThreadsSaturated { busy_share: 0.75, traced_seconds: 30.3 }),
        Finding::new(Severity::Info, Figures::TlsListener(TlsListeners { listeners: Vec::new(), tls_connections: 1 })),
        Finding::new(Severity::Info, Figures::RecordsLost { records: 3 }),
    ];
    s
}

pub(super) fn tui(summary: Summary) -> Tui {
    let mut tui = Tui::new(Context { broker_pid: summary.broker.pid, kafka_version: Some("4.4.0".into()) });
    tui.on_summary(summary);
    tui
}

/// The frame as text, one string per row, as a terminal of this size shows it.
pub(super) fn render(tui: &mut Tui, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| tui.draw(frame)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>().trim_end().to_string()).collect()
}

pub(super) fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::from(code)
}

pub(super) fn row_of<'a>(screen: &'a [String], needle: &str) -> Option<(usize, &'a String)> {
    screen.iter().enumerate().find(|(_, l)| l.contains(needle))
}

/// The first row that starts with `prefix`: a table's row by its first cell.
pub(super) fn starting<'a>(screen: &'a [String], prefix: &str) -> (usize, &'a String) {
    screen.iter().enumerate().find(|(_, l)| l.starts_with(prefix)).unwrap_or_else(|| panic!("no row starts with {prefix:?}: {screen:#?}"))
}

