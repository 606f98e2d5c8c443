//! A real TLS listener: a KRaft broker (4.x, or the 3.9 `KSTALL_KAFKA` names) with an SSL
//! listener beside PLAINTEXT (a key made with the JDK's keytool), its log on the slow disk, and
//! a cold topic read through TLS by kcat (`security.protocol=ssl`, certificate verified). A TLS
//! broker cannot sendfile (the bytes must be encrypted in the JVM): its SSL network thread reads
//! the segments with pread64. kstall must classify those reads as page-cache misses, attribute
//! the stalls to that thread, its listener and the file, say plainly that it has no per-request
//! view inside TLS (and not guess what the stalls delayed), while a synchronous producer on the
//! PLAINTEXT listener, served by another network thread, is counted exactly and not blamed on
//! the SSL thread's misses. Needs root (eBPF, loop devices, FUSE), as CI has.
//!
//! In detail: kcat reads a 24 MiB evicted topic through TLS while the protocol-level producer
//! runs on PLAINTEXT. The report's context lists SSL as an encrypted data-plane listener and
//! CONTROLLER as the controller plane; the SSL network thread read the topic with `pread64`,
//! never sendfile, with misses that added pages; its stalls are page-cache misses of `cold-0`,
//! on a thread named `...-SSL-...`, with what they delayed unknown (`delayed_produce_known`
//! false; "unknown inside TLS" in the Markdown); the TLS reader's client.id appears nowhere; the
//! `tls_listener` finding names SSL and says there is no per-request view; every PLAINTEXT
//! Produce is counted on its listener and none is blamed on the SSL thread's misses.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kstall_testbed::{
    kafka::{BrokerOptions, DemoBroker, KafkaVersion},
    slow_disk::SlowDisk,
    support::{ScratchDir, cache_total, interrupt, kstall_bin, requests_of, spawn_until_ready},
};
use serde_json::Value;

const COLD: &str = "cold";
const HOT: &str = "hot";
const PRODUCER: &str = "plaintext-producer";
const TLS_READER: &str = "tls-cold-reader";

fn rows<'a>(summary: &'a Value, syscall: &str, listener: &str) -> Vec<&'a Value> {
    summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["syscall"] == syscall && r["role"] == "network" && r["listener"] == listener)
        .collect()
}

