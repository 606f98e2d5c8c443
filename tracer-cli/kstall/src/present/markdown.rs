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
        out += &format!("| {} |\n", t.header.join(" | "));
        let align: Vec<&str> = (0..t.header.len()).map(|i| if i >= t.numeric_from { "---:" } else { "---" }).collect();
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
        s.lost.events,
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

