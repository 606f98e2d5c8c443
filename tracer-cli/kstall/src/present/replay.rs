//! A real session, recorded (`KSTALL_RECORD`, see `kstall_core::recording`), replayed through
//! the core and presented as JSON and Markdown, against golden files: the whole path from
//! kernel records to findings, without root. The trace (tests/data/session.jsonl): `cargo
//! xtask demo` on Kafka 4.4 with its log on the slow disk (reads take 8 ms): a synchronous
//! producer, a tail consumer and a cold reader (`analytics-backfill`).
//!
//! Re-record: `KSTALL_RECORD=$PWD/tracer-cli/kstall/tests/data/session.jsonl cargo xtask demo 15`
//! (root). Re-bless after any change of the core or the presenters that changes the report:
//! `KSTALL_BLESS=1 cargo test -p kstall replay`, then review the diff and commit it.
use kstall_core::{
    recording::{self, Replayed},
    report::{Host, Report},
};

use super::{json, markdown::markdown};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
const BLESS: &str = "KSTALL_BLESS=1 cargo test -p kstall replay";

fn replayed() -> Replayed {
    let path = format!("{DATA}/session.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    recording::replay(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The replayed report, with what the recording host and this build put in it fixed, so the
/// goldens change only with what the core and the presenters make of the trace.
fn report(replayed: Replayed) -> Report {
    let replayed = Replayed {
        host: Host {
            generated_at: "2026-01-01T00:00:00Z".into(),
            hostname: "recorded-host".into(),
            kernel: replayed.host.kernel.clone(),
            kafka_version: replayed.host.kafka_version.clone(),
        },
        ..replayed
    };
    let mut report = replayed.report();
    report.context.kstall_version = "0.0.0-replay";
    report
}

/// `text` equals the committed `name`; with KSTALL_BLESS set, `name` is rewritten first.
fn golden(name: &str, text: &str) {
    let path = format!("{DATA}/{name}");
    if std::env::var_os("KSTALL_BLESS").is_some() {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let first = committed.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(committed.lines().count().min(text.lines().count()));
        panic!(
            "{path} differs from the replay from line {}:\n  committed: {:?}\n  replayed:  {:?}\nIf the change is intended, run `{BLESS}` and commit the goldens.",
            first + 1,
            committed.lines().nth(first).unwrap_or("(end)"),
            text.lines().nth(first).unwrap_or("(end)"),
        );
    }
}

#[test]
fn recorded_session_replays_to_the_golden_report() {
    let replayed = replayed();
    assert!(replayed.refreshes >= 10 && replayed.events > 1000, "{} refreshes, {} records", replayed.refreshes, replayed.events);
    let report = report(replayed);
    golden("report.json", &json::report(&report));
    golden("report.md", &markdown(&report));
}

/// Whatever the goldens say, the trace holds what the demo did: the cold reader's misses
/// stalled the synchronous producer's Produce requests.
#[test]
fn replayed_report_blames_the_cold_reader() {
    let replayed = replayed();
    let events = replayed.events as u64;
    let s = &report(replayed).summary;
    let p = &s.stalls.produce;
    assert!(p.requests > 500 && p.stalled_by_miss > 0, "{} Produce, {} stalled by misses", p.requests, p.stalled_by_miss);
    assert_eq!(s.stalls.cold_readers.first().map(|r| r.name.as_str()), Some("analytics-backfill"));
    assert!(s.stalls.cold_partitions.first().is_some_and(|c| c.name.starts_with("cold-")), "{:?}", s.stalls.cold_partitions);
    let ids: Vec<&str> = s.findings.iter().map(|f| f.id.as_str()).collect();
    assert!(ids.contains(&"produce_stalled_by_page_cache_miss"), "{ids:?}");
    assert!(ids.contains(&"network_thread_blocked"), "{ids:?}");
    assert!(s.protocol.requests_answered + s.stalls.stalls <= events);
}

/// Two replays, each with its own hash maps' seeds, present the same report: no hash map's
/// iteration order reaches the output.
#[test]
fn replay_is_deterministic() {
    let (a, b) = (report(replayed()), report(replayed()));
    assert_eq!(json::report(&a), json::report(&b));
    assert_eq!(markdown(&a), markdown(&b));
}
