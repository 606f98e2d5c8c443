//! JSON for scripts: the summary (`kstall watch --format json`) and the report, whose schema
//! (docs/report.schema.json) is generated from the same types (`kstall_core::report`).
use kstall_core::{report::Report, summary::Summary};

pub fn summary(summary: &Summary) -> String {
    serde_json::to_string_pretty(summary).expect("summary serializes")
}

pub fn report(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("report serializes") + "\n"
}
