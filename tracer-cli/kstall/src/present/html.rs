//! The HTML report: one self-contained file (inline CSS and SVG, no script, and a Content
//! Security Policy that forbids any fetch), readable in a browser and printable.
use std::fmt::Write as _;

use kstall_common::{CacheResult, Syscall, log2_floor};
use kstall_core::{listeners, report::Report, roles::Role, stalls::Cause, timeline::Timeline, units::duration};

use super::table::{config_line, evidence_line, measurement_tables, unavailable};

const HIT: &str = "#1f77b4";
const MISS: &str = "#d62728";
const OTHER_STALL: &str = "#ff7f0e";
const PALETTE: [&str; 6] = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];
/// Powers of two of nanoseconds on the latency axis: one column below the kernel's first
/// bucket bound (its underflow bucket, below ~1 us) to its last bound, 2^34 (~17 s).
const AXIS_MIN_POW: u32 = kstall_common::MIN_POW - 1;
const AXIS_MAX_POW: u32 = kstall_common::MAX_POW;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One series of a latency histogram: (lower bound in ns, count) per bucket.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub buckets: Vec<(u64, u64)>,
}

fn pow_of(ns: u64) -> u32 {
    log2_floor(ns).clamp(AXIS_MIN_POW, AXIS_MAX_POW)
}

/// x position (0..1) of a latency on the log axis.
fn log_x(ns: f64) -> f64 {
    ((ns.max(1.0).log2() - AXIS_MIN_POW as f64) / (AXIS_MAX_POW + 1 - AXIS_MIN_POW) as f64).clamp(0.0, 1.0)
}

const TICKS: [(f64, &str); 8] =
    [(1e3, "1us"), (1e4, "10us"), (1e5, "100us"), (1e6, "1ms"), (1e7, "10ms"), (1e8, "100ms"), (1e9, "1s"), (1e10, "10s")];

/// Grouped bars per power of two of latency, counts on a log scale so a few slow calls show
/// next to millions of fast ones.
pub fn latency_histogram(title: &str, series: &[Series]) -> String {
    let (w, h, left, bottom, top) = (760.0, 260.0, 56.0, 40.0, 28.0);
    let plot_w = w - left - 16.0;
    let plot_h = h - bottom - top;
    let columns = (AXIS_MAX_POW + 1 - AXIS_MIN_POW) as f64;
    let mut per_column = vec![vec![0u64; series.len()]; columns as usize];
    for (i, s) in series.iter().enumerate() {
        for &(lower, count) in &s.buckets {
            per_column[(pow_of(lower) - AXIS_MIN_POW) as usize][i] += count;
        }
    }
    let peak = per_column.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let scale = (peak + 1.0).log10();
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><text x="{left}" y="18" class="ct">{t}</text>"#,
        t = esc(title)
    );
    let col_w = plot_w / columns;
    let bar_w = (col_w - 2.0) / series.len().max(1) as f64;
    for (c, counts) in per_column.iter().enumerate() {
        for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let bh = ((n as f64 + 1.0).log10() / scale * plot_h).max(1.5);
            let x = left + c as f64 * col_w + 1.0 + i as f64 * bar_w;
            let lower = 1u64 << (c as u32 + AXIS_MIN_POW);
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {n} in [{}, {})</title></rect>"#,
                top + plot_h - bh,
                (bar_w - 0.5).max(0.5),
                series[i].color,
                esc(&series[i].label),
                duration(lower),
                duration(lower * 2)
            );
        }
    }
    axes(&mut svg, left, top, plot_w, plot_h);
    for (ns, label) in TICKS {
        let x = left + log_x(ns) * plot_w;
        let _ = write!(svg, r#"<line x1="{x:.1}" x2="{x:.1}" y1="{0:.1}" y2="{1:.1}" class="tick"/><text x="{x:.1}" y="{2:.1}" class="tl" text-anchor="middle">{label}</text>"#, top + plot_h, top + plot_h + 4.0, top + plot_h + 16.0);
    }
    let _ = write!(svg, r#"<text x="12" y="{:.1}" class="tl" transform="rotate(-90 12 {:.1})">calls (log)</text>"#, top + plot_h / 2.0, top + plot_h / 2.0);
    if series.iter().all(|s| s.buckets.is_empty()) {
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" class="tl" text-anchor="middle">none traced</text>"#, left + plot_w / 2.0, top + plot_h / 2.0);
    }
    legend(&mut svg, series.iter().map(|s| (s.label.as_str(), s.color)), w - 16.0, top + 4.0);
    svg += "</svg>";
    svg
}

fn axes(svg: &mut String, left: f64, top: f64, plot_w: f64, plot_h: f64) {
    let _ = write!(
        svg,
        r#"<line x1="{left}" x2="{left}" y1="{top}" y2="{0:.1}" class="axis"/><line x1="{left}" x2="{1:.1}" y1="{0:.1}" y2="{0:.1}" class="axis"/>"#,
        top + plot_h,
        left + plot_w
    );
}

fn legend<'a>(svg: &mut String, items: impl Iterator<Item = (&'a str, &'a str)>, right: f64, top: f64) {
    for (i, (label, color)) in items.enumerate() {
        let y = top + i as f64 * 16.0;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" class="tl" text-anchor="end">{}</text>"#,
            right - 10.0,
            y,
            right - 14.0,
            y + 9.0,
            esc(label)
        );
    }
}

