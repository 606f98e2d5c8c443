//! The report: a summary with the context it was recorded in, findings first. Written as
//! HTML, Markdown or JSON by the presenters (JSON schema: docs/report.schema.json, generated
//! from these types).
use serde::{Deserialize, Serialize};

use crate::{
    summary::Summary,
    timeline::Timeline,
};

/// Bumped on any change that can break a consumer of the JSON report.
pub const SCHEMA_VERSION: u32 = 2;

/// What the session learnt of the host and the broker besides the trace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub hostname: String,
    pub kernel: String,
    pub kafka_version: Option<String>,
}

/// Where and how the report was recorded: only what the summary does not say.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Context {
    pub kstall_version: &'static str,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub host: String,
    pub kernel: String,
    /// From the broker jar (kafka_<scala>-<version>.jar) it runs, when found.
    pub kafka_version: Option<String>,
    /// The duration asked for; null: until interrupted.
    pub requested_seconds: Option<f64>,
    /// The broker exited before the requested duration was over.
    pub broker_exited: bool,
}

/// `kstall report --out FILE.json`. Fields may be added within a version; removing or changing
/// one bumps schema_version.
///
/// Version 2 keeps each fact once, in `summary`, under the summary's name; `context` keeps only
/// what the summary lacks. From version 1:
/// - `context.broker` is `summary.broker`; `context.traced_seconds` is `summary.elapsed_seconds`;
///   `context.stall_threshold_ns` is `summary.stalls.threshold_ns`; `context.listeners` is
///   `summary.listeners`; `context.lost` is `summary.lost`;
/// - `context.broker_config` is `summary.broker_config` (new in the summary);
/// - `context.thread_names_from` is `summary.thread_names`;
/// - `context.thread_roles` is gone: it is `summary.threads` grouped by `role`, named by
///   `jvm_name`, else `comm`;
/// - `context.syscall_hooks`, `context.evidence` and `context.attach_ms` are
///   `summary.probes.syscall_hooks`, `.evidence` and `.attach_ms`; `context.probes_attached` is
///   the length of `summary.probes.attached`; `context.probes_unavailable` is
///   `summary.probes.unavailable`;
/// - hooks are objects, not strings: `summary.probes.attached[]` is `{mechanism, target,
///   program}`, `summary.probes.unavailable[]` and `summary.probes.evidence[].hooks[]` are
///   `{mechanism, target}` (mechanism: tracepoint, raw_tracepoint, kprobe, fentry, fexit;
///   target: a tracepoint's `category:event`, a raw tracepoint's name, a kernel function);
/// - findings are data, once: the top-level `findings` (a copy of `summary.findings`) is gone,
///   and a finding is `{id, severity, figures, sources}`, where `figures` holds its typed
///   numbers and names and `sources` the report path of each; `title`, `detail` and `fix` are
///   gone from the JSON (the Markdown, HTML and terminal views write them from the figures);
/// - a stall's `syscall` and `cache` are null, not "?", for a value this build does not know.
/// - `summary.lost.events` is `summary.lost.records` (what it counts), and the finding
///   `events_lost` is `records_lost` (as is the metric `kstall_events_lost_total`, now
///   `kstall_records_lost_total`).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[schemars(title = "kstall report")]
pub struct Report {
    #[schemars(extend("const" = 2))]
    pub schema_version: u32,
    pub context: Context,
    /// The same object `kstall watch --format json` prints.
    pub summary: Summary,
    pub timeline: Timeline,
}

impl Report {
    /// `requested_seconds`: the duration asked for (None: until interrupted).
    pub fn new(summary: Summary, timeline: Timeline, host: Host, broker_exited: bool, requested_seconds: Option<f64>) -> Report {
        let context = Context {
            kstall_version: env!("CARGO_PKG_VERSION"),
            generated_at: host.generated_at,
            host: host.hostname,
            kernel: host.kernel,
            kafka_version: host.kafka_version,
            requested_seconds,
            broker_exited,
        };
        Report { schema_version: SCHEMA_VERSION, context, summary, timeline }
    }
}

/// The JSON Schema of the report, as committed in docs/report.schema.json.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Report);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    /// The committed schema is generated from the types: a field added, renamed or retyped
    /// without regenerating it fails here. `KSTALL_BLESS=1 cargo test -p kstall-core` rewrites it.
    #[test]
    fn committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/report.schema.json");
        let generated = super::json_schema();
        if std::env::var_os("KSTALL_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(committed == generated, "{path} is stale: run `KSTALL_BLESS=1 cargo test -p kstall-core` and commit it");
    }

    /// Each fact once: no key of the context is also one of the summary's, and the probes'
    /// hooks are typed objects.
    #[test]
    fn context_repeats_nothing_of_the_summary() {
        use crate::kernel::{Hook, Mechanism, Probe};
        let mut summary = crate::summary::empty_summary();
        summary.probes.attached.push(Probe { hook: Hook::new(Mechanism::RawTracepoint, "sys_exit"), program: "raw_exit".into() });
        let host = super::Host { generated_at: "2026-01-01T00:00:00Z".into(), hostname: "h".into(), kernel: "6.12".into(), kafka_version: None };
        let report = super::Report::new(summary, crate::timeline::Timeline::default(), host, false, Some(60.0));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema_version"], 2);
        let context: Vec<&String> = json["context"].as_object().unwrap().keys().collect();
        let summary = json["summary"].as_object().unwrap();
        for key in &context {
            assert!(!summary.contains_key(*key), "{key} is in both");
        }
        assert_eq!(json["summary"]["probes"]["attached"][0], serde_json::json!({"mechanism": "raw_tracepoint", "target": "sys_exit", "program": "raw_exit"}));
        assert!(json["summary"].get("broker_config").is_some());
    }
}
