//! The KAFKA-7504 scenario, for real: a Kafka broker (4.x by default, `KSTALL_KAFKA` for 0.9)
//! with one network thread per listener and its log on a slow disk (ext4 on a loop device over
//! a FUSE file whose reads take 8 ms each), a
//! synchronous acks=1 producer timing every request itself, and a consumer reading a cold
//! topic from offset 0. kstall must see Produce latency as the producer does, and blame the
//! cold reads: thread, partition, client. Without the cold consumer it must blame nothing.
//! Each phase is traced with `kstall report`, whose JSON (checked against its schema),
//! Markdown and HTML (rendered in headless Chromium) must say so too.
//! Needs root (eBPF, loop devices, FUSE), as CI has.
//!
//! The phases. Idle: the report says `no_problem_found` only. Before the baseline, a client
//! sends half a Fetch and leaves (the count check fails without kstall's close handling).
//! Baseline (6 s, the producer alone, which times each acks=1 request around its own socket
//! calls): kstall's Produce count equals the client's; the client may be slower by up to
//! 10% + 0.5 ms at p50 and p90 and 10% + 2 ms at p99 (its number also holds its own send, the
//! loopback hop and its wakeup: 10-20 us at p50, 0.4 ms at p99 in quiet runs, 1.3 ms once in a
//! CI run) and kstall slower by at most its resolution (1% + 20 us); requests over 16.8 ms number
//! the same on both sides (within 10% or 3); nothing is blamed on misses, and the producer is
//! reported as synchronous. Cold: kcat (client.id `cold-reader`) reads a 48 MiB evicted topic
//! from offset 0 while the producer runs: the same agreement, Produce requests stalled by misses
//! among the slowest 1%, `cold-0` as top cold partition, `cold-reader` as top cold reader and as
//! the Fetch the longest stall was serving, and a TLS ClientHello sent to the listener reported.
//!
//! The reports: the cold one leads with the miss finding (critical when stalls are half the
//! slowest 1% or more, else a warning), the baseline has none of it; every JSON file validates
//! against `docs/report.schema.json` (python3-jsonschema), which rejects one without `context`;
//! the Markdown puts findings before evidence; headless Chromium renders each HTML file with no
//! console message (a refused fetch would be one) and a non-blank page, then each chart alone:
//! the cold timeline shows red miss bands and the Produce they stalled, the baseline one grey
//! Produce dots and no red (other stalls are orange), the sendfile chart red misses, and blue
//! hits exactly when the report has some (a cold read's sendfiles can all miss).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kstall_testbed::{
    kafka::DemoBroker,
    kafka_protocol::request_frame,
    slow_disk::SlowDisk,
    support::{ScratchDir, cache_total, interrupt, kstall_bin, spawn_until_ready},
};
use serde_json::Value;

const COLD: &str = "cold";
const HOT: &str = "hot";
const PRODUCER: &str = "sync-producer";
const COLD_READER: &str = "cold-reader";
const READ_DELAY: Duration = Duration::from_millis(8);

/// Client-side latencies, sorted.
struct ClientTimes(Vec<u64>);

impl ClientTimes {
    /// Same definition as hdrhistogram's value_at_quantile: the smallest value with at least
    /// a `q` share of values at or below it.
    fn at(&self, q: f64) -> u64 {
        let rank = ((q * self.0.len() as f64).ceil() as usize).max(1);
        self.0[rank - 1]
    }
}

/// `kstall report` of one phase, written as JSON, Markdown and HTML into `dir`.
struct Phase {
    name: &'static str,
    dir: PathBuf,
}

impl Phase {
    fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.name))
    }

    fn start(&self, broker: &DemoBroker, duration: &str) -> Child {
        let mut cmd = Command::new(kstall_bin());
        cmd.args(["report", "--pid", &broker.pid().to_string(), "--duration", duration]);
        for ext in ["json", "md", "html"] {
            cmd.arg("--out").arg(self.path(ext));
        }
        cmd.stdout(Stdio::null());
        spawn_until_ready(cmd, "tracing broker pid").expect("kstall attaches")
    }

    /// Waits for the report (interrupting it first when `interrupt_it`); returns its JSON.
    fn finish(&self, mut kstall: Child, interrupt_it: bool) -> Value {
        if interrupt_it {
            interrupt(&kstall);
        }
        let status = kstall.wait().expect("kstall exit");
        assert!(status.success(), "kstall report: {status:?}");
        let path = self.path("json");
        serde_json::from_slice(&std::fs::read(&path).expect("report written")).expect("report is JSON")
    }
}

