//! `cargo xtask bench`: what tracing a broker with kstall costs, against the tool a user would
//! otherwise reach for.
//!
//! 1. Per traced syscall: the synthetic broker (`synthetic_broker`) runs the same number of
//!    requests on its network thread (kstall's full path: histograms, Kafka framing, a record
//!    per request) and on a request-handler thread (histograms only), untraced, under an empty
//!    BPF program on every tracepoint kstall uses (the floor: what any BPF tracer pays to be
//!    there), under kstall, and under a bpftrace script with a latency histogram per syscall on
//!    the same syscall tracepoints. Configurations take turns within each repeat (order
//!    rotated), so a drift of the machine hits them alike; cost = (time traced - time
//!    untraced, same repeat and thread) / traced calls.
//! 2. Startup (exec to every probe attached), peak RSS, and lost records at 200k traced
//!    syscalls/s, from the same runs and one paced run.
//! 3. A real broker: Kafka's own producer benchmark (throughput, p99) and a synchronous
//!    producer (p50, p99), with and without kstall attached, in turns.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kstall_common::Syscall;
use serde_json::Value;

use kstall_testbed::{
    kafka::DemoBroker,
    support::{proc_status_bytes, requests_of},
    synthetic_broker::{BROKER_MAIN_CLASS, CLIENT_ID, THREADS, TRACED_CALLS_PER_REQUEST},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tracer {
    Untraced,
    EmptyPrograms,
    Kstall,
    Bpftrace,
}

impl Tracer {
    const ALL: [Tracer; 4] = [Tracer::Untraced, Tracer::EmptyPrograms, Tracer::Kstall, Tracer::Bpftrace];

    fn label(self) -> &'static str {
        match self {
            Tracer::Untraced => "untraced",
            Tracer::EmptyPrograms => "empty programs (floor)",
            Tracer::Kstall => "kstall",
            Tracer::Bpftrace => "bpftrace histogram",
        }
    }
}

pub struct BenchOptions {
    pub kstall: PathBuf,
    /// The release xtask binary: it runs the synthetic broker.
    pub load: PathBuf,
    pub scratch: PathBuf,
    pub repeats: usize,
    pub requests: u64,
}

/// The synthetic broker, driven over its stdin.
struct Load {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<ChildStdout>>,
}

