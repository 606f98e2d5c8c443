//! `kstall export` scraped by a real Prometheus while a real Kafka broker (4.x by default,
//! `KSTALL_KAFKA` for 0.9) serves load: the histograms and counters move as the workload says,
//! the broker restarts under a new pid and kstall follows it, hostile and concurrent requests
//! do not hurt the endpoint, the shipped Grafana dashboard's queries parse and name metrics that exist, the systemd unit verifies
//! and its command line works, and SIGTERM ends it cleanly. Needs root, as CI has.
//!
//! Prometheus (the Debian package) scrapes every second while the broker takes 1500 synchronous
//! Produce requests and a consumer reads them: the Produce count per client is exactly 1500,
//! `+Inf` equals the count, the sendfile count moved, `histogram_quantile` gives a sane p50;
//! `promtool check metrics` passes on the classic format and OpenMetrics ends in `# EOF`.
//! Garbage, a bad HTTP version, binary bytes and a 1 MiB header get a 4xx or a closed
//! connection, 16 scrapers x 10 concurrent scrapes all get 200, and it still serves after.
//! `systemd-analyze verify` passes on the unit (`deploy/`) without a warning, and the unit's
//! command line with `--once` scrapes the broker. Then the broker is stopped
//! (`kstall_target_up` 0) and a new one started: `kstall_attaches_total` 2, the new pid, and its
//! 300 Produce requests counted; SIGTERM ends kstall with status 0.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use kstall_testbed::{
    kafka::DemoBroker,
    support::{Prometheus, ScratchDir, free_port, http_get, kstall_bin, spawn_until_ready, terminate},
};
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");

fn produce(broker: &DemoBroker, n: usize) {
    let mut producer = broker.sync_producer("metrics-producer").expect("connect");
    for _ in 0..n {
        producer.produce("hot", &[b'm'; 100]).expect("produce");
    }
}