/// Produce latency (dots, log scale) against time, with network-thread stalls as bands: a
/// stalled Produce sits on or right after a band.
pub fn stall_timeline(t: &Timeline, traced_seconds: f64) -> String {
    let (w, h, left, bottom, top) = (760.0, 300.0, 56.0, 40.0, 28.0);
    let plot_w = w - left - 16.0;
    let plot_h = h - bottom - top;
    let span_ms = (traced_seconds * 1e3).max(1.0);
    let max_latency = t.produce.iter().map(|p| p.latency_ns).chain(t.stalls.iter().map(|s| s.duration_ns)).max().unwrap_or(1_000_000);
    let (lo, hi) = (1e4f64.log10(), (max_latency as f64 * 1.5).max(1e6).log10());
    let y_of = |ns: f64| top + plot_h - ((ns.max(1e4).log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * plot_h;
    let x_of = |ms: f64| left + (ms / span_ms).clamp(0.0, 1.0) * plot_w;
    let title = "Produce latency over time, with network-thread stalls";
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{title}"><title>{title}</title><text x="{left}" y="18" class="ct">{title}</text>"#
    );
    for s in &t.stalls {
        let x = x_of(s.at_ms);
        let width = (x_of(s.at_ms + s.duration_ns as f64 / 1e6) - x).max(1.5);
        let color = if s.cause == Cause::PageCacheMiss { MISS } else { OTHER_STALL };
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{top}" width="{width:.1}" height="{plot_h}" fill="{color}" fill-opacity="0.35"><title>{} {} on thread {} at {:.3} s</title></rect>"#,
            s.cause.label(),
            duration(s.duration_ns),
            s.tid,
            s.at_ms / 1e3
        );
    }
    for p in &t.produce {
        let (color, r) = match p.stalled_by {
            Some(Cause::PageCacheMiss) => (MISS, 2.6),
            Some(_) => (OTHER_STALL, 2.6),
            None => ("#555", 1.4),
        };
        let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{color}"/>"#, x_of(p.at_ms), y_of(p.latency_ns as f64));
    }
    axes(&mut svg, left, top, plot_w, plot_h);
    for (ns, label) in TICKS.iter().filter(|(ns, _)| ns.log10() >= lo && ns.log10() <= hi) {
        let y = y_of(*ns);
        let _ = write!(svg, r#"<line x1="{:.1}" x2="{left}" y1="{y:.1}" y2="{y:.1}" class="tick"/><text x="{:.1}" y="{:.1}" class="tl" text-anchor="end">{label}</text>"#, left - 4.0, left - 6.0, y + 4.0);
    }
    let steps = 6;
    let digits = if span_ms < 60_000.0 { 1 } else { 0 };
    for i in 0..=steps {
        let ms = span_ms * i as f64 / steps as f64;
        let x = x_of(ms);
        let _ = write!(svg, r#"<text x="{x:.1}" y="{:.1}" class="tl" text-anchor="middle">{:.digits$}s</text>"#, top + plot_h + 16.0, ms / 1e3);
    }
    if t.produce.is_empty() && t.stalls.is_empty() {
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" class="tl" text-anchor="middle">no Produce requests or stalls traced</text>"#, left + plot_w / 2.0, top + plot_h / 2.0);
    }
    // Only what is drawn: a red swatch in a chart without stalls would read as one.
    let has_miss = t.stalls.iter().any(|s| s.cause == Cause::PageCacheMiss);
    let has_other = t.stalls.iter().any(|s| s.cause != Cause::PageCacheMiss);
    let entries = [
        (has_miss, "page-cache miss (band), Produce it stalled (dot)", MISS),
        (has_other, "other stall (band), Produce it stalled (dot)", OTHER_STALL),
        (!t.produce.is_empty(), "Produce", "#555"),
    ];
    legend(&mut svg, entries.into_iter().filter(|e| e.0).map(|(_, label, color)| (label, color)), w - 16.0, top + 4.0);
    svg += "</svg>";
    svg
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}h3{font-size:15px;margin:0 0 6px}
.meta{color:#555}.finding{border-left:6px solid #888;background:#f7f7f7;padding:10px 14px;margin:10px 0;break-inside:avoid}
.critical{border-color:#d62728;background:#fdecea}.warning{border-color:#ff7f0e;background:#fff4e5}.info{border-color:#1f77b4;background:#eef5fb}
.sev{font-size:11px;font-weight:700;letter-spacing:.05em;margin-right:8px}
table{border-collapse:collapse;margin:6px 0 16px;font-size:12.5px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}th{background:#f0f0f0}
td.n{text-align:right;font-variant-numeric:tabular-nums}.chart{width:100%;max-width:760px;display:block;margin:8px 0 18px;break-inside:avoid}
.ct{font-size:13px;font-weight:600}.tl{font-size:10.5px;fill:#444}.axis{stroke:#333}.tick{stroke:#999}
pre{white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:8px;font-size:11.5px}
@media print{body{margin:0;max-width:none}.finding,.chart,table{break-inside:avoid}}";

pub fn report(r: &Report) -> String {
    let c = &r.context;
    let s = &r.summary;
    let mut out = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"><meta name="viewport" content="width=device-width"><title>kstall report: broker {} on {}</title><style>{STYLE}</style></head><body>"#,
        s.broker.pid,
        esc(&c.host)
    );
    let _ = write!(
        out,
        r#"<h1>kstall report: Kafka broker pid {} on {}</h1><p class="meta">{} traced, {}; kernel {}; Kafka {}; kstall {}</p><h2>Findings</h2>"#,
        s.broker.pid,
        esc(&c.host),
        duration((s.elapsed_seconds * 1e9) as u64),
        esc(&c.generated_at),
        esc(&c.kernel),
        esc(c.kafka_version.as_deref().unwrap_or("version unknown")),
        c.kstall_version
    );
    for f in &r.summary.findings {
        let w = super::words::words(f);
        let _ = write!(
            out,
            r#"<div class="finding {}" data-id="{}"><h3><span class="sev">{}</span>{}</h3><p>{}</p><p><b>Recommendation:</b> {}</p><p class="meta">{}</p></div>"#,
            f.severity.as_str(),
            f.id.as_str(),
            f.severity.label(),
            esc(&w.title),
            esc(&w.detail),
            esc(&w.fix),
            esc(&super::words::sources_line(f))
        );
    }
    out += "<h2>Charts</h2>";
    out += &stall_timeline(&r.timeline, s.elapsed_seconds);
    // Every listener's network rows together.
    let sendfile: Vec<Series> = [(CacheResult::Hit, HIT), (CacheResult::Miss, MISS)]
        .into_iter()
        .filter_map(|(cache, color)| {
            let rows: Vec<_> = s.rows.iter().filter(|row| row.role == Role::Network && row.syscall == Syscall::Sendfile && row.cache == cache).collect();
            (!rows.is_empty()).then(|| Series {
                label: format!("page-cache {} ({} calls)", cache.as_str(), rows.iter().map(|r| r.count).sum::<u64>()),
                color,
                buckets: rows.iter().flat_map(|r| r.buckets.iter().map(|b| (b.lower_ns, b.count))).collect(),
            })
        })
        .collect();
    out += &latency_histogram("sendfile on network threads: page-cache hits vs misses", &sendfile);
    let apis: Vec<Series> = s
        .requests
        .apis
        .iter()
        .zip(PALETTE.iter().cycle())
        .map(|(a, color)| Series {
            label: format!("{} ({})", a.api, a.count),
            color,
            buckets: a.buckets.iter().map(|b| (b.lower_ns, b.count)).collect(),
        })
        .collect();
    out += &latency_histogram("Kafka request latency per API (socket wait + broker time)", &apis);
    out += "<h2>Measurements</h2>";
    for t in measurement_tables(s) {
        let _ = write!(out, "<h3>{}</h3>", esc(t.title));
        if t.rows.is_empty() {
            out += "<p>(none)</p>";
            continue;
        }
        out += "<table><thead><tr>";
        for h in t.header() {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out += "</tr></thead><tbody>";
        for row in &t.rows {
            out += "<tr>";
            for (i, cell) in row.iter().enumerate() {
                let class = if i >= t.numeric_from { r#" class="n""# } else { "" };
                let _ = write!(out, "<td{class}>{}</td>", esc(cell));
            }
            out += "</tr>";
        }
        out += "</tbody></table>";
    }
    out += "<h2>Context</h2><table><tbody>";
    let mut context_rows: Vec<(String, String)> = s
        .thread_names_by_role()
        .iter()
        .map(|(role, names)| (format!("{} threads ({})", role.label(), names.len()), names.join(", ")))
        .collect();
    context_rows.extend(s.listeners.iter().map(|l| (format!("listener {}", l.name), listeners::label(l))));
    context_rows.extend([
        ("broker config".into(), s.broker_config.as_ref().map_or("not read".into(), config_line)),
        ("thread names from".into(), s.thread_names.as_str().into()),
        ("probes".into(), format!("{} attached in {:.0} ms", s.probes.attached.len(), s.probes.attach_ms)),
        ("syscall hooks".into(), s.probes.syscall_hooks.to_string()),
        ("unavailable tracepoints".into(), unavailable(&s.probes)),
        (
            "kernel evidence".into(),
            s.probes.evidence.iter().map(evidence_line).collect::<Vec<_>>().join("; "),
        ),
        ("stall threshold".into(), duration(s.stalls.threshold_ns)),
        (
            "lost".into(),
            format!(
                "{} request/stall records; {} calls (histogram map full); {} calls (in-flight map full); {} probe runs skipped by the kernel; {} histogram entries unread; {} switch-ins missed (off-CPU time counted from the switch out)",
                s.lost.records, s.lost.histogram_map_full, s.lost.in_flight_map_full, s.lost.probe_runs_skipped, s.lost.histogram_entries_unread, s.lost.switch_ins_missed
            ),
        ),
        ("broker exited during the trace".into(), if c.broker_exited { "yes".into() } else { "no".into() }),
    ]);
    for (k, v) in context_rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
    }
    let _ = writeln!(out, "</tbody></table><h3>Broker command line</h3><pre>{}</pre></body></html>", esc(&s.broker.command_line));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_draws_one_bar_per_nonempty_bucket_and_escapes_labels() {
        let svg = latency_histogram(
            "a <b> & c",
            &[
                Series { label: "hit".into(), color: HIT, buckets: vec![(8192, 1000), (9216, 5), (16384, 10)] },
                Series { label: "miss".into(), color: MISS, buckets: vec![(8_388_608, 3)] },
            ],
        );
        // 8192 and 9216 share the 2^13 column.
        assert_eq!(svg.matches("<rect").count(), 3 + 2, "3 bars + 2 legend swatches");
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains(MISS));
    }

    #[test]
    fn log_axis_places_ticks_in_order() {
        let xs: Vec<f64> = TICKS.iter().map(|(ns, _)| log_x(*ns)).collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]));
        assert!(xs[0] > 0.0 && xs[7] < 1.0);
    }
}
