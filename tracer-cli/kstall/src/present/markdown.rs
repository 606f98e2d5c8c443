//! The report as Markdown, for tickets and terminals (the default of `kstall report`).
use kstall_core::{listeners, report::Report, units::duration};

use super::table::{config_line, evidence_line, evidence_tables};

/// Markdown for tickets and terminals.
pub fn markdown(report: &Report) -> String {
    let c = &report.context;
    let mut out = format!(
        "# kstall report: Kafka broker pid {} on {}\n\n{} traced ({}), {}; kernel {}; Kafka {}; kstall {}\n\n## Findings\n\n",
        c.broker.pid,
        c.host,
        duration((c.traced_seconds * 1e9) as u64),
        c.requested_seconds.map_or("until interrupted".into(), |r| format!("{r:.0} s requested")),
        c.generated_at,
        c.kernel,
        c.kafka_version.as_deref().unwrap_or("version unknown"),
        c.kstall_version,
    );
    for f in &report.findings {
        out += &format!("### {}: {}\n\n{}\n\n**Recommendation:** {}\n\n", f.severity.label(), f.title, f.detail, f.fix);
    }
    out += "## Evidence\n\n";
    for t in evidence_tables(&report.summary) {
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
    for (role, names) in &c.thread_roles {
        out += &format!("- {} threads ({}): {}\n", role.label(), names.len(), names.join(", "));
    }
    for l in &c.listeners {
        out += &format!("- listener {}\n", listeners::label(l));
    }
    out += &format!("- broker config: {}\n", c.broker_config.as_ref().map_or("not read".into(), config_line));
    for e in &c.evidence {
        out += &format!("- evidence {}\n", evidence_line(e));
    }
    out += &format!(
        "- thread names from: {}\n- syscall hooks: {}\n- probes: {} hooks attached in {:.0} ms; unavailable: {}\n- stall threshold: {}\n- lost: {} request/stall records, {} calls (histogram map full), {} calls (in-flight map full), {} probe runs skipped by the kernel, {} histogram entries unread, {} switch-ins missed (off-CPU time counted from the switch out)\n- broker exited during the trace: {}\n- command line:\n\n```\n{}\n```\n",
        c.thread_names_from.as_str(),
        c.syscall_hooks,
        c.probes_attached,
        c.attach_ms,
        if c.probes_unavailable.is_empty() { "none".into() } else { c.probes_unavailable.join(", ") },
        duration(c.stall_threshold_ns),
        c.lost.events,
        c.lost.histogram_map_full,
        c.lost.in_flight_map_full,
        c.lost.probe_runs_skipped,
        c.lost.histogram_entries_unread,
        c.lost.switch_ins_missed,
        if c.broker_exited { "yes" } else { "no" },
        c.broker.command_line
    );
    out
}

