//! The report: a summary with the context it was recorded in, findings first. Written as
//! HTML, Markdown or JSON by the presenters (JSON schema: docs/report.schema.json, generated
//! from these types).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    broker::Broker,
    kernel::{EvidenceStatus, SyscallHookStatus},
    listeners::{BrokerConfig, ListenerInfo},
    roles::Role,
    summary::{Finding, Lost, Summary, ThreadNames},
    timeline::Timeline,
};

/// Bumped on any change that can break a consumer of the JSON report.
pub const SCHEMA_VERSION: u32 = 1;

/// What the session learnt of the host and the broker besides the trace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub hostname: String,
    pub kernel: String,
    pub kafka_version: Option<String>,
}

/// Where and how the report was recorded.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
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
    pub thread_roles: BTreeMap<Role, Vec<String>>,
    /// The broker's listeners: name, security protocol, plane, address.
    pub listeners: Vec<ListenerInfo>,
    /// What kstall read from the broker's properties file; null when it could not.
    pub broker_config: Option<BrokerConfig>,
    pub thread_names_from: ThreadNames,
    /// How the traced syscalls are hooked here, and why not better.
    pub syscall_hooks: SyscallHookStatus,
    pub probes_attached: usize,
    pub probes_unavailable: Vec<String>,
    /// How each kind of optional kernel evidence is gathered here, or why not.
    pub evidence: Vec<EvidenceStatus>,
    pub attach_ms: f64,
    pub lost: Lost,
}

/// `kstall report --out FILE.json`. Version 1: fields may be added within a version;
/// removing or changing one bumps schema_version.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[schemars(title = "kstall report")]
pub struct Report {
    #[schemars(extend("const" = 1))]
    pub schema_version: u32,
    pub context: Context,
    pub findings: Vec<Finding>,
    /// The same object `kstall watch --format json` prints.
    pub summary: Summary,
    pub timeline: Timeline,
}

impl Report {
    /// `requested`: the duration asked for (None: until interrupted).
    pub fn new(summary: Summary, timeline: Timeline, host: Host, broker_exited: bool, requested_seconds: Option<f64>) -> Report {
        let s = &summary;
        let mut thread_roles: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        for t in &s.threads {
            thread_roles.entry(t.role).or_default().push(t.name().to_string());
        }
        let context = Context {
            kstall_version: env!("CARGO_PKG_VERSION"),
            generated_at: host.generated_at,
            host: host.hostname,
            kernel: host.kernel,
            kafka_version: host.kafka_version,
            broker: s.broker.clone(),
            requested_seconds,
            traced_seconds: s.elapsed_seconds,
            broker_exited,
            stall_threshold_ns: s.stalls.threshold_ns,
            thread_roles,
            listeners: s.listeners.clone(),
            broker_config: s.broker_config.clone(),
            thread_names_from: s.thread_names,
            syscall_hooks: s.probes.syscall_hooks.clone(),
            probes_attached: s.probes.attached.len(),
            probes_unavailable: s.probes.unavailable.clone(),
            evidence: s.probes.evidence.clone(),
            attach_ms: s.probes.attach_ms,
            lost: s.lost.clone(),
        };
        Report { schema_version: SCHEMA_VERSION, context, findings: summary.findings.clone(), summary, timeline }
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
}
