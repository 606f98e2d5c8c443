//! kstall against a real Kafka 0.9.0.1 broker with real clients (kcat): a cold read of evicted
//! segments must show page-cache misses on the network thread, a second read of the same data
//! must be all hits, and kstall's sendfile count must match strace's for the same window.
//! Needs root (eBPF, strace), as CI has.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;
use xtask::kafka::DemoBroker;

const KSTALL: &str = env!("CARGO_BIN_EXE_kstall");
const TOPIC: &str = "cold";

/// Starts a long-running tracer and returns once it reports `ready` on stderr.
fn start(mut cmd: Command, ready: &str) -> Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn tracer");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let mut said = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !said && line.contains(&ready) {
                said = tx.send(()).is_ok();
            } else if !line.contains("attached") {
                eprintln!("{line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("tracer did not get ready within 60 s");
    child
}

fn interrupt(child: &mut Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// What kstall and strace saw during one consumer run.
struct Window {
    summary: Value,
    strace_sendfiles: u64,
}

fn sendfile_rows(summary: &Value) -> Vec<&Value> {
    summary["rows"].as_array().unwrap().iter().filter(|r| r["syscall"] == "sendfile").collect()
}

fn sum(rows: &[&Value], cache: &str, field: &str) -> u64 {
    rows.iter().filter(|r| r["cache"] == cache).map(|r| r[field].as_u64().unwrap()).sum()
}

fn traced_consume(broker: &DemoBroker, expected_messages: u64, dir: &std::path::Path) -> Window {
    let strace_out = dir.join("strace.txt");
    let mut strace_cmd = Command::new("strace");
    strace_cmd.args(["-c", "-f", "-e", "trace=sendfile", "-o"]).arg(&strace_out).args(["-p", &broker.pid().to_string()]);
    let mut strace = start(strace_cmd, "attached with");
    let mut kstall_cmd = Command::new(KSTALL);
    kstall_cmd.args(["watch", "--pid", &broker.pid().to_string(), "--format", "json", "--interval", "200ms"]);
    kstall_cmd.stdout(Stdio::piped());
    let mut kstall = start(kstall_cmd, "tracing broker pid");

    let consumed = broker.consume_all(TOPIC).expect("consume");
    assert_eq!(consumed, expected_messages, "the consumer read the whole topic");

    interrupt(&mut kstall);
    let out = kstall.wait_with_output().expect("kstall output");
    assert!(out.status.success(), "kstall exit: {:?}", out.status);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("kstall prints JSON");
    interrupt(&mut strace);
    strace.wait().unwrap();
    let report = std::fs::read_to_string(&strace_out).unwrap();
    // `% time  seconds  usecs/call  calls  [errors]  syscall`
    let strace_sendfiles = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.last() == Some(&"sendfile"))
        .map(|w| w[3].parse().unwrap())
        .unwrap_or(0);
    eprintln!("strace -c:\n{report}");
    Window { summary, strace_sendfiles }
}

fn assert_counts_agree(w: &Window) {
    let rows = sendfile_rows(&w.summary);
    let kstall_count: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let diff = (kstall_count as f64 - w.strace_sendfiles as f64).abs();
    eprintln!("sendfile calls: kstall {kstall_count}, strace {}", w.strace_sendfiles);
    assert!(w.strace_sendfiles > 10, "strace saw the Fetch sendfiles");
    assert!(diff <= 0.03 * w.strace_sendfiles as f64, "kstall {kstall_count} vs strace {}", w.strace_sendfiles);
}

fn network_thread_names(summary: &Value) -> Vec<String> {
    summary["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["role"] == "network")
        .map(|t| t["jvm_name"].as_str().or(t["comm"].as_str()).unwrap().to_string())
        .collect()
}

/// A scratch directory removed even when the test fails.
struct ScratchDir(std::path::PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn cold_read_misses_then_warm_read_hits() {
    let scratch = ScratchDir(std::env::temp_dir().join(format!("kstall-it-{}", std::process::id())));
    let dir = scratch.0.clone();
    let broker = DemoBroker::start(&dir.join("broker")).expect("start Kafka 0.9 broker");
    let message_bytes = 1024;
    let total = 48 << 20;
    broker.produce(TOPIC, total, message_bytes).expect("produce");
    let messages = (total / message_bytes) as u64;
    assert!(broker.evict_from_page_cache(TOPIC).unwrap() >= 1);

    // Cold: the segments are on disk only.
    let cold = traced_consume(&broker, messages, &dir);
    let rows = sendfile_rows(&cold.summary);
    eprintln!("cold sendfile rows: {}", serde_json::to_string(&rows).unwrap().chars().take(2000).collect::<String>());
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["role"] == "network"), "sendfile only on network threads: {rows:?}");
    assert!(sum(&rows, "miss", "count") > 0, "cold read shows misses");
    assert!(sum(&rows, "miss", "pages_added") > 0, "misses brought pages into the page cache");
    assert!(sum(&rows, "miss", "bytes") + sum(&rows, "hit", "bytes") >= total as u64);
    let names = network_thread_names(&cold.summary);
    assert!(names.iter().any(|n| n.starts_with("kafka-network-t")), "network thread found: {names:?}");
    assert_counts_agree(&cold);

    // Warm: the same data, now cached by the first read.
    let warm = traced_consume(&broker, messages, &dir);
    let rows = sendfile_rows(&warm.summary);
    assert!(rows.iter().all(|r| r["role"] == "network"));
    let (hits, misses) = (sum(&rows, "hit", "count"), sum(&rows, "miss", "count"));
    eprintln!("warm sendfile: {hits} hits, {misses} misses: {}", serde_json::to_string(&rows).unwrap());
    assert!(hits > 10, "warm read is served from the page cache");
    assert_eq!(misses, 0, "nothing to miss on a cached re-read");
    // Every byte of the topic went out by sendfile (payload plus per-message overhead).
    assert!(sum(&rows, "hit", "bytes") >= total as u64, "warm sendfile bytes cover the topic");
    assert_counts_agree(&warm);

    broker.stop();
}
