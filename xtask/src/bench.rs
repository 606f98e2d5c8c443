//! `cargo xtask bench`: what tracing a broker with kstall costs, against the tool a user would
//! otherwise reach for.
//!
//! 1. Per syscall: the synthetic broker (`synthetic_broker`) runs the same number of requests
//!    on its network thread (kstall's full path: histograms, Kafka framing, a record per
//!    request) and on a request-handler thread (histograms only), and futex wakes (untraced)
//!    on a third thread; another process runs futex wakes too (`xtask futex-loop`). Each is
//!    timed untraced, and for each syscall-hook mechanism this kernel allows (fentry, raw
//!    tracepoints, tracepoints: `KSTALL_HOOKS`) under the floor (kstall's programs on that
//!    mechanism's hooks pointed at no process, so each returns at its first check: what any
//!    tracer pays to be there) and under kstall; and under a bpftrace script with a latency
//!    histogram per syscall on the syscall tracepoints. Configurations take turns within each
//!    repeat (order rotated), so a drift of the machine hits them alike; cost = (time traced -
//!    time untraced, same repeat and thread) / syscalls.
//! 2. Startup (exec to every probe attached) on a quiet machine and while both request
//!    threads run flat out, peak RSS, and lost records at 200k traced syscalls/s, from the same
//!    runs and one paced run.
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
use kstall_core::kernel::SyscallHooks;
use serde_json::Value;

