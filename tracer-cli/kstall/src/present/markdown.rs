//! The report as Markdown, for tickets and terminals (the default of `kstall report`).
use kstall_core::{listeners, report::Report, units::duration};

use super::table::{config_line, evidence_line, measurement_tables, unavailable};

/// Markdown for tickets and terminals.
pub fn markdown(report: &Report) -> String {
    let (c, s) = (&report.context, &report.summary);
    let mut out = format!(
        "# kstall report: Kafka broker pid {} on {}\n\n{} traced ({}), {}; kernel {}; Kafka {}; kstall {}\n\n## Findings\n\n",
        s.broker.pid,
        c.host,
        duration((s.elapsed_seconds * 1e9) as u64),
        c.requested_seconds.map_or("until interrupted".into(), |r| format!("{r:.0} s requested")),
        c.generated_at,
        c.kernel,
        c.kafka_version.as_deref().unwrap_or("version unknown"),
        c.kstall_version,
    );
    for f in &report.summary.findings {
        let w = super::words::words(f);
        out += &format!(
            "### {}: {}\n\n{}\n\n**Recommendation:** {}\n\n_`{}`; {}_\n\n",
            f.severity.label(),
            w.title,
            w.detail,
            w.fix,
            f.id.as_str(),
            super::words::sources_line(f)
        );
    }
    out += "## Measurements\n\n";
    for t in measurement_tables(&report.summary) {
        out += &format!("### {}\n\n", t.title);
        if t.rows.is_empty() {
            out += "(none)\n\n";
            continue;
        }
        out += &format!("| {} |\n", t.header().join(" | "));
        let align: Vec<&str> = (0..t.columns.len()).map(|i| if i >= t.numeric_from { "---:" } else { "---" }).collect();
        out += &format!("| {} |\n", align.join(" | "));
        for row in &t.rows {
            let cells: Vec<String> = row.iter().map(|cell| cell.replace('|', "\\|")).collect();
            out += &format!("| {} |\n", cells.join(" | "));
        }
        out += "\n";
    }
    out += "## Context\n\n";
    for (role, names) in &s.thread_names_by_role() {
        out += &format!("- {} threads ({}): {}\n", role.label(), names.len(), names.join(", "));
    }
    for l in &s.listeners {
        out += &format!("- listener {}\n", listeners::label(l));
    }
    out += &format!("- broker config: {}\n", s.broker_config.as_ref().map_or("not read".into(), config_line));
    for e in &s.probes.evidence {
        out += &format!("- evidence {}\n", evidence_line(e));
    }
    out += &format!(
        "- thread names from: {}\n- syscall hooks: {}\n- probes: {} attached in {:.0} ms; unavailable: {}\n- stall threshold: {}\n- lost: {} request/stall records, {} calls (histogram map full), {} calls (in-flight map full), {} probe runs skipped by the kernel, {} histogram entries unread, {} switch-ins missed (off-CPU time counted from the switch out)\n- broker exited during the trace: {}\n- command line:\n\n```\n{}\n```\n",
        s.thread_names.as_str(),
        s.probes.syscall_hooks,
        s.probes.attached.len(),
        s.probes.attach_ms,
        unavailable(&s.probes),
        duration(s.stalls.threshold_ns),
        s.lost.records,
        s.lost.histogram_map_full,
        s.lost.in_flight_map_full,
        s.lost.probe_runs_skipped,
        s.lost.histogram_entries_unread,
        s.lost.switch_ins_missed,
        if c.broker_exited { "yes" } else { "no" },
        s.broker.command_line
    );
    out
}


#[cfg(test)]
mod tests {
    use kstall_core::{
        report::{Host, Report},
        stalls::MissTotals,
        finding::{Figures, Finding, Severity, TlsListeners},
        summary::empty_summary,
        timeline::Timeline,
    };

    use super::markdown;

    fn report(requested_seconds: Option<f64>, broker_exited: bool) -> Report {
        let mut s = empty_summary();
        s.findings = vec![
            Finding::new(Severity::Warning, Figures::RecordsLost { records: 3 }),
            Finding::new(Severity::Info, Figures::TlsListener(TlsListeners { listeners: Vec::new(), tls_connections: 2 })),
        ];
        s.stalls.cold_readers = vec![MissTotals { name: "odd|client".into(), stalls: 3, stall_ns: 24_000_000, bytes: 1 << 20, pages_added: 256 }];
        let host = Host { generated_at: "2026-01-02T03:04:05Z".into(), hostname: "h1".into(), kernel: "6.1.0".into(), kafka_version: None };
        let mut r = Report::new(s, Timeline::new(0), host, broker_exited, requested_seconds);
        r.context.kstall_version = "9.9.9";
        r
    }

    #[test]
    fn findings_come_first_then_measurements_then_context() {
        let md = markdown(&report(Some(60.0), false));
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "# kstall report: Kafka broker pid 1 on h1");
        assert_eq!(lines[2], "10.0s traced (60 s requested), 2026-01-02T03:04:05Z; kernel 6.1.0; Kafka version unknown; kstall 9.9.9");
        assert_eq!(lines[4], "## Findings");
        // Each finding: its severity and title, its detail, its fix, its id and where its
        // figures come from; in the order given.
        let lost = crate::present::words::words(&report(None, false).summary.findings[0]);
        assert_eq!(
            &lines[6..14],
            [
                format!("### WARNING: {}", lost.title).as_str(),
                "",
                lost.detail.as_str(),
                "",
                format!("**Recommendation:** {}", lost.fix).as_str(),
                "",
                "_`records_lost`; figures from `summary.lost.records`_",
                "",
            ]
        );
        assert_eq!(lines[14], "### INFO: Some connections are TLS: no request view for them");
        assert!(lines[16].starts_with("2 connections of the network threads carried TLS records"), "{}", lines[16]);
        let at = |heading: &str| md.find(heading).unwrap_or_else(|| panic!("no {heading:?} in\n{md}"));
        assert!(at("## Findings") < at("## Measurements") && at("## Measurements") < at("## Context"));
        // A table cell's `|` is escaped; a table without rows says so.
        let readers = &md[at("### Page-cache misses by client.id served (cold readers)")..];
        let table: Vec<&str> = readers.lines().skip(2).take(3).collect();
        assert_eq!(table, ["| name | misses | miss time | bytes | pages added |", "| --- | ---: | ---: | ---: | ---: |", "| odd\\|client | 3 | 24.0ms | 1.0MiB | 256 |"]);
        let partitions = &md[at("### Page-cache misses by topic-partition (or file)")..];
        assert_eq!(partitions.lines().nth(2), Some("(none)"));
        assert!(md.contains("\n- broker exited during the trace: no\n"), "{md}");
        assert!(md.ends_with("- command line:\n\n```\njava kafka.Kafka server.properties\n```\n"), "{md}");
    }

    #[test]
    fn an_open_ended_trace_and_an_exited_broker_say_so() {
        let md = markdown(&report(None, true));
        assert!(md.lines().nth(2).is_some_and(|l| l.starts_with("10.0s traced (until interrupted), ")), "{md}");
        assert!(md.contains("\n- broker exited during the trace: yes\n"), "{md}");
        assert!(md.contains("\n- broker config: not read\n"), "{md}");
    }
}
