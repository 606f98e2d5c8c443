//! kstall against a real Kafka broker (4.x by default, `KSTALL_KAFKA` for 3.9 or 0.9) with real
//! clients: with kcat, a cold read of evicted segments must show page-cache misses on the
//! network thread, a second read of the same data must be all hits, and kstall's sendfile
//! count must match strace's for the same window; with the official Java client (flexible
//! request headers), every Produce is counted and timed as the client timed it.
//! Needs root (eBPF, strace), as CI has.
//!
//! Page cache: 48 MiB produced, the segments dropped from the page cache
//! (`posix_fadvise(DONTNEED)`), then consumed from offset 0 while both kstall and
//! `strace -c -f -e trace=sendfile` watch: sendfile only on network threads, misses with pages
//! added, kstall's sendfile count within 3% of strace's (exact, so far). Then the segments are
//! pinned (`mlock`) and consumed again: every sendfile a hit. The pin is needed because VMs of
//! this kind trim the page cache on their own, so an unpinned re-read can truly miss (kstall
//! reports those).
//!
//! Java client (kafka-clients of the broker's version; KRaft brokers only, so `cargo xtask test`
//! skips it on 0.9): 300 records produced one at a time, each awaited, and read back by a group
//! consumer. kstall counts exactly 300 Produce requests for its client.id, its p50 and p99 are
//! never above the client's own (which also holds the client's send and completion path: 2.6 ms
//! against 4.5 ms at p50 on the test VM), and the consumer's Fetch, FindCoordinator and
//! OffsetFetch are named by its client.id, with no framing error.
use std::process::{Command, Stdio};

use kstall_testbed::{
    kafka::{DemoBroker, KafkaVersion},
    support::{ScratchDir, cache_total, interrupt, kstall_bin, requests_of, spawn_until_ready},
};
use serde_json::Value;

const TOPIC: &str = "cold";

/// What kstall and strace saw during one consumer run.
struct Window {
    summary: Value,
    strace_sendfiles: u64,
}

fn sendfile_rows(summary: &Value) -> Vec<&Value> {
    summary["rows"].as_array().unwrap().iter().filter(|r| r["syscall"] == "sendfile").collect()
}

