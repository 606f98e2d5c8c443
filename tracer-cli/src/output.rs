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
    if !summary.probes.unavailable.is_empty() {
        out += &format!(
            "note: this kernel lacks {}; hit/miss uses the remaining evidence\n",
            summary.probes.unavailable.join(", ")
        );
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