impl Load {
    fn start(exe: &Path, scratch: &Path) -> Result<Load> {
        let mut child = Command::new(exe)
            .args(["synthetic-broker", BROKER_MAIN_CLASS])
            .arg(scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        match stdout.next() {
            Some(Ok(line)) if line == "ready" => Ok(Load { child, stdin, stdout }),
            other => bail!("synthetic broker did not start: {other:?}"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `n` requests at `rate`/s (0: flat out) on `thread` (`network` or `handler`);
    /// returns how long they took.
    fn run(&mut self, n: u64, rate: u64, thread: &str) -> Result<Duration> {
        writeln!(self.stdin, "run {n} {rate} {thread}")?;
        let line = self.stdout.next().context("synthetic broker ended")??;
        let nanos: u64 = line.split_whitespace().nth(1).and_then(|w| w.parse().ok()).with_context(|| format!("bad answer {line:?}"))?;
        Ok(Duration::from_nanos(nanos))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a pipe's text in the background, signalling once when a line contains `ready`.
fn collect(pipe: impl Read + Send + 'static, ready: &str) -> (mpsc::Receiver<()>, JoinHandle<String>) {
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    let handle = thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if !ready.is_empty() && line.contains(&ready) {
                let _ = tx.send(());
            }
            text += &line;
            text.push('\n');
        }
        text
    });
    (rx, handle)
}

/// A tracer attached to the load.
struct Attached {
    child: Child,
    /// From exec to its probes attached (kstall: it says "tracing"; bpftrace: BEGIN ran).
    startup: Duration,
    stdout: JoinHandle<String>,
    stderr: Option<JoinHandle<String>>,
}

struct Detached {
    stdout: String,
    peak_rss_bytes: u64,
}

impl Attached {
    fn kstall(kstall: &Path, pid: u32) -> Result<Attached> {
        let started = Instant::now();
        let mut child = Command::new(kstall)
            .args(["watch", "--pid", &pid.to_string(), "--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = collect(child.stdout.take().context("stdout")?, "").1;
        let (ready, stderr) = collect(child.stderr.take().context("stderr")?, "tracing broker pid");
        Self::when_ready(child, started, ready, stdout, Some(stderr))
    }

    fn bpftrace(script: &str) -> Result<Attached> {
        let started = Instant::now();
        let mut child = Command::new("bpftrace")
            .args(["-e", script])
            .stdout(Stdio::piped())
            // It warns that it cannot raise RLIMIT_MEMLOCK, which 5.11+ kernels do not use.
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run bpftrace (apt-get install bpftrace)")?;
        let (ready, stdout) = collect(child.stdout.take().context("stdout")?, "kstall-bench-ready");
        Self::when_ready(child, started, ready, stdout, None)
    }

    fn when_ready(
        mut child: Child,
        started: Instant,
        ready: mpsc::Receiver<()>,
        stdout: JoinHandle<String>,
        stderr: Option<JoinHandle<String>>,
    ) -> Result<Attached> {
        if ready.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let said = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
            bail!("tracer did not attach within 60 s: {said}");
        }
        Ok(Attached { child, startup: started.elapsed(), stdout, stderr })
    }

    fn detach(mut self) -> Result<Detached> {
        let peak_rss_bytes = proc_status_bytes(self.child.id(), "VmHWM").unwrap_or(0);
        // SAFETY: kill(2) on our child; SIGINT is Ctrl-C, which both tracers end on.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            bail!("tracer exited with {status}: {stderr}");
        }
        Ok(Detached { stdout, peak_rss_bytes })
    }
}

/// An empty program on each tracepoint kstall attaches to (as `category:event`).
fn floor_script(tracepoints: &[String]) -> String {
    let probes: Vec<String> = tracepoints.iter().map(|t| format!("tracepoint:{t}")).collect();
    format!("{} {{ }} BEGIN {{ printf(\"kstall-bench-ready\\n\"); }}", probes.join(", "))
}

/// What a user would write: a latency histogram per syscall, for kstall's syscalls, one process.
fn bpftrace_script(pid: u32) -> String {
    let probes = |phase: &str| -> String {
        Syscall::TRACED
            .iter()
            .map(|s| format!("tracepoint:syscalls:sys_{phase}_{}", s.tracepoint_name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{} /pid == {pid}/ {{ @start[tid] = nsecs; }}\n\
         {} /pid == {pid}/ {{ $s = @start[tid]; if ($s != 0) {{ @ns[probe] = hist(nsecs - $s); delete(@start[tid]); }} }}\n\
         BEGIN {{ printf(\"kstall-bench-ready\\n\"); }}",
        probes("enter"),
        probes("exit")
    )
}

/// The fields of kstall's final JSON the bench checks.
struct KstallSaw {
    tracepoints: Vec<String>,
    attach_ms: f64,
    /// Requests of the load's client id, as kstall matched them.
    requests: u64,
    lost: u64,
}

fn kstall_saw(json: &str) -> Result<KstallSaw> {
    let v: Value = serde_json::from_str(json).context("kstall's JSON")?;
    let tracepoints =
        v["probes"]["attached"].as_array().context("probes.attached")?.iter().filter_map(|t| t.as_str().map(String::from)).collect();
    let requests = requests_of(&v, CLIENT_ID, "Fetch");
    let lost = ["histogram_map_full", "in_flight_map_full", "events"].iter().filter_map(|k| v["lost"][k].as_u64()).sum();
    Ok(KstallSaw { tracepoints, attach_ms: v["probes"]["attach_ms"].as_f64().unwrap_or(f64::NAN), requests, lost })
}

/// min / median / max.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Time for the tracer's own start-up work (kstall's jcmd, which a non-JVM answers quickly)
/// to end before the load runs.
const SETTLE: Duration = Duration::from_secs(2);

pub fn run(opts: &BenchOptions) -> Result<()> {
    let traced = opts.requests * TRACED_CALLS_PER_REQUEST;
    println!("bench: {} repeats of {} requests ({traced} traced syscalls) per thread and configuration", opts.repeats, opts.requests);
    let mut load = Load::start(&opts.load, &opts.scratch)?;
    // Warm-up, and the list of tracepoints kstall uses (for the floor).
    let warm = Attached::kstall(&opts.kstall, load.pid())?;
    thread::sleep(SETTLE);
    for (thread, _) in THREADS {
        load.run(opts.requests / 10, 0, thread)?;
    }
    let tracepoints = kstall_saw(&warm.detach()?.stdout)?.tracepoints;

    // (tracer, thread) -> samples
    let mut ns_per_request: BTreeMap<(Tracer, &str), Vec<f64>> = BTreeMap::new();
    let mut added: BTreeMap<(Tracer, &str), Vec<f64>> = BTreeMap::new();
    let mut ratio_floor: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratio_bpftrace: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut startup: BTreeMap<Tracer, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<Tracer, Vec<f64>> = BTreeMap::new();
    let mut attach_ms = Vec::new();
    for repeat in 0..opts.repeats {
        let mut took = BTreeMap::new();
        for i in 0..Tracer::ALL.len() {
            let tracer = Tracer::ALL[(i + repeat) % Tracer::ALL.len()];
            let attached = match tracer {
                Tracer::Untraced => None,
                Tracer::EmptyPrograms => Some(Attached::bpftrace(&floor_script(&tracepoints))?),
                Tracer::Kstall => Some(Attached::kstall(&opts.kstall, load.pid())?),
                Tracer::Bpftrace => Some(Attached::bpftrace(&bpftrace_script(load.pid()))?),
            };
            thread::sleep(SETTLE);
            for (thread, _) in THREADS {
                let t = load.run(opts.requests, 0, thread)?;
                took.insert((tracer, thread), t.as_nanos() as f64 / opts.requests as f64);
            }
            let Some(attached) = attached else { continue };
            startup.entry(tracer).or_default().push(attached.startup.as_secs_f64() * 1e3);
            let detached = attached.detach()?;
            rss.entry(tracer).or_default().push(mib(detached.peak_rss_bytes));
            if tracer == Tracer::Kstall {
                // Requests are followed on the network thread only.
                let saw = kstall_saw(&detached.stdout)?;
                if saw.requests != opts.requests || saw.lost != 0 {
                    bail!("kstall saw {} of {} requests, lost {}", saw.requests, opts.requests, saw.lost);
                }
                attach_ms.push(saw.attach_ms);
            }
        }
        for (thread, _) in THREADS {
            let base = took[&(Tracer::Untraced, thread)];
            let cost = |t: Tracer| (took[&(t, thread)] - base) / TRACED_CALLS_PER_REQUEST as f64;
            for t in Tracer::ALL {
                ns_per_request.entry((t, thread)).or_default().push(took[&(t, thread)]);
                if t != Tracer::Untraced {
                    added.entry((t, thread)).or_default().push(cost(t));
                }
            }
            ratio_floor.entry(thread).or_default().push(cost(Tracer::Kstall) / cost(Tracer::EmptyPrograms));
            ratio_bpftrace.entry(thread).or_default().push(cost(Tracer::Kstall) / cost(Tracer::Bpftrace));
        }
        println!(
            "  repeat {}: ns/request (network thread, handler thread) untraced {:.0} {:.0}, floor {:.0} {:.0}, kstall {:.0} {:.0}, bpftrace {:.0} {:.0}",
            repeat + 1,
            took[&(Tracer::Untraced, "network")],
            took[&(Tracer::Untraced, "handler")],
            took[&(Tracer::EmptyPrograms, "network")],
            took[&(Tracer::EmptyPrograms, "handler")],
            took[&(Tracer::Kstall, "network")],
            took[&(Tracer::Kstall, "handler")],
            took[&(Tracer::Bpftrace, "network")],
            took[&(Tracer::Bpftrace, "handler")],
        );
    }

    let triple = |v: &Vec<f64>, digits: usize| {
        let (a, b, c) = spread(v.clone());
        format!("{a:.digits$} / {b:.digits$} / {c:.digits$}")
    };
    println!("\n### Cost per traced syscall ({traced} traced syscalls per run, {} runs each; min / median / max)\n", opts.repeats);
    println!("| configuration | thread | ns per request | added ns per traced syscall |");
    println!("|---|---|---|---|");
    for t in Tracer::ALL {
        for (thread, comm) in THREADS {
            let cost = added.get(&(t, thread)).map_or("-".to_string(), |v| triple(v, 0));
            println!("| {} | {comm} | {} | {cost} |", t.label(), triple(&ns_per_request[&(t, thread)], 0));
        }
    }
    println!();
    for (thread, comm) in THREADS {
        println!(
            "{comm}: kstall / floor {} (target <= 1.5); kstall / bpftrace {} (target < 0.5)",
            triple(&ratio_floor[thread], 2),
            triple(&ratio_bpftrace[thread], 2)
        );
    }

    println!("\n### Startup and memory (min / median / max)\n");
    println!("| tracer | exec to attached, ms | peak RSS, MiB |");
    println!("|---|---|---|");
    for t in [Tracer::EmptyPrograms, Tracer::Kstall, Tracer::Bpftrace] {
        println!("| {} | {} | {} |", t.label(), triple(&startup[&t], 0), triple(&rss[&t], 1));
    }
    println!("\nkstall's own attach time (load start to last tracepoint): {} ms (target: exec to attached < 100 ms)", triple(&attach_ms, 0));

    // 200k traced syscalls/s for 10 s, half on each thread (one thread tops out below that
    // under tracing): nothing may be lost.
    let rate = 200_000 / TRACED_CALLS_PER_REQUEST / 2;
    let attached = Attached::kstall(&opts.kstall, load.pid())?;
    thread::sleep(SETTLE);
    let n = rate * 10;
    let took = load.run(n, rate, "both")?;
    let detached = attached.detach()?;
    let saw = kstall_saw(&detached.stdout)?;
    println!(
        "\n### Paced load\n\n{} requests on each thread, {:.0} traced syscalls/s in all for {:.1} s: kstall matched {} network-thread requests, lost {} (calls and records); peak RSS {:.1} MiB",
        n,
        (2 * n * TRACED_CALLS_PER_REQUEST) as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        saw.requests,
        saw.lost,
        mib(detached.peak_rss_bytes)
    );
    if saw.requests != n || saw.lost != 0 {
        bail!("kstall missed requests at 200k traced syscalls/s");
    }
    Ok(())
}

/// Kafka's ProducerPerformance summary line: records/s and the 99th percentile (ms).
fn producer_perf(broker: &DemoBroker, records: u64) -> Result<(f64, f64)> {
    let out = broker
        .script("kafka-producer-perf-test.sh")?
        .args(["--topic", "perf", "--num-records", &records.to_string(), "--record-size", "100", "--throughput", "-1"])
        .args(["--producer-props", &format!("bootstrap.servers={}", broker.bootstrap()), "acks=1"])
        .stderr(Stdio::null())
        .output()?;
    // "200000 records sent, 95238.1 records/sec (9.08 MB/sec), ..., 300 ms 99th, 340 ms 99.9th."
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.contains("records sent")).with_context(|| format!("no summary from the producer benchmark: {text}"))?;
    let number_before = |suffix: &str| -> Option<f64> {
        last.split(", ").find(|p| p.contains(suffix))?.split_whitespace().next()?.parse().ok()
    };
    Ok((number_before("records/sec").context("records/sec")?, number_before("99th").context("99th")?))
}

/// One request at a time: p50 and p99 in ms, as the client measured them.
fn sync_produce(broker: &DemoBroker, requests: usize) -> Result<(f64, f64)> {
    let mut producer = broker.sync_producer("bench-sync")?;
    let mut took: Vec<f64> = (0..requests).map(|_| producer.produce("perf", &[b's'; 100]).map(|d| d.as_secs_f64() * 1e3)).collect::<Result<_>>()?;
    took.sort_by(f64::total_cmp);
    Ok((took[requests / 2], took[requests * 99 / 100]))
}

pub fn real_broker(kstall: &Path, work_dir: &Path, repeats: usize) -> Result<()> {
    // Kafka 0.9, whose distribution brings ProducerPerformance (the KRaft brokers are cached as
    // the broker's jars only), so the numbers stay comparable with docs/performance.md's.
    let options = kstall_testbed::kafka::BrokerOptions { version: kstall_testbed::kafka::KAFKA_0_9, ..Default::default() };
    let broker = DemoBroker::start_with(work_dir, options)?;
    broker.produce("perf", 64 << 10, 100)?;
    // The JIT and the page cache first.
    producer_perf(&broker, 100_000)?;
    println!("\n### A real broker (Kafka 0.9.0.1, one network thread)\n");
    println!("| run | kstall | ProducerPerformance records/s | its p99 ms | sync Produce p50 ms | p99 ms | kstall peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for repeat in 0..repeats {
        for traced in [repeat % 2 == 1, repeat % 2 == 0] {
            let attached = if traced { Some(Attached::kstall(kstall, broker.pid())?) } else { None };
            thread::sleep(SETTLE);
            let (rate, p99) = producer_perf(&broker, 300_000)?;
            let (sync50, sync99) = sync_produce(&broker, 5000)?;
            let rss = match attached {
                Some(a) => format!("{:.1}", mib(a.detach()?.peak_rss_bytes)),
                None => "-".into(),
            };
            println!("| {} | {} | {rate:.0} | {p99:.0} | {sync50:.3} | {sync99:.3} | {rss} |", repeat + 1, if traced { "attached" } else { "no" });
        }
    }
    broker.stop();
    Ok(())
}