fn traced_consume(broker: &DemoBroker, expected_messages: u64, dir: &std::path::Path) -> Window {
    let strace_out = dir.join("strace.txt");
    let mut strace_cmd = Command::new("strace");
    strace_cmd.args(["-c", "-f", "-e", "trace=sendfile", "-o"]).arg(&strace_out).args(["-p", &broker.pid().to_string()]);
    let strace = spawn_until_ready(strace_cmd, "attached with").expect("strace");
    let mut kstall_cmd = Command::new(kstall_bin());
    kstall_cmd.args(["watch", "--pid", &broker.pid().to_string(), "--format", "json", "--interval", "200ms"]);
    kstall_cmd.stdout(Stdio::piped());
    let kstall = spawn_until_ready(kstall_cmd, "tracing broker pid").expect("kstall");

    let consumed = broker.consume_all(TOPIC).expect("consume");
    assert_eq!(consumed, expected_messages, "the consumer read the whole topic");

    interrupt(&kstall);
    let out = kstall.wait_with_output().expect("kstall output");
    assert!(out.status.success(), "kstall exit: {:?}", out.status);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("kstall prints JSON");
    interrupt(&strace);
    let mut strace = strace;
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

/// One line per verdict: calls, p50/p99/max in microseconds, pages added, D-state time.
fn describe(rows: &[&Value]) -> String {
    let us = |r: &Value, f: &str| r[f].as_u64().unwrap() as f64 / 1e3;
    rows.iter()
        .map(|r| {
            format!(
                "{} {}: {} calls, p50 {:.1}us p99 {:.1}us max {:.1}us, {} pages added, {:.1}ms blocked",
                r["role"].as_str().unwrap(),
                r["cache"].as_str().unwrap(),
                r["count"],
                us(r, "p50_ns"),
                us(r, "p99_ns"),
                us(r, "max_ns"),
                r["pages_added"],
                us(r, "blocked_ns") / 1e3
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
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

/// A file's pages pinned in the page cache (mmap + mlock) until dropped. Needed because this
/// kind of VM trims the page cache on its own (a cached 64 MiB file loses megabytes a minute
/// with no memory pressure): without the pin a "warm" re-read can truly miss.
struct PinnedInCache {
    addr: *mut libc::c_void,
    len: usize,
}

impl PinnedInCache {
    fn new(path: &std::path::Path) -> Option<PinnedInCache> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        if len == 0 {
            return None;
        }
        // SAFETY: read-only shared mapping of a file we keep open for the call; checked below.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        assert_ne!(addr, libc::MAP_FAILED, "mmap {}", path.display());
        // mlock faults every page in and keeps it resident.
        assert_eq!(unsafe { libc::mlock(addr, len) }, 0, "mlock {}", path.display());
        Some(PinnedInCache { addr, len })
    }
}

impl Drop for PinnedInCache {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new().
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

#[test]
fn cold_read_misses_then_warm_read_hits() {
    let scratch = ScratchDir::new("kstall-it");
    let dir = scratch.0.clone();
    let broker = DemoBroker::start(&dir.join("broker")).expect("start Kafka");
    let message_bytes = 1024;
    let total = 48 << 20;
    broker.produce(TOPIC, total, message_bytes).expect("produce");
    let messages = (total / message_bytes) as u64;
    assert!(broker.evict_from_page_cache(TOPIC).unwrap() >= 1);

    // Cold: the segments are on disk only.
    let cold = traced_consume(&broker, messages, &dir);
    let rows = sendfile_rows(&cold.summary);
    eprintln!("cold sendfile: {}", describe(&rows));
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["role"] == "network"), "sendfile only on network threads: {rows:?}");
    assert!(cache_total(&rows, "miss", "count") > 0, "cold read shows misses");
    assert!(cache_total(&rows, "miss", "pages_added") > 0, "misses brought pages into the page cache");
    assert!(cache_total(&rows, "miss", "bytes") + cache_total(&rows, "hit", "bytes") >= total as u64);
    let names = network_thread_names(&cold.summary);
    // `kafka-network-thread-0-PLAINTEXT-0` (0.9), `data-plane-kafka-network-thread-1-...` (3.x, 4.x).
    assert!(names.iter().any(|n| n.contains("kafka-network-t")), "network thread found: {names:?}");
    assert_counts_agree(&cold);

    // Warm: the same data, read into the page cache and pinned there.
    let segments = broker.segment_files(TOPIC).unwrap();
    let _pinned: Vec<PinnedInCache> = segments.iter().filter_map(|p| PinnedInCache::new(p)).collect();
    let warm = traced_consume(&broker, messages, &dir);
    let rows = sendfile_rows(&warm.summary);
    assert!(rows.iter().all(|r| r["role"] == "network"));
    let (hits, misses) = (cache_total(&rows, "hit", "count"), cache_total(&rows, "miss", "count"));
    eprintln!("warm sendfile: {}", describe(&rows));
    assert!(hits > 10, "warm read is served from the page cache");
    assert_eq!(misses, 0, "nothing to miss on a cached re-read");
    // Every byte of the topic went out by sendfile (payload plus per-message overhead).
    assert!(cache_total(&rows, "hit", "bytes") >= total as u64, "warm sendfile bytes cover the topic");
    assert_counts_agree(&warm);

    // A reader that went away (`kstall report | head`) ends the output quietly, as with other
    // Unix tools: no "Broken pipe" error, no panic, exit 0.
    for args in [&["watch", "--format", "json", "--duration", "1s"][..], &["report", "--duration", "1s"], &["watch", "--duration", "1s"]] {
        let mut child = Command::new(kstall_bin())
            .args(args)
            .args(["--pid", &broker.pid().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kstall");
        drop(child.stdout.take()); // the read end closes before kstall writes
        let out = child.wait_with_output().expect("kstall");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("Broken pipe") && !stderr.contains("panicked"), "{args:?}: {:?} {stderr}", out.status);
    }

    broker.stop();
}

/// The official Java client of the broker's own version (KRaft brokers; Kafka 4.x when the
/// run is for 0.9, which this client no longer speaks to): a synchronous producer sends 300
/// records, each awaited, so 300 Produce requests with flexible headers; a group consumer reads
/// them back. kstall counts every Produce, times them as the client did, and names the
/// consumer's group requests (flexible headers too) by its client.id.
#[test]
fn java_client_requests_are_parsed() {
    let scratch = ScratchDir::new("kstall-java");
    let options = kstall_testbed::kafka::BrokerOptions { version: KafkaVersion::kraft_from_env(), ..Default::default() };
    let broker = DemoBroker::start_with(&scratch.0.join("broker"), options).expect("start Kafka");
    broker.produce("java", 1000, 100).expect("create the topic with 10 records");
    let mut kstall_cmd = Command::new(kstall_bin());
    kstall_cmd.args(["watch", "--pid", &broker.pid().to_string(), "--format", "json", "--interval", "500ms"]);
    kstall_cmd.stdout(Stdio::piped());
    let kstall = spawn_until_ready(kstall_cmd, "tracing broker pid").expect("kstall");

    const RECORDS: u64 = 300;
    let client = |args: &[&str]| -> Value {
        let out = broker.java_client(args).expect("java client").stderr(Stdio::inherit()).output().expect("run java");
        assert!(out.status.success(), "KstallClient {args:?}: {:?}", out.status);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let produced = client(&["produce", &broker.bootstrap(), "java", &RECORDS.to_string(), "java-producer"]);
    let consumed = client(&["consume", &broker.bootstrap(), "java", &(RECORDS + 10).to_string(), "java-consumer"]);
    interrupt(&kstall);
    let out = kstall.wait_with_output().expect("kstall output");
    assert!(out.status.success(), "kstall exit: {:?}", out.status);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("kstall prints JSON");

    assert_eq!(produced["sent"], RECORDS);
    assert_eq!(consumed["consumed"], RECORDS + 10, "the consumer read the topic");
    assert_eq!(requests_of(&summary, "java-producer", "Produce"), RECORDS, "{}", summary["requests"]["clients"]);
    let row = summary["requests"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "java-producer" && c["api"] == "Produce")
        .unwrap();
    // The client's clock holds its own send and completion path (the producer's I/O thread, a
    // future, a GC pause or a JIT compile: 3 of 300 requests make its p99), so only kstall's
    // side of the bound is tight: never slower than the client (plus kstall's histogram
    // resolution, 1% + 20 us). The median also has a loose upper bound (seen: client 3.2-4.6 ms
    // where kstall saw 1.7-2.6 ms; the p99s 15-63 ms against 9-27 ms).
    for (field, theirs) in [("p50_ns", &produced["p50_ns"]), ("p99_ns", &produced["p99_ns"])] {
        let (ours, theirs) = (row["total"][field].as_u64().unwrap(), theirs.as_u64().unwrap());
        eprintln!("Java producer {field}: kstall {:.3} ms, client {:.3} ms", ours as f64 / 1e6, theirs as f64 / 1e6);
        assert!(ours <= theirs + theirs / 100 + 20_000, "{field}: kstall {ours} above the client's {theirs}");
        if field == "p50_ns" {
            assert!(theirs <= 2 * ours + 5_000_000, "{field}: the client's {theirs} far above kstall's {ours}");
        }
    }
    let consumer_apis: Vec<&str> = summary["requests"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["client_id"] == "java-consumer")
        .map(|c| c["api"].as_str().unwrap())
        .collect();
    eprintln!("java-consumer APIs: {consumer_apis:?}");
    for api in ["Fetch", "FindCoordinator", "OffsetFetch"] {
        assert!(consumer_apis.contains(&api), "{api} from the Java consumer: {consumer_apis:?}");
    }
    assert!(requests_of(&summary, "java-consumer", "Fetch") >= 1);
    assert_eq!(summary["protocol"]["framing_errors"], 0, "{}", summary["protocol"]);
    broker.stop();
}
