//! Presenting a [`Summary`]: comfy-table text for people, JSON for scripts.
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use kstall_ebpf::{BUCKETS, LatencyHist, MIN_POW, SUB_BUCKETS};

use crate::aggregate::{Row, Summary};

/// Human duration with 3 significant digits: 850ns, 13.0us, 8.21ms, 1.20s.
pub fn duration(ns: u64) -> String {
    let (value, unit) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "us"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let digits = if value >= 100.0 { 0 } else if value >= 10.0 { 1 } else { 2 };
    format!("{value:.digits$}{unit}")
}

pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n}B"),
        1024..1_048_576 => format!("{:.1}KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1}MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2}GiB", n as f64 / 1_073_741_824.0),
    }
}

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

/// A percentile: values in the kernel's lowest bucket are only known to be under ~1 us.
fn percentile(ns: u64) -> String {
    if ns < 1 << MIN_POW { "<1us".to_string() } else { duration(ns) }
}

fn row_cells(row: &Row) -> Vec<Cell> {
    let p = &row.percentiles;
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    let cache = match row.cache {
        "none" => String::new(),
        verdict => verdict.to_string(),
    };
    vec![
        Cell::new(row.role.label()),
        Cell::new(row.syscall),
        Cell::new(cache),
        right(row.count.to_string()),
        right(percentile(p.p50_ns)),
        right(percentile(p.p90_ns)),
        right(percentile(p.p99_ns)),
        right(percentile(p.p999_ns)),
        right(duration(p.max_ns)),
        right(if row.key.syscall.returns_bytes() { bytes(row.bytes) } else { String::new() }),
        right(if row.pages_added > 0 { row.pages_added.to_string() } else { String::new() }),
        Cell::new(log2_bar(&row.hist)),
    ]
}

pub fn table(summary: &Summary) -> String {
    let mut out = String::new();
    let b = &summary.broker;
    out += &format!(
        "kstall: broker pid {} ({}), {:.1}s traced, thread names from {}\n",
        b.pid, b.main_class, summary.elapsed_seconds, summary.thread_names
    );
    for (role, tids) in &summary.roles {
        let names: Vec<String> = summary
            .threads
            .iter()
            .filter(|t| t.role == *role)
            .take(4)
            .map(|t| t.jvm_name.clone().unwrap_or_else(|| t.comm.clone()))
            .collect();
        let more = if tids.len() > names.len() { ", ..." } else { "" };
        out += &format!("  {:<16} {:>3} threads: {}{more}\n", role.label(), tids.len(), names.join(", "));
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "role", "syscall", "cache", "calls", "p50", "p90", "p99", "p99.9", "max", "bytes",
            "pages added", &format!("log2 histogram\n{}", bar_axis()),
        ]);
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
    if lost.events > 0 {
        out += &format!("warning: {} request and stall records lost (ring buffer full): attribution is incomplete\n", lost.events);
    }
    if !summary.probes.unavailable.is_empty() {
        out += &format!(
            "note: this kernel lacks {}; kstall uses the remaining evidence\n",
            summary.probes.unavailable.join(", ")
        );
    }
    out += &requests_section(summary);
    out += &stalls_section(summary);
    out += &findings_section(summary);
    out
}

fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled).set_header(header);
    table
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

/// Right-aligned duration cells.
fn durations(ns: &[u64]) -> Vec<Cell> {
    ns.iter().map(|&n| right(duration(n))).collect()
}

fn requests_section(summary: &Summary) -> String {
    let r = &summary.requests;
    let health = &summary.protocol;
    let mut out = String::new();
    if r.apis.is_empty() {
        out += &format!(
            "\nKafka requests: none answered yet ({} read, {} framing errors, {} TLS connections)\n",
            health.requests_parsed, health.framing_errors, health.tls_connections
        );
        return out;
    }
    let wait = if health.socket_wait_measured { "socket wait + broker time" } else { "broker time only: this kernel lacks the sock tracepoints" };
    out += &format!("\nKafka requests on the network threads (latency = {wait})\n");
    let mut t = new_table(vec![
        "api", "requests", "per s", "p50", "p99", "p99.9", "max", "broker p50", "broker p99", "sock wait p50", "sock wait p99",
    ]);
    for a in &r.apis {
        let mut row = vec![Cell::new(a.api), right(a.count.to_string()), right(format!("{:.1}", a.rate_per_s))];
        let (total, broker) = (&a.total, &a.broker);
        row.extend(durations(&[total.p50_ns, total.p99_ns, total.p999_ns, total.max_ns, broker.p50_ns, broker.p99_ns]));
        if a.count > a.socket_wait_unknown {
            row.extend(durations(&[a.socket_wait.p50_ns, a.socket_wait.p99_ns]));
        } else {
            row.extend([right("-".into()), right("-".into())]);
        }
        t.add_row(row);
    }
    out += &t.to_string();
    out += "\n";
    let mut t = new_table(vec!["client.id", "api", "requests", "per s", "p50", "p99", "max", "conns", "in flight max", "mean"]);
    for c in &r.clients {
        let mut row = vec![
            Cell::new(if c.client_id.is_empty() { "(none)" } else { &c.client_id }),
            Cell::new(c.api),
            right(c.count.to_string()),
            right(format!("{:.1}", c.rate_per_s)),
        ];
        row.extend(durations(&[c.total.p50_ns, c.total.p99_ns, c.total.max_ns]));
        row.extend([right(c.connections.to_string()), right(c.max_in_flight.to_string()), right(format!("{:.2}", c.mean_in_flight))]);
        t.add_row(row);
    }
    out += &t.to_string();
    out += "\n";
    if r.other_client_ids > 0 || r.untracked_client_requests > 0 {
        out += &format!(
            "(other): {} less active client ids and {} requests of client ids beyond the {} tracked\n",
            r.other_client_ids,
            r.untracked_client_requests,
            crate::requests::MAX_TRACKED_CLIENTS
        );
    }
    out
}