use kstall_testbed::{
    kafka::DemoBroker,
    support::{proc_status_bytes, requests_of},
    synthetic_broker::{BROKER_MAIN_CLASS, CLIENT_ID, OTHER_THREAD, THREADS, TRACED_CALLS_PER_REQUEST},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tracer {
    Untraced,
    /// kstall's programs on a mechanism's hooks, pointed at no process: each returns at its
    /// first check (`kstall check --hold`). What any tracer pays to be on those hooks.
    Floor(SyscallHooks),
    Kstall(SyscallHooks),
    Bpftrace,
}

impl Tracer {
    fn label(self) -> String {
        match self {
            Tracer::Untraced => "untraced".into(),
            Tracer::Floor(h) => format!("floor, {}", h.as_str()),
            Tracer::Kstall(h) => format!("kstall, {}", h.as_str()),
            Tracer::Bpftrace => "bpftrace histogram (tracepoints)".into(),
        }
    }

    /// Every configuration for these mechanisms.
    fn all(mechanisms: &[SyscallHooks]) -> Vec<Tracer> {
        let mut all = vec![Tracer::Untraced];
        for &h in mechanisms {
            all.extend([Tracer::Floor(h), Tracer::Kstall(h)]);
        }
        all.push(Tracer::Bpftrace);
        all
    }
}

/// What is timed in each configuration: the two request threads (traced syscalls), the
/// broker's futex thread and another process's futex loop (untraced syscalls).
const MEASURED: [(&str, &str); 4] = [
    ("network", "kafka-network-t (traced calls)"),
    ("handler", "kafka-request-h (traced calls)"),
    ("other", "broker's VM Thread (untraced futex)"),
    ("process", "another process (untraced futex)"),
];

/// Futex wakes per measurement of the untraced-syscall loops.
const FUTEX_CALLS: u64 = 1_000_000;

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
    /// kstall tracing `pid` with these syscall hooks (None: its own choice).
    fn kstall(kstall: &Path, pid: u32, hooks: Option<SyscallHooks>) -> Result<Attached> {
        let mut cmd = Command::new(kstall);
        cmd.args(["watch", "--pid", &pid.to_string(), "--format", "json"]);
        Self::kstall_command(cmd, hooks, "tracing broker pid")
    }

    /// kstall's programs on these hooks, pointed at no process.
    fn floor(kstall: &Path, hooks: SyscallHooks) -> Result<Attached> {
        let mut cmd = Command::new(kstall);
        cmd.args(["check", "--hold"]);
        Self::kstall_command(cmd, Some(hooks), "pointed at no process")
    }

    fn kstall_command(mut cmd: Command, hooks: Option<SyscallHooks>, ready: &str) -> Result<Attached> {
        if let Some(hooks) = hooks {
            cmd.env("KSTALL_HOOKS", hooks.as_str());
        }
        let started = Instant::now();
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = collect(child.stdout.take().context("stdout")?, "").1;
        let (ready, stderr) = collect(child.stderr.take().context("stderr")?, ready);
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
    hooks: Option<SyscallHooks>,
    attach_ms: f64,
    /// Requests of the load's client id, as kstall matched them.
    requests: u64,
    lost: u64,
}

fn kstall_saw(json: &str) -> Result<KstallSaw> {
    let v: Value = serde_json::from_str(json).context("kstall's JSON")?;
    let hooks = v["probes"]["syscall_hooks"]["hooks"].as_str().and_then(SyscallHooks::from_name);
    let requests = requests_of(&v, CLIENT_ID, "Fetch");
    let lost = ["histogram_map_full", "in_flight_map_full", "records"].iter().filter_map(|k| v["lost"][k].as_u64()).sum();
    Ok(KstallSaw { hooks, attach_ms: v["probes"]["attach_ms"].as_f64().unwrap_or(f64::NAN), requests, lost })
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

/// The syscall-hook mechanisms this kernel allows: the one kstall picks, and the worse ones.
fn mechanisms(kstall: &Path) -> Result<Vec<SyscallHooks>> {
    let out = Command::new(kstall).args(["check", "--format", "json"]).output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("kstall check's JSON")?;
    let best = v["syscall_hooks"]["hooks"].as_str().and_then(SyscallHooks::from_name).with_context(|| format!("kstall check: {}", v["error"]))?;
    Ok(SyscallHooks::BEST_FIRST.into_iter().filter(|&h| h >= best).collect())
}

/// Another process's futex loop: ns per call.
fn other_process(load_exe: &Path) -> Result<f64> {
    let out = Command::new(load_exe).args(["futex-loop", &FUTEX_CALLS.to_string()]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let nanos: f64 = text.split_whitespace().nth(1).and_then(|w| w.parse().ok()).with_context(|| format!("futex-loop said {text:?}"))?;
    Ok(nanos / FUTEX_CALLS as f64)
}

pub fn run(opts: &BenchOptions) -> Result<()> {
    let traced = opts.requests * TRACED_CALLS_PER_REQUEST;
    let mechanisms = mechanisms(&opts.kstall)?;
    let best = mechanisms[0];
    let all = Tracer::all(&mechanisms);
    println!(
        "bench: {} repeats of {} requests ({traced} traced syscalls) per thread and configuration; syscall hooks here: {}",
        opts.repeats,
        opts.requests,
        mechanisms.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut load = Load::start(&opts.load, &opts.scratch)?;
    // Warm-up.
    let warm = Attached::kstall(&opts.kstall, load.pid(), None)?;
    thread::sleep(SETTLE);
    for (thread, _) in THREADS {
        load.run(opts.requests / 10, 0, thread)?;
    }
    warm.detach()?;

    // (tracer, measured) -> samples: ns per request or per futex call; added ns per call.
    let mut ns_per_unit: BTreeMap<(Tracer, &str), Vec<f64>> = BTreeMap::new();
    let mut added: BTreeMap<(Tracer, &str), Vec<f64>> = BTreeMap::new();
    let mut ratio_floor: BTreeMap<(SyscallHooks, &str), Vec<f64>> = BTreeMap::new();
    let mut ratio_bpftrace: BTreeMap<(SyscallHooks, &str), Vec<f64>> = BTreeMap::new();
    let mut startup: BTreeMap<Tracer, Vec<f64>> = BTreeMap::new();
    let mut startup_busy: Vec<f64> = Vec::new();
    let mut rss: BTreeMap<Tracer, Vec<f64>> = BTreeMap::new();
    let mut attach_ms = Vec::new();
    for repeat in 0..opts.repeats {
        let mut took = BTreeMap::new();
        for i in 0..all.len() {
            let tracer = all[(i + repeat) % all.len()];
            let attached = match tracer {
                Tracer::Untraced => None,
                Tracer::Floor(h) => Some(Attached::floor(&opts.kstall, h)?),
                Tracer::Kstall(h) => Some(Attached::kstall(&opts.kstall, load.pid(), Some(h))?),
                Tracer::Bpftrace => Some(Attached::bpftrace(&bpftrace_script(load.pid()))?),
            };
            thread::sleep(SETTLE);
            for (thread, _) in THREADS {
                let t = load.run(opts.requests, 0, thread)?;
                took.insert((tracer, thread), t.as_nanos() as f64 / opts.requests as f64);
            }
            let t = load.run(FUTEX_CALLS, 0, OTHER_THREAD.0)?;
            took.insert((tracer, "other"), t.as_nanos() as f64 / FUTEX_CALLS as f64);
            took.insert((tracer, "process"), other_process(&opts.load)?);
            let Some(attached) = attached else { continue };
            startup.entry(tracer).or_default().push(attached.startup.as_secs_f64() * 1e3);
            let detached = attached.detach()?;
            rss.entry(tracer).or_default().push(mib(detached.peak_rss_bytes));
            if let Tracer::Kstall(h) = tracer {
                // Requests are followed on the network thread only.
                let saw = kstall_saw(&detached.stdout)?;
                if saw.requests != opts.requests || saw.lost != 0 || saw.hooks != Some(h) {
                    bail!("kstall ({}) saw {} of {} requests, lost {}, hooked by {:?}", h.as_str(), saw.requests, opts.requests, saw.lost, saw.hooks);
                }
                if h == best {
                    attach_ms.push(saw.attach_ms);
                }
            }
        }
        // Startup while the broker is busy: both request threads flat out.
        writeln!(load.stdin, "run {} 0 both", opts.requests / 2)?;
        thread::sleep(Duration::from_millis(300));
        let attached = Attached::kstall(&opts.kstall, load.pid(), None)?;
        startup_busy.push(attached.startup.as_secs_f64() * 1e3);
        load.stdout.next().context("synthetic broker ended")??;
        attached.detach()?;

        for (measured, _) in MEASURED {
            let base = took[&(Tracer::Untraced, measured)];
            let per_call = if matches!(measured, "network" | "handler") { TRACED_CALLS_PER_REQUEST as f64 } else { 1.0 };
            let cost = |t: Tracer| (took[&(t, measured)] - base) / per_call;
            for &t in &all {
                ns_per_unit.entry((t, measured)).or_default().push(took[&(t, measured)]);
                if t != Tracer::Untraced {
                    added.entry((t, measured)).or_default().push(cost(t));
                }
            }
            if matches!(measured, "network" | "handler") {
                for &h in &mechanisms {
                    ratio_floor.entry((h, measured)).or_default().push(cost(Tracer::Kstall(h)) / cost(Tracer::Floor(h)));
                    ratio_bpftrace.entry((h, measured)).or_default().push(cost(Tracer::Kstall(h)) / cost(Tracer::Bpftrace));
                }
            }
        }
        let line: Vec<String> =
            all.iter().map(|&t| format!("{} {:.0}/{:.0}", t.label(), took[&(t, "network")], took[&(t, "handler")])).collect();
        println!("  repeat {}: ns/request (network/handler): {}", repeat + 1, line.join(", "));
    }

    let triple = |v: &Vec<f64>, digits: usize| {
        let (a, b, c) = spread(v.clone());
        format!("{a:.digits$} / {b:.digits$} / {c:.digits$}")
    };
    println!(
        "\n### Cost per syscall ({traced} traced syscalls per request-thread run, {FUTEX_CALLS} futex calls per untraced run, {} runs each; min / median / max)\n",
        opts.repeats
    );
    println!("| configuration | thread | ns per request (or per futex call) | added ns per syscall |");
    println!("|---|---|---|---|");
    for &t in &all {
        for (measured, what) in MEASURED {
            let cost = added.get(&(t, measured)).map_or("-".to_string(), |v| triple(v, 0));
            println!("| {} | {what} | {} | {cost} |", t.label(), triple(&ns_per_unit[&(t, measured)], 0));
        }
    }
    println!();
    for &h in &mechanisms {
        for (measured, what) in &MEASURED[..2] {
            println!(
                "{} {what}: kstall / floor {}; kstall / bpftrace {} (target < 0.5)",
                h.as_str(),
                triple(&ratio_floor[&(h, *measured)], 2),
                triple(&ratio_bpftrace[&(h, *measured)], 2)
            );
        }
    }

    println!("\n### Startup and memory (min / median / max)\n");
    println!("| tracer | exec to attached, ms | peak RSS, MiB |");
    println!("|---|---|---|");
    for &t in all.iter().filter(|&&t| t != Tracer::Untraced) {
        println!("| {} | {} | {} |", t.label(), triple(&startup[&t], 0), triple(&rss[&t], 1));
    }
    println!("| kstall ({}), broker busy (both request threads flat out) | {} | |", best.as_str(), triple(&startup_busy, 0));
    println!("\nkstall's own attach time ({}: load start to last hook): {} ms (target: exec to attached < 100 ms)", best.as_str(), triple(&attach_ms, 0));

    // 200k traced syscalls/s for 10 s, half on each thread (one thread tops out below that
    // under tracing): nothing may be lost.
    let rate = 200_000 / TRACED_CALLS_PER_REQUEST / 2;
    let attached = Attached::kstall(&opts.kstall, load.pid(), None)?;
    thread::sleep(SETTLE);
    let n = rate * 10;
    let took = load.run(n, rate, "both")?;
    let detached = attached.detach()?;
    let saw = kstall_saw(&detached.stdout)?;
    println!(
        "\n### Paced load\n\nkstall ({}): {} requests on each thread, {:.0} traced syscalls/s in all for {:.1} s: kstall matched {} network-thread requests, lost {} (calls and records); peak RSS {:.1} MiB",
        best.as_str(),
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
            let attached = if traced { Some(Attached::kstall(kstall, broker.pid(), None)?) } else { None };
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