/// Names a query can use for a classic-format scrape: every sample name, and every family the
/// exporter declares (a family can be empty: no page-cache miss yet) with its histogram series.
fn exported_names(scrape: &str) -> Vec<String> {
    let mut names: Vec<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(String::from))
        .collect();
    for declared in scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = declared.split_once(' ').unwrap();
        if kind == "histogram" {
            names.extend(["_bucket", "_count", "_sum"].map(|suffix| format!("{name}{suffix}")));
        } else {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn prometheus_scrapes_follow_the_workload_and_broker_restarts() {
    let scratch = ScratchDir::new("kstall-export");
    let dir = scratch.0.clone();
    let broker = DemoBroker::start(&dir.join("broker1")).expect("start Kafka");
    broker.produce("hot", 1024, 100).expect("create the topic");

    let port = free_port();
    let mut cmd = Command::new(kstall_bin());
    cmd.args(["export", "--auto", "--listen", &format!("127.0.0.1:{port}"), "--interval", "500ms"]);
    cmd.stdout(Stdio::null());
    let mut exporter = spawn_until_ready(cmd, "attached to broker pid").expect("kstall export attaches");
    let prometheus = Prometheus::start(&dir.join("prometheus"), port);

    // The workload: 1500 synchronous Produce requests, then a consumer reading the topic.
    produce(&broker, 1500);
    assert_eq!(broker.consume_all("hot").unwrap() as usize, 1500 + 1024 / 100 + 1);
    let produce_count = r#"kstall_request_duration_seconds_count{api="Produce",client_id="metrics-producer"}"#;
    prometheus.wait_for(produce_count, "every Produce counted", |v| v == 1500.0);
    prometheus.wait_for(r#"sum(kstall_syscall_duration_seconds_count{role="network",syscall="sendfile"})"#, "consumer's sendfile", |v| v >= 1.0);
    prometheus.wait_for("kstall_produce_requests_total", "Produce counter", |v| v == 1500.0);
    let p50 = prometheus.wait_for(
        r#"histogram_quantile(0.5, sum by (le) (kstall_request_duration_seconds_bucket{api="Produce"}))"#,
        "Produce p50 from the histogram",
        |v| v > 0.0,
    );
    assert!(p50 < 0.1, "loopback Produce p50 {p50} s");
    // Cumulative buckets: +Inf equals the count.
    let inf = prometheus.value(r#"kstall_request_duration_seconds_bucket{api="Produce",client_id="metrics-producer",le="+Inf"}"#);
    assert_eq!(inf, Some(1500.0));
    assert_eq!(prometheus.value(r#"up{job="kstall"}"#), Some(1.0));

    // The endpoint: both formats, hostile and concurrent requests.
    let (status, classic) = http_get(port, "/metrics", None);
    assert_eq!(status, 200);
    let lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(classic.as_bytes())?;
            c.wait_with_output()
        })
        .expect("promtool");
    assert!(lint.status.success(), "promtool check metrics: {}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    let (_, openmetrics) = http_get(port, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
    assert!(openmetrics.trim_end().ends_with("# EOF") && !classic.contains("# EOF"));
    for hostile in [&b"GARBAGE\r\n\r\n"[..], b"GET /metrics HTTP/9.9\r\n\r\n", &[0u8, 1, 2, 255, 254, 13, 10, 13, 10][..]] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(hostile);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).to_string();
        assert!(answer.is_empty() || head.contains(" 4") || head.contains(" 5"), "hostile request answered {head:?}");
    }
    let huge_header = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = s.write_all(huge_header.as_bytes());
    drop(s);
    assert_eq!(http_get(port, "/nope", None).0, 404);
    let scrapers: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || (0..10).map(|_| http_get(port, "/metrics", None).0).collect::<Vec<u16>>()))
        .collect();
    for s in scrapers {
        assert!(s.join().unwrap().iter().all(|&code| code == 200), "concurrent scrapes all answered");
    }
    assert_eq!(http_get(port, "/metrics", None).0, 200, "still serving after all that");

    // The dashboard: every query parses in Prometheus and names metrics the exporter serves.
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(format!("{DEPLOY}/grafana-dashboard.json")).unwrap()).unwrap();
    let names = exported_names(&classic);
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 8);
    for expr in &exprs {
        // Grafana replaces $__rate_interval before sending a query.
        let promql = expr.replace("$__rate_interval", "1m");
        let answer = prometheus.query(&promql);
        assert_eq!(answer["status"], "success", "dashboard query {promql}: {answer}");
        for name in promql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("kstall_")) {
            assert!(names.iter().any(|n| n == name), "dashboard uses {name}, which kstall does not export");
        }
    }

    // The systemd unit: it verifies, and its command line (with --once) scrapes this broker.
    let unit = std::fs::read_to_string(format!("{DEPLOY}/kstall-export.service")).unwrap();
    let local_unit = dir.join("kstall-export.service");
    std::fs::write(&local_unit, unit.replace("/usr/bin/kstall", kstall_bin())).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&local_unit).output().expect("systemd-analyze");
    assert!(verify.status.success() && verify.stderr.is_empty(), "systemd-analyze verify: {}", String::from_utf8_lossy(&verify.stderr));
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let mut args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let listen_at = args.iter().position(|a| *a == "--listen").unwrap();
    let other_port = format!("127.0.0.1:{}", free_port());
    args[listen_at + 1] = &other_port;
    let once = Command::new(kstall_bin()).args(&args).arg("--once").output().unwrap();
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert!(String::from_utf8_lossy(&once.stdout).contains("kstall_target_up 1"));

    // Restart: the broker goes, kstall says so, a new one (new pid) comes and is traced.
    let old_pid = broker.pid();
    broker.stop();
    prometheus.wait_for("kstall_target_up", "target down after the broker exits", |v| v == 0.0);
    let broker = DemoBroker::start(&dir.join("broker2")).expect("restart Kafka");
    assert_ne!(broker.pid(), old_pid);
    prometheus.wait_for("kstall_attaches_total", "re-attached", |v| v == 2.0);
    prometheus.wait_for("kstall_target_up", "target up again", |v| v == 1.0);
    prometheus.wait_for("kstall_target_pid", "the new pid", |v| v == broker.pid() as f64);
    broker.produce("hot", 1024, 100).expect("create the topic again");
    produce(&broker, 300);
    prometheus.wait_for(produce_count, "Produce counted after the restart", |v| v == 300.0);

    // SIGTERM: a clean exit, probes detached.
    let status = terminate(&mut exporter);
    assert!(status.success(), "exit status {status:?}");
    drop(prometheus);
    broker.stop();
}
