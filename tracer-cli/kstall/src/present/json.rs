//! JSON for scripts: the summary (`kstall watch --format json`, or one line per interval with
//! `--format jsonl`) and the report, whose schema (docs/report.schema.json) is generated from
//! the same types (`kstall_core::report`).
use kstall_core::{report::Report, summary::Summary};

pub fn summary(summary: &Summary) -> String {
    serde_json::to_string_pretty(summary).expect("summary serializes")
}

/// The summary as one compact line (JSON Lines): the same object as [`summary`].
pub fn summary_line(summary: &Summary) -> String {
    serde_json::to_string(summary).expect("summary serializes") + "\n"
}

pub fn report(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("report serializes") + "\n"
}
