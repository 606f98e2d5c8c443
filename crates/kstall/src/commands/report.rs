//! `kstall report`: one tracing session, written as a report that explains the broker's
//! latency: findings first, then the evidence, then the context it was recorded in. HTML (one
//! self-contained file with charts), Markdown, or JSON (schema: docs/report.schema.json).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{
    aggregate::{Lost, Summary},
    discovery::{self, Broker},
    findings::{Finding, Severity},
    html,
    listeners::{BrokerConfig, ListenerInfo},
    output::{duration, evidence_tables},
    session::{Ended, Session, SessionOptions},
    timeline::Timeline,
};

/// Bumped on any change that can break a consumer of the JSON report.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Json,
}

impl Format {
    /// From the output file's extension.
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => Ok(Format::Html),
            Some("md" | "markdown") => Ok(Format::Markdown),
            Some("json") => Ok(Format::Json),
            _ => bail!("cannot tell the report format of {}: name it .html, .md or .json", path.display()),
        }
    }
}

pub struct ReportOptions {
    pub session: SessionOptions,
    /// Files to write, format by extension; none: Markdown on stdout.
    pub out: Vec<PathBuf>,
}

/// Where and how the report was recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Context {
    pub kstall_version: &'static str,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub host: String,
    pub kernel: String,
    pub broker: Broker,
    /// From the broker jar (kafka_<scala>-<version>.jar) it runs, when found.
    pub kafka_version: Option<String>,
    pub requested_seconds: Option<f64>,
    pub traced_seconds: f64,
    /// The broker exited before the requested duration was over.
    pub broker_exited: bool,
    pub stall_threshold_ns: u64,
    /// Thread names (JVM name, else comm) per role.
    pub thread_roles: BTreeMap<&'static str, Vec<String>>,
    /// The broker's listeners: name, security protocol, plane, address.
    pub listeners: Vec<ListenerInfo>,
    /// What kstall read from the broker's properties file; null when it could not.
    pub broker_config: Option<BrokerConfig>,
    pub thread_names_from: &'static str,
    pub probes_attached: usize,
    pub probes_unavailable: Vec<String>,
    /// How each kind of optional kernel evidence is gathered here, or why not.
    pub evidence: Vec<crate::attach::EvidenceStatus>,
    pub attach_ms: f64,
    pub lost: Lost,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub context: Context,
    pub findings: Vec<Finding>,
    /// The same object `kstall watch --format json` prints.
    pub summary: Summary,
    pub timeline: Timeline,
}

pub fn run(opts: ReportOptions) -> Result<()> {
    // Check the outputs before tracing for a minute.
    let targets: Vec<(PathBuf, Format)> =
        opts.out.iter().map(|p| Format::of(p).map(|f| (p.clone(), f))).collect::<Result<_>>()?;
    for (path, _) in &targets {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("cannot write {}: no directory {}", path.display(), dir.display());
        }
    }
    let requested = opts.session.duration;
    let session = Session::start(opts.session)?;
    let report = build(session.run(|_| {})?, requested);
    if targets.is_empty() {
        crate::output::print_stdout(&markdown(&report))?;
    }
    for (path, format) in targets {
        let text = match format {
            Format::Html => html::report(&report),
            Format::Markdown => markdown(&report),
            Format::Json => json(&report),
        };
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("kstall: wrote {}", path.display());
    }
    Ok(())
}

pub fn build(ended: Ended, requested: Option<Duration>) -> Report {
    let s = &ended.summary;
    let mut thread_roles: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for t in &s.threads {
        thread_roles.entry(t.role.label()).or_default().push(t.name().to_string());
    }
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
    let context = Context {
        kstall_version: env!("CARGO_PKG_VERSION"),
        generated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        host: read("/proc/sys/kernel/hostname"),
        kernel: crate::attach::kernel_release(),
        kafka_version: discovery::kafka_version(&s.broker),
        broker: s.broker.clone(),
        requested_seconds: requested.map(|d| d.as_secs_f64()),
        traced_seconds: s.elapsed_seconds,
        broker_exited: ended.broker_exited,
        stall_threshold_ns: s.stalls.threshold_ns,
        thread_roles,
        listeners: s.listeners.clone(),
        broker_config: s.broker_config.clone(),
        thread_names_from: s.thread_names,
        probes_attached: s.probes.attached.len(),
        probes_unavailable: s.probes.unavailable.clone(),
        evidence: s.probes.evidence.clone(),
        attach_ms: s.probes.attach_ms,
        lost: s.lost.clone(),
    };
    Report {
        schema_version: SCHEMA_VERSION,
        context,
        findings: s.findings.clone(),
        summary: ended.summary,
        timeline: ended.timeline,
    }
}

pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("report serializes") + "\n"
}

pub fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "INFO",
    }
}

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
        out += &format!("### {}: {}\n\n{}\n\n**Recommendation:** {}\n\n", severity_label(f.severity), f.title, f.detail, f.fix);
    }
    out += "## Evidence\n\n";
    for t in evidence_tables(&report.summary) {
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
    for (role, names) in &c.thread_roles {
        out += &format!("- {role} threads ({}): {}\n", names.len(), names.join(", "));
    }
    for l in &c.listeners {
        out += &format!("- listener {}\n", crate::listeners::label(l));
    }
    out += &format!("- broker config: {}\n", c.broker_config.as_ref().map_or("not read".into(), crate::output::config_line));
    for e in &c.evidence {
        out += &format!("- evidence {}\n", crate::output::evidence_line(e));
    }
    out += &format!(
        "- thread names from: {}\n- probes: {} hooks attached in {:.0} ms; unavailable: {}\n- stall threshold: {}\n- lost: {} request/stall records, {} calls (histogram map full), {} calls (in-flight map full)\n- broker exited during the trace: {}\n- command line:\n\n```\n{}\n```\n",
        c.thread_names_from,
        c.probes_attached,
        c.attach_ms,
        if c.probes_unavailable.is_empty() { "none".into() } else { c.probes_unavailable.join(", ") },
        duration(c.stall_threshold_ns),
        c.lost.events,
        c.lost.histogram_map_full,
        c.lost.in_flight_map_full,
        if c.broker_exited { "yes" } else { "no" },
        c.broker.command_line
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::of(Path::new("r.html")).unwrap(), Format::Html);
        assert_eq!(Format::of(Path::new("/tmp/r.md")).unwrap(), Format::Markdown);
        assert_eq!(Format::of(Path::new("r.json")).unwrap(), Format::Json);
        assert!(Format::of(Path::new("r.pdf")).unwrap_err().to_string().contains(".html, .md or .json"));
    }
}