fn stalls_section(summary: &Summary) -> String {
    let st = &summary.stalls;
    let p = &st.produce;
    let mut out = format!(
        "\nNetwork-thread stalls (page-cache misses, and calls >= {}): {}",
        duration(st.threshold_ns),
        st.stalls
    );
    let causes: Vec<String> =
        st.by_cause.iter().filter_map(|c| c.cause.map(|k| format!("{} {} ({})", c.stalls, k.label(), duration(c.stall_ns)))).collect();
    if !causes.is_empty() {
        out += &format!(": {}", causes.join(", "));
    }
    out += "\n";
    if p.requests > 0 {
        let mut t = new_table(vec!["Produce", "requests", "p50", "p99", "p99.9", "max"]);
        for (label, n, q) in [
            ("all", p.requests, &p.all),
            ("stalled", p.stalled_requests, &p.stalled),
            ("not stalled", p.requests - p.stalled_requests, &p.not_stalled),
        ] {
            let mut row = vec![Cell::new(label), right(n.to_string())];
            row.extend(durations(&[q.p50_ns, q.p99_ns, q.p999_ns, q.max_ns]));
            t.add_row(row);
        }
        out += &t.to_string();
        out += &format!(
            "\nstalled Produce: {} ({} by page-cache misses); slowest 1%: {} of {} stalled; stalls added {} ({} by misses)\n",
            p.stalled_requests,
            p.stalled_by_miss,
            p.slowest_1pct_stalled,
            p.slowest_1pct,
            duration(p.stall_ns_added),
            duration(p.miss_ns_added),
        );
    }
    for (title, rows) in [("cold partition", &st.cold_partitions), ("cold reader (client.id)", &st.cold_readers)] {
        if rows.is_empty() {
            continue;
        }
        let mut t = new_table(vec![title, "misses", "miss time", "bytes", "pages added"]);
        for m in rows {
            t.add_row(vec![
                Cell::new(&m.name),
                right(m.stalls.to_string()),
                right(duration(m.stall_ns)),
                right(bytes(m.bytes)),
                right(m.pages_added.to_string()),
            ]);
        }
        out += &t.to_string();
        out += "\n";
    }
    if !st.worst.is_empty() {
        let mut t = new_table(vec!["longest stalls", "thread", "cause", "file", "serving", "delayed Produce"]);
        for s in st.worst.iter().take(5) {
            let thread = summary
                .threads
                .iter()
                .find(|t| t.tid == s.tid)
                .map_or(s.tid.to_string(), |t| t.jvm_name.clone().unwrap_or_else(|| t.comm.clone()));
            let file = match (&s.topic_partition, &s.segment, &s.file) {
                (Some(tp), Some(seg), _) => format!("{tp} {seg}"),
                (_, _, Some(path)) => path.display().to_string(),
                _ => String::new(),
            };
            let serving = s.request.as_ref().map_or(String::new(), |r| format!("{} {} #{}", r.api, r.client_id, r.correlation_id));
            t.add_row(vec![
                right(format!("{} {}", s.syscall, duration(s.duration_ns))),
                Cell::new(thread),
                Cell::new(s.cause.label()),
                Cell::new(file),
                Cell::new(serving),
                right(format!("{} ({})", s.delayed_produce, duration(s.delayed_produce_ns))),
            ]);
        }
        out += &t.to_string();
        out += "\n";
    }
    out
}

fn findings_section(summary: &Summary) -> String {
    let mut out = String::new();
    if summary.findings.is_empty() {
        return out;
    }
    out += "\nFindings\n";
    for f in &summary.findings {
        out += &format!("[{:?}] {}\n  {}\n  fix: {}\n", f.severity, f.title, f.detail, f.fix);
    }
    out
}

pub fn json(summary: &Summary) -> String {
    serde_json::to_string_pretty(summary).expect("summary serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstall_ebpf::bucket_index;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(13_042), "13.0us");
        assert_eq!(duration(8_214_000), "8.21ms");
        assert_eq!(duration(61_064_000), "61.1ms");
        assert_eq!(duration(1_200_000_000), "1.20s");
        assert_eq!(bytes(1_048_576), "1.0MiB");
    }

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
}