/// Produces one message at a time until `until` says stop (checked between requests).
fn produce_until(broker: &DemoBroker, mut until: impl FnMut() -> bool) -> ClientTimes {
    let mut producer = broker.sync_producer(PRODUCER).expect("connect");
    let mut times = Vec::new();
    while !until() {
        let took = producer.produce(HOT, &[b'p'; 100]).expect("produce");
        times.push(took.as_nanos() as u64);
    }
    times.sort_unstable();
    ClientTimes(times)
}

fn produce_row(summary: &Value) -> &Value {
    summary["requests"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == PRODUCER && c["api"] == "Produce")
        .unwrap_or_else(|| panic!("no Produce row for {PRODUCER}: {}", summary["requests"]))
}

/// Opens a connection and starts a TLS handshake (the record header and the start of a
/// ClientHello); the broker reads it as an impossible request size and closes the connection.
fn tls_client_hello(broker: &DemoBroker) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(broker.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = [0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a];
    stream.write_all(&hello).expect("send ClientHello");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// Sends the first half of a Fetch v0 (correlation id 1), then closes the connection.
fn abandon_half_sent_fetch(broker: &DemoBroker) {
    use std::io::Write;
    let mut body = Vec::new();
    body.extend((-1i32).to_be_bytes()); // replica id: a consumer
    body.extend(10_000i32.to_be_bytes()); // max wait ms
    body.extend((64i32 << 20).to_be_bytes()); // min bytes
    body.extend(1i32.to_be_bytes());
    body.extend((HOT.len() as i16).to_be_bytes());
    body.extend(HOT.as_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend(0i64.to_be_bytes()); // offset
    body.extend((1i32 << 20).to_be_bytes()); // max bytes
    // Fetch v0, correlation id 1 as the producer's first.
    let framed = request_frame(1, 0, 1, "leaving", &body);
    let mut stream = std::net::TcpStream::connect(broker.bootstrap()).expect("connect");
    stream.write_all(&framed[..framed.len() / 2]).expect("send half a Fetch");
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    // Let the broker see the close and free the fd.
    std::thread::sleep(Duration::from_millis(500));
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// kstall's Produce latency (arrival in the broker's socket to response written) against the
/// producer's own clock (first byte sent to last byte read). The client's number also holds its
/// own send, the loopback hop before the data reaches the socket, and its wakeup and read after
/// the broker's write. Since every request's client time is its kstall time plus that delay,
/// each client percentile lies between kstall's and kstall's plus the largest delay. On this
/// 2-core VM, shared with the JVM, the delay was 10-20 us at p50 and up to 0.4 ms at p99 in
/// quiet runs, and 1.3 ms at p99 in one fresh-clone CI run. So the client may be slower by 10% +
/// 0.5 ms at p50 and p90 and by 10% + 2 ms at p99; kstall may be slower only by its histogram's
/// resolution (2 significant digits: 1%) + 20 us. The tail is also checked by count: requests
/// over 16.8 ms (a kstall bucket bound, far above the delay) must number the same, within 10%
/// or 3.
fn assert_latency_agrees(phase: &str, summary: &Value, client: &ClientTimes) {
    let row = produce_row(summary);
    assert_eq!(row["count"].as_u64().unwrap(), client.0.len() as u64, "{phase}: kstall saw every Produce");
    for (q, field, slack_ns) in [(0.5, "p50_ns", 500_000), (0.9, "p90_ns", 500_000), (0.99, "p99_ns", 2_000_000)] {
        let ours = row["total"][field].as_u64().unwrap();
        let theirs = client.at(q);
        eprintln!("{phase} Produce {field}: kstall {:.3} ms, client {:.3} ms", ms(ours), ms(theirs));
        assert!(ours <= theirs + theirs / 100 + 20_000, "{phase} {field}: kstall {ours} above client {theirs}");
        assert!(theirs <= ours + theirs / 10 + slack_ns, "{phase} {field}: client {theirs} vs kstall {ours}");
    }
    // Only the producer sends Produce, so the API row's histogram is its histogram.
    let api = summary["requests"]["apis"].as_array().unwrap().iter().find(|a| a["api"] == "Produce").unwrap();
    const TAIL_NS: u64 = 1 << 24;
    let ours: u64 = api["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["lower_ns"].as_u64().unwrap() >= TAIL_NS)
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    let theirs = client.0.iter().filter(|&&ns| ns >= TAIL_NS).count() as u64;
    eprintln!("{phase} Produce over 16.8 ms: kstall {ours}, client {theirs}");
    assert!(ours.abs_diff(theirs) <= (theirs / 10).max(3), "{phase}: requests over 16.8 ms: kstall {ours}, client {theirs}");
}

#[test]
fn produce_stalls_are_blamed_on_the_cold_reader() {
    let scratch = ScratchDir::new("kstall-stalls");
    let dir = scratch.0.clone();
    let disk = SlowDisk::create(&dir.join("disk"), 768, READ_DELAY).expect("slow disk");
    let broker = DemoBroker::start_with_log_dir(&dir.join("broker"), &disk.mount_point.join("kafka-logs"))
        .expect("start Kafka");
    let cold_bytes = 48 << 20;
    broker.produce(COLD, cold_bytes, 1024).expect("produce the cold topic");
    broker.produce(HOT, 1024, 100).expect("create the hot topic");
    assert!(broker.evict_from_page_cache(COLD).unwrap() >= 1);

    // Idle: nothing to report.
    let idle = Phase { name: "idle", dir: dir.clone() };
    let tracer = idle.start(&broker, "2s");
    let idle_report = idle.finish(tracer, false);
    assert_eq!(finding_ids(&idle_report), ["no_problem_found"]);

    // Baseline: only the producer.
    let base = Phase { name: "baseline", dir: dir.clone() };
    let tracer = base.start(&broker, "600s");
    // A client that leaves halfway through sending a request: the producer's connection that
    // follows gets the same fd (and the same first correlation id), and must not be read as the
    // rest of that request (the Produce count below would be off).
    abandon_half_sent_fetch(&broker);
    let started = Instant::now();
    let baseline_client = produce_until(&broker, || started.elapsed() > Duration::from_secs(6));
    let baseline_report = base.finish(tracer, true);
    let baseline = &baseline_report["summary"];
    assert_latency_agrees("baseline", baseline, &baseline_client);
    let produce = &baseline["stalls"]["produce"];
    eprintln!("baseline stalls: {}", baseline["stalls"]["by_cause"]);
    assert_eq!(produce["stalled_by_miss"], 0, "nothing to blame without cold reads: {produce}");
    assert!(baseline["stalls"]["cold_readers"].as_array().unwrap().is_empty());
    assert!(baseline["findings"].as_array().unwrap().iter().all(|f| f["id"] != "produce_stalled_by_page_cache_miss"));
    assert!(
        baseline["findings"].as_array().unwrap().iter().any(|f| f["id"] == "synchronous_producer"),
        "a one-at-a-time producer is a finding: {}",
        baseline["findings"]
    );

    // Cold read: a consumer reads the evicted topic from offset 0 while the producer runs.
    let cold_phase = Phase { name: "cold", dir: dir.clone() };
    let tracer = cold_phase.start(&broker, "600s");
    let mut consumer = broker.read_from_start(COLD, COLD_READER).expect("cold consumer");
    let deadline = Instant::now() + Duration::from_secs(120);
    let cold_client = produce_until(&broker, || {
        Instant::now() > deadline || consumer.try_wait().map(|s| s.is_some()).unwrap_or(true)
    });
    let _ = consumer.kill();
    let _ = consumer.wait();
    // A TLS client on this PLAINTEXT listener: kstall must say it cannot read that connection.
    tls_client_hello(&broker);
    let cold_report = cold_phase.finish(tracer, true);
    let cold = &cold_report["summary"];
    assert_latency_agrees("cold", cold, &cold_client);

    let stalls = &cold["stalls"];
    let produce = &stalls["produce"];
    eprintln!("cold stalls: {}\ncold produce attribution: {produce}", stalls["by_cause"]);
    eprintln!("cold partitions: {}\ncold readers: {}", stalls["cold_partitions"], stalls["cold_readers"]);
    assert!(produce["stalled_by_miss"].as_u64().unwrap() > 0, "Produce requests stalled by misses: {produce}");
    assert!(produce["slowest_1pct_stalled"].as_u64().unwrap() > 0, "the slowest 1% includes stalled ones");
    assert_eq!(stalls["cold_partitions"][0]["name"], "cold-0");
    assert_eq!(stalls["cold_readers"][0]["name"], COLD_READER);
    let worst = &stalls["worst"][0];
    assert_eq!(worst["syscall"], "sendfile");
    assert_eq!((&worst["request"]["api"], &worst["request"]["client_id"]), (&"Fetch".into(), &COLD_READER.into()));
    // The cold reader's Fetch responses (written partly by sendfile) were followed to their end.
    let fetches = cold["requests"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == COLD_READER && c["api"] == "Fetch")
        .unwrap_or_else(|| panic!("no Fetch row for {COLD_READER}: {}", cold["requests"]["clients"]));
    eprintln!("cold reader Fetch: {fetches}");
    assert!(fetches["count"].as_u64().unwrap() >= (cold_bytes as u64 >> 20) / 2, "one Fetch per MiB or so");
    assert!(cold["threads"].as_array().unwrap().iter().any(|t| t["tid"] == worst["tid"] && t["role"] == "network"));
    let finding = cold["findings"].as_array().unwrap().iter().find(|f| f["id"] == "produce_stalled_by_page_cache_miss");
    assert!(finding.is_some(), "the stall finding is made: {}", cold["findings"]);
    assert_eq!(cold["protocol"]["tls_connections"], 1);
    assert!(cold["findings"].as_array().unwrap().iter().any(|f| f["id"] == "tls_listener"));
    // The cold reads make Produce's tail worse, as the client saw it too (counted, not by a
    // percentile: how many requests 1% is depends on how fast this machine ran the producer).
    let over = |c: &ClientTimes| c.0.iter().filter(|&&ns| ns >= 1 << 24).count();
    assert!(over(&cold_client) >= over(&baseline_client) + 10, "{} vs {}", over(&cold_client), over(&baseline_client));
    eprintln!("{}", finding.unwrap()["figures"]);

    // The reports: findings differ as the phases did, and say so in every format.
    assert_eq!(cold_report["summary"]["findings"][0]["id"], "produce_stalled_by_page_cache_miss");
    // Critical when stalls are at least half the slowest 1%, else a warning: which one depends
    // on how many Produce requests this machine managed meanwhile.
    let severity = cold_report["summary"]["findings"][0]["severity"].as_str().unwrap();
    assert!(severity == "critical" || severity == "warning", "{severity}");
    assert!(!finding_ids(&baseline_report).contains(&"produce_stalled_by_page_cache_miss".to_string()));
    assert!(!finding_ids(&baseline_report).contains(&"no_problem_found".to_string()), "a sync producer is a problem");
    assert_eq!(cold_report["context"]["kafka_version"], broker.version.as_str());
    assert_eq!(cold_report["summary"]["broker"]["pid"], broker.pid());
    assert!(cold_report["timeline"]["stalls"].as_array().unwrap().len() >= 10);
    for phase in [&idle, &base, &cold_phase] {
        assert_schema_valid(&phase.path("json"));
    }
    assert_schema_rejects_a_report_without_context(&cold_phase.path("json"), &dir);
    let md = std::fs::read_to_string(cold_phase.path("md")).unwrap();
    let findings_at = md.find("## Findings").expect("findings section");
    assert!(findings_at < md.find("## Measurements").expect("measurements section"), "findings first");
    assert!(md.contains(&format!("### {}: Produce requests wait behind page-cache misses", severity.to_uppercase())));
    assert!(md.contains("| cold-0 |"), "cold partition table");

    let cold_html = render_html(&cold_phase.path("html"), &dir.join("chrome"));
    let base_html = render_html(&base.path("html"), &dir.join("chrome"));
    // Timeline: miss bands and the Produce they stalled in red; without cold reads, no red (other
    // stalls, such as preemption on this busy VM, are orange).
    let timeline = |r: &Rendered| r.charts[0];
    eprintln!("timeline pixels: cold {:?}, baseline {:?}", timeline(&cold_html), timeline(&base_html));
    assert!(timeline(&cold_html).red > 50 && timeline(&cold_html).grey > 50, "cold timeline drew stalls and Produce");
    assert!(timeline(&base_html).grey > 50, "baseline timeline drew Produce");
    assert_eq!(timeline(&base_html).red, 0, "no page-cache miss in the baseline timeline");
    // sendfile histogram: misses (red) when reading cold data, hits (blue) when the report has
    // any (a cold read's sendfiles hit only where an earlier readahead got ahead of them: 2 of
    // 51 on 0.9 and none of 52 on 4.x in two runs here).
    let sendfile_rows: Vec<&Value> = cold["rows"].as_array().unwrap().iter().filter(|r| r["syscall"] == "sendfile").collect();
    let sendfiles = |cache: &str| cache_total(&sendfile_rows, cache, "count");
    eprintln!("cold sendfile: {} hits, {} misses; chart {:?}", sendfiles("hit"), sendfiles("miss"), cold_html.charts[1]);
    assert!(cold_html.charts[1].red > 20, "{:?}", cold_html.charts[1]);
    assert_eq!(cold_html.charts[1].blue > 20, sendfiles("hit") > 0, "{:?}", cold_html.charts[1]);

    broker.stop();
    drop(disk);
}

fn finding_ids(report: &Value) -> Vec<String> {
    report["summary"]["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/report.schema.json");

/// Validates with python3-jsonschema (Draft 2020-12); returns its error text.
fn schema_errors(report: &Path) -> Option<String> {
    let script = "import json,sys,jsonschema\n\
        schema=json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))";
    let out = Command::new("/usr/bin/python3").args(["-c", script, SCHEMA]).arg(report).output().expect("python3");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_schema_valid(report: &Path) {
    if let Some(err) = schema_errors(report) {
        panic!("{} does not match the schema: {err}", report.display());
    }
}

fn assert_schema_rejects_a_report_without_context(report: &Path, dir: &Path) {
    let mut broken: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    broken.as_object_mut().unwrap().remove("context");
    let path = dir.join("broken.json");
    std::fs::write(&path, broken.to_string()).unwrap();
    let err = schema_errors(&path).expect("the schema must reject a report without context");
    assert!(err.contains("'context' is a required property"), "{err}");
}

/// Pixel counts of one chart, by color family.
#[derive(Clone, Copy, Debug, Default)]
struct Pixels {
    red: usize,
    blue: usize,
    grey: usize,
    non_white: usize,
}

struct Rendered {
    charts: Vec<Pixels>,
}

/// Screenshots a page (or an SVG) with headless Chromium; returns the RGB pixels and what
/// Chromium logged.
fn screenshot(url: &str, png_path: &Path, profile: &Path, height: u32) -> (Vec<[u8; 3]>, String) {
    let out = Command::new("chromium")
        .args([
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size=1100,{height}"))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg(url)
        .output()
        .expect("chromium (apt-get install chromium)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(png_path).expect("screenshot written"));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let pixels = buf[..info.buffer_size()].chunks(step).map(|p| [p[0], p[1], p[2]]).collect();
    (pixels, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn count(pixels: &[[u8; 3]]) -> Pixels {
    let mut n = Pixels::default();
    for &[r, g, b] in pixels {
        if r > 180 && g < 80 && b < 80 {
            n.red += 1;
        }
        if r < 60 && (100..150).contains(&g) && b > 160 {
            n.blue += 1;
        }
        if r == g && g == b && (60..120).contains(&r) {
            n.grey += 1;
        }
        if (r as u32 + g as u32 + b as u32) < 700 {
            n.non_white += 1;
        }
    }
    n
}

/// Renders the whole report (it must draw, and log no console error, which includes any fetch
/// its Content Security Policy refused), then each of its charts alone.
fn render_html(html_path: &Path, profile: &Path) -> Rendered {
    let (page, log) = screenshot(&format!("file://{}", html_path.display()), &html_path.with_extension("png"), profile, 3000);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Refused")).collect();
    assert!(console.is_empty(), "console messages rendering {}: {console:?}", html_path.display());
    let whole = count(&page);
    assert!(whole.non_white * 20 > page.len(), "the report is not blank: {whole:?}");
    let html = std::fs::read_to_string(html_path).unwrap();
    let mut charts = Vec::new();
    for (i, svg) in html.split("<svg ").skip(1).enumerate() {
        let svg = format!("<svg {}</svg>", svg.split("</svg>").next().unwrap());
        let path = html_path.with_extension(format!("chart{i}.svg"));
        std::fs::write(&path, svg).unwrap();
        let (pixels, _) = screenshot(&format!("file://{}", path.display()), &path.with_extension("png"), profile, 600);
        charts.push(count(&pixels));
    }
    assert_eq!(charts.len(), 3, "timeline, sendfile and request-latency charts");
    Rendered { charts }
}