#[test]
fn cold_reads_through_tls_are_misses_attributed_by_thread_and_file() {
    let scratch = ScratchDir::new("kstall-tls");
    let dir = scratch.0.clone();
    let version = KafkaVersion::kraft_from_env();
    let disk = SlowDisk::create(&dir.join("disk"), 512, Duration::from_millis(8)).expect("slow disk");
    let options = BrokerOptions { version, log_dir: Some(disk.mount_point.join("kafka-logs")), tls: true };
    let broker = DemoBroker::start_with(&dir.join("broker"), options).expect("start Kafka with a TLS listener");
    let cold_bytes = 24 << 20;
    broker.produce(COLD, cold_bytes, 1024).expect("produce the cold topic");
    broker.produce(HOT, 1024, 100).expect("create the hot topic");
    assert!(broker.evict_from_page_cache(COLD).unwrap() >= 1);

    let report = dir.join("tls.json");
    let markdown = dir.join("tls.md");
    let mut cmd = Command::new(kstall_bin());
    cmd.args(["report", "--pid", &broker.pid().to_string(), "--duration", "600s", "--out"]).arg(&report).arg("--out").arg(&markdown);
    cmd.stdout(Stdio::null());
    let kstall = spawn_until_ready(cmd, "tracing broker pid").expect("kstall attaches");

    let mut reader = broker
        .kcat_tls()
        .expect("kcat over TLS")
        .args(["-C", "-t", COLD, "-o", "beginning", "-e", "-q", "-f", "%o\n", "-X", &format!("client.id={TLS_READER}")])
        .stdout(std::fs::File::create(dir.join("offsets.txt")).unwrap())
        .spawn()
        .expect("kcat");
    let mut producer = broker.sync_producer(PRODUCER).expect("connect");
    let mut produced = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while reader.try_wait().expect("kcat").is_none() {
        assert!(Instant::now() < deadline, "the TLS read did not finish in 120 s");
        producer.produce(HOT, &[b'p'; 100]).expect("produce");
        produced += 1;
    }
    let status = reader.wait().expect("kcat");
    assert!(status.success(), "kcat over TLS: {status:?}");
    let consumed = std::fs::read(dir.join("offsets.txt")).unwrap().iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(consumed, (cold_bytes / 1024) as u64, "the TLS consumer read the whole topic");
    interrupt(&kstall);
    let status = kstall.wait_with_output().expect("kstall").status;
    assert!(status.success(), "kstall report: {status:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("JSON");
    let summary = &report["summary"];

    // The SSL listener is known as TLS from the broker's config and its threads' names.
    let ssl = report["summary"]["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "SSL").expect("SSL listener in the context");
    assert_eq!((&ssl["security_protocol"], &ssl["encrypted"], &ssl["plane"]), (&"SSL".into(), &true.into(), &"data".into()));
    let controller = report["summary"]["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "CONTROLLER").expect("CONTROLLER listener");
    assert_eq!(controller["plane"], "controller");

    // Its network thread read the cold segments with pread64, no sendfile, and missed.
    let pread = rows(summary, "pread64", "SSL");
    let (misses, hits) = (cache_total(&pread, "miss", "count"), cache_total(&pread, "hit", "count"));
    eprintln!("SSL listener pread64: {misses} misses ({} pages added), {hits} hits", cache_total(&pread, "miss", "pages_added"));
    assert!(misses > 0 && cache_total(&pread, "miss", "pages_added") > 0, "cold reads through TLS are misses: {pread:?}");
    assert!(cache_total(&pread, "miss", "bytes") + cache_total(&pread, "hit", "bytes") >= cold_bytes as u64, "pread64 moved the topic");
    assert!(rows(summary, "sendfile", "SSL").is_empty(), "a TLS listener cannot sendfile");

    // Stalls: on the SSL thread, the file named; what they delayed is unknown, not zero.
    let stalls = &summary["stalls"];
    let ssl_stalls: Vec<&Value> = stalls["worst"].as_array().unwrap().iter().filter(|s| s["listener"] == "SSL").collect();
    assert!(!ssl_stalls.is_empty(), "stalls on the SSL thread: {}", stalls["worst"]);
    for s in &ssl_stalls {
        // Other stalls happen there too, and are reported as they are: misses of other files
        // (the JVM loads its TLS classes from the JDK's `lib/modules` on that thread at the
        // first handshake) and a hit that lost its CPU for 12 ms (off_cpu), both seen in CI.
        assert!(s["topic_partition"].is_null() || s["topic_partition"] == "cold-0", "{s}");
        assert_eq!(s["delayed_produce_known"], false, "{s}");
        let thread = summary["threads"].as_array().unwrap().iter().find(|t| t["tid"] == s["tid"]).expect("stall thread known");
        assert_eq!(thread["role"], "network");
        assert!(thread["jvm_name"].as_str().unwrap().contains("-SSL-"), "{thread}");
    }
    let segment_stalls: Vec<&&Value> =
        ssl_stalls.iter().filter(|s| s["topic_partition"] == "cold-0" && s["cause"] == "page_cache_miss").collect();
    assert!(!segment_stalls.is_empty(), "segment misses among the SSL thread's longest stalls: {ssl_stalls:?}");
    assert!(segment_stalls.iter().all(|s| s["syscall"] == "pread64" && s["segment"].as_str().is_some_and(|f| f.ends_with(".log"))), "{segment_stalls:?}");
    assert_eq!(stalls["cold_partitions"][0]["name"], "cold-0");
    eprintln!("SSL stalls: {} shown of {}", ssl_stalls.len(), stalls["by_cause"]);

    // No request view inside TLS: the TLS reader's client.id is nowhere; the finding says why.
    let clients: Vec<&str> = summary["requests"]["clients"].as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
    assert!(!clients.contains(&TLS_READER), "{clients:?}");
    assert!(stalls["cold_readers"].as_array().unwrap().iter().all(|r| r["name"] != TLS_READER));
    let tls = summary["findings"].as_array().unwrap().iter().find(|f| f["id"] == "tls_listener").expect("tls_listener finding");
    eprintln!("tls finding: {}", tls["figures"]);
    assert_eq!(tls["figures"]["listeners"][0]["name"], "SSL", "names the listener: {}", tls["figures"]);

    // The PLAINTEXT producer, on another network thread: every request counted, none blamed on
    // the SSL thread's misses.
    assert_eq!(requests_of(summary, PRODUCER, "Produce"), produced);
    let plaintext = summary["requests"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == PRODUCER && c["api"] == "Produce")
        .unwrap();
    assert_eq!(plaintext["listener"], "PLAINTEXT");
    eprintln!("PLAINTEXT Produce: {produced} sent, attribution {}", stalls["produce"]);
    assert_eq!(stalls["produce"]["stalled_by_miss"], 0, "the SSL thread's misses stall no PLAINTEXT Produce");

    let md = std::fs::read_to_string(&markdown).unwrap();
    assert!(md.contains("unknown inside TLS"), "the longest-stalls table says what it cannot know");
    broker.stop();
    drop(disk);
}
