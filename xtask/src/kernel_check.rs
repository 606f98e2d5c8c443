//! The functional check the kernel matrix runs on every kernel (inside a QEMU guest, or on
//! the host): `kstall report` traces the testbed's stand-in broker (`kstall_testbed::stand_in`:
//! a `kafka-network-t` thread behind `epoll_wait` serving a Fetch client with `sendfile` and a
//! synchronous Produce client) through three phases, and its numbers are compared with what the
//! stand-in itself saw: a cold segment read with readahead off (every sendfile a miss), a cold
//! segment read paced with readahead on (only the first a miss; the others hit pages the async
//! prefetch added), the first segment again, locked in memory (every sendfile a hit), a larger
//! cold segment read unpaced with the default readahead (each verdict within the bounds of what
//! the stand-in read from the kernel around each call: misses at least the calls that found
//! nothing cached or waited for I/O, hits at least those that found every page uptodate and
//! did not wait), and a short burst on a thread that exits just before the trace stops (its
//! calls must survive its exit).
//!
//! Checked: Produce and Fetch counts are exact; where socket wait is measured, the Produce
//! requests kstall blames on misses are at least two thirds of those in flight during a cold
//! sendfile, and never more; the top cold partition and reader are named; `kstall check` can
//! run; nothing new in `dmesg` (no WARNING, no call trace) and the taint flags unchanged; SIGINT
//! and SIGTERM end each trace with its report, also a SIGINT that comes while the probes load.
//! One run gives a JSON record; [`failures`] says what in it is wrong.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use kstall_core::kernel::SyscallHooks;
use kstall_testbed::{
    output,
    stand_in::{FETCH_CLIENT, PRODUCE_CLIENT},
    support::{requests_of, spawn_until_ready},
};

/// kstall's line once it traces.
const READY: &str = "tracing broker";
/// A kstall that has not ended this long after SIGINT or SIGTERM hangs (the check records the
/// real time; this only keeps a broken kstall from stalling the matrix).
const SIGNAL_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct CheckOptions {
    pub kstall: PathBuf,
    /// Where the stand-in writes its segments: a real block device, not tmpfs.
    pub data_dir: PathBuf,
    /// Where the `readahead` phase's segment goes, when not in `data_dir`: on the host, a
    /// slow disk, so that readahead falls behind a cold reader as on a busy broker's disk.
    pub readahead_dir: Option<PathBuf>,
    /// Hide kprobes from kstall (KSTALL_NO_KPROBES): the tracepoint-only path of older kernels.
    pub no_kprobes: bool,
    /// The syscall hooks kstall must use (KSTALL_HOOKS); None: the best the kernel allows.
    pub hooks: Option<SyscallHooks>,
}

fn kernel_log_problems(since_lines: usize) -> Vec<String> {
    let log = output(&mut Command::new("dmesg")).unwrap_or_default();
    log.lines()
        .skip(since_lines)
        .filter(|l| ["WARNING", "Call Trace", "BUG", "taint", "Oops"].iter().any(|w| l.contains(w)))
        .map(String::from)
        .collect()
}

fn tainted() -> String {
    std::fs::read_to_string("/proc/sys/kernel/tainted").unwrap_or_default().trim().to_string()
}

fn kstall(opts: &CheckOptions) -> Command {
    let mut cmd = Command::new(&opts.kstall);
    if opts.no_kprobes {
        cmd.env("KSTALL_NO_KPROBES", "1");
    }
    if let Some(hooks) = opts.hooks {
        cmd.env("KSTALL_HOOKS", hooks.as_str());
    }
    cmd
}

/// Where each thread of a hung process is: kernel stack and, from gdb, user stack.
fn thread_stacks(pid: u32) -> String {
    let mut out = String::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default().trim().replace('\n', " / ");
        out += &format!("[{} {} wchan={} kstack={}] ", read("comm"), task.file_name().to_string_lossy(), read("wchan"), read("stack"));
    }
    if let Ok(bt) = output(Command::new("timeout").args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt"])) {
        out += &bt.lines().filter(|l| l.starts_with('#') || l.starts_with("Thread")).collect::<Vec<_>>().join(" / ");
    }
    out
}

/// Sends `signal` to kstall and waits for it; returns how long it took to end.
fn stop(child: &mut std::process::Child, signal: i32) -> Result<f64> {
    let sent = Instant::now();
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, signal) };
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("kstall ended with {status} after signal {signal}");
            }
            return Ok(sent.elapsed().as_secs_f64());
        }
        if sent.elapsed() > SIGNAL_DEADLINE {
            let stacks = thread_stacks(child.id());
            let _ = child.kill();
            bail!("kstall did not end within {SIGNAL_DEADLINE:?} of signal {signal}; its threads: {stacks}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts of one (role, syscall, cache) row of a kstall summary; 0 without it.
fn row(summary: &Value, syscall: &str, cache: &str, field: &str) -> u64 {
    summary["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["role"] == "network" && r["syscall"] == syscall && r["cache"] == cache)
        .filter_map(|r| r[field].as_u64())
        .sum()
}

/// The syscall hooks a record's trace used.
pub fn hooks_used(record: &Value) -> Option<SyscallHooks> {
    record["run"]["syscall_hooks"]["hooks"].as_str().and_then(SyscallHooks::from_name)
}

/// The check as kstall chooses, then (`every_mechanism`) once per syscall-hook mechanism worse
/// than the one it chose, with kprobes hidden: every path this kernel can take. Each record
/// goes to `on_record` as it comes; the first error ends the runs.
pub fn run_mechanisms(opts: &CheckOptions, every_mechanism: bool, mut on_record: impl FnMut(Value)) -> Result<()> {
    let first = run(opts)?;
    let best = hooks_used(&first);
    on_record(first);
    if !every_mechanism {
        return Ok(());
    }
    let best = best.context("the first run says no syscall hooks")?;
    for hooks in SyscallHooks::BEST_FIRST.into_iter().filter(|&h| h > best) {
        on_record(run(&CheckOptions { hooks: Some(hooks), no_kprobes: true, ..opts.clone() })?);
    }
    Ok(())
}

/// Runs the check here and returns its record.
pub fn run(opts: &CheckOptions) -> Result<Value> {
    let dmesg_before = output(&mut Command::new("dmesg")).unwrap_or_default().lines().count();
    let taint_before = tainted();
    let mut broker = Command::new(std::env::current_exe()?)
        .args(["stand-in", "kafka.Kafka"])
        .arg(&opts.data_dir)
        .args(&opts.readahead_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the stand-in broker")?;
    let mut to_broker = broker.stdin.take().context("stdin")?;
    let mut from_broker = BufReader::new(broker.stdout.take().context("stdout")?).lines();
    let mut line = || -> Result<String> { from_broker.next().context("the stand-in ended")?.map_err(Into::into) };
    if line()? != "ready" {
        bail!("the stand-in did not start");
    }
    let pid = broker.id().to_string();
    let mut phases = Vec::new();
    let mut check = None;
    // `burst` ends its trace right after a thread that served a short burst has exited.
    for (phase, signal) in
        [("cold", libc::SIGINT), ("prefetch", libc::SIGINT), ("warm", libc::SIGTERM), ("readahead", libc::SIGINT), ("burst", libc::SIGTERM)]
    {
        let out = opts.data_dir.join(format!("{phase}.json"));
        let mut cmd = kstall(opts);
        cmd.args(["report", "--pid", &pid, "--duration", "600s", "--out"]).arg(&out).stdout(Stdio::null());
        let started = Instant::now();
        let mut child = spawn_until_ready(cmd, READY)?;
        let attach_s = started.elapsed().as_secs_f64();
        writeln!(to_broker, "{phase}")?;
        let truth: Value = serde_json::from_str(&line()?)?;
        let exit_s = stop(&mut child, signal)?;
        let report: Value = serde_json::from_slice(&std::fs::read(&out).context("report written")?)?;
        let s = &report["summary"];
        let pages_added_on_hits = row(s, "sendfile", "hit", "pages_added");
        phases.push(json!({
            "phase": phase,
            "truth": truth,
            "attach_s": attach_s,
            "signal": if signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" },
            "exit_after_signal_s": exit_s,
            "sendfile_hits": row(s, "sendfile", "hit", "count"),
            "sendfile_misses": row(s, "sendfile", "miss", "count"),
            "sendfile_none": row(s, "sendfile", "none", "count"),
            "pages_added_on_hits": pages_added_on_hits,
            "produce": requests_of(s, PRODUCE_CLIENT, "Produce"),
            "fetch": requests_of(s, FETCH_CLIENT, "Fetch"),
            "produce_stalled_by_miss": s["stalls"]["produce"]["stalled_by_miss"],
            "top_cold_partition": s["stalls"]["cold_partitions"][0]["name"],
            "top_cold_reader": s["stalls"]["cold_readers"][0]["name"],
            "socket_wait_measured": s["protocol"]["socket_wait_measured"],
            "lost": s["lost"],
            // Where a request kstall did not count went: never parsed, or answered unmatched.
            "protocol": s["protocol"],
        }));
        if check.is_none() {
            check = Some(json!({
                "probes_attached": s["probes"]["attached"].as_array().map_or(0, Vec::len),
                "syscall_hooks": s["probes"]["syscall_hooks"],
                "evidence": s["probes"]["evidence"],
            }));
        }
    }
    drop(to_broker);
    broker.wait()?;

    // A signal while kstall is still loading its probes (seconds on an emulated kernel): it
    // must still end with its final output.
    let mut cmd = kstall(opts);
    cmd.args(["check", "--format", "json"]);
    let checked = cmd.output()?;
    let check_json: Value = serde_json::from_slice(&checked.stdout).unwrap_or(Value::Null);
    let early = signal_while_attaching(opts)?;

    Ok(json!({
        "kernel": output(Command::new("uname").arg("-r"))?.trim(),
        "no_kprobes": opts.no_kprobes,
        "hooks_forced": opts.hooks.map(SyscallHooks::as_str),
        "check": check_json,
        "run": check,
        "phases": phases,
        "early_signal": early,
        "kernel_log_problems": kernel_log_problems(dmesg_before),
        "taint_before": taint_before,
        "taint_after": tainted(),
    }))
}

/// True once `pid` handles SIGINT (its SigCgt mask has it).
fn catches_sigint(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("SigCgt:")).and_then(|m| u64::from_str_radix(m.trim(), 16).ok()))
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// SIGINT as soon as kstall handles it, which is before it loads its probes: on a slow kernel
/// that is while it loads them. It ends with status 0 and its JSON summary.
fn signal_while_attaching(opts: &CheckOptions) -> Result<Value> {
    let mut sleeper = Command::new(std::env::current_exe()?)
        .args(["stand-in", "kafka.Kafka"])
        .arg(opts.data_dir.join("idle"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(sleeper.stdout.as_mut().context("stdout")?).read_line(&mut ready)?;
    let mut child = kstall(opts)
        .args(["watch", "--pid", &sleeper.id().to_string(), "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drained while it runs: a summary larger than a pipe's buffer would block kstall's exit.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let started = Instant::now();
    while !catches_sigint(child.id()) && started.elapsed() < SIGNAL_DEADLINE {
        std::thread::sleep(Duration::from_millis(5));
    }
    let after_start_s = started.elapsed().as_secs_f64();
    let exit_s = stop(&mut child, libc::SIGINT);
    let stderr = stderr.join().unwrap_or_default();
    let stdout = stdout.join().unwrap_or_default();
    drop(sleeper.stdin.take());
    sleeper.wait()?;
    Ok(json!({
        "signal_after_start_s": after_start_s,
        // The signal came before kstall said it traces: it was still attaching.
        "while_attaching": !stderr.contains(READY),
        "exit_after_signal_s": exit_s.as_ref().ok(),
        "error": exit_s.err().map(|e| e.to_string()),
        "summary_printed": serde_json::from_str::<Value>(&stdout).is_ok_and(|v| v["rows"].is_array()),
        // Or, when the signal stopped the verifier, said so.
        "said_nothing_traced": stderr.contains("nothing was traced"),
        // What kstall said last, for a run that did neither.
        "stderr_tail": stderr.lines().rev().take(3).collect::<Vec<_>>(),
    }))
}

/// What is wrong in one record, as sentences; empty when it passes.
pub fn failures(r: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    expect(r["kernel_log_problems"].as_array().is_some_and(|a| a.is_empty()), format!("kernel log: {}", r["kernel_log_problems"]));
    expect(r["taint_before"] == r["taint_after"], format!("taint {} -> {}", r["taint_before"], r["taint_after"]));
    expect(r["check"]["can_run"] == true, format!("kstall check: {}", r["check"]["error"]));
    if let Some(forced) = r["hooks_forced"].as_str() {
        let used = &r["run"]["syscall_hooks"]["hooks"];
        expect(used == forced, format!("KSTALL_HOOKS={forced}, but the trace used {used}"));
    }
    let early = &r["early_signal"];
    expect(
        early["error"].is_null() && (early["summary_printed"] == true || early["said_nothing_traced"] == true),
        format!("SIGINT while attaching: {early}"),
    );
    for p in r["phases"].as_array().into_iter().flatten() {
        let name = p["phase"].as_str().unwrap_or("?");
        let t = &p["truth"];
        let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
        let (hits, misses) = (n(&p["sendfile_hits"]), n(&p["sendfile_misses"]));
        // Exact, except by runs the kernel skipped and kstall counted and reported
        // (lost.probe_runs_skipped, a WARNING finding): on a kernel whose syscall tracepoints
        // run preemptible (sid's 7.x), a raw sys_enter/sys_exit run preempted on a CPU makes
        // the kernel skip that program's next run there, which may be the broker's call.
        let skipped = p["lost"]["probe_runs_skipped"].as_u64().unwrap_or(0);
        let counted = |counted: u64, truth: u64| counted <= truth && counted + skipped >= truth;
        let lost = if skipped > 0 { format!(" ({skipped} probe runs skipped by the kernel)") } else { String::new() };
        expect(
            counted(n(&p["produce"]), n(&t["produces_sent"])),
            format!("{name}: Produce {} counted, {} sent{lost} (protocol: {})", p["produce"], t["produces_sent"], p["protocol"]),
        );
        expect(counted(n(&p["fetch"]), n(&t["fetches"])), format!("{name}: Fetch {} counted, {} sent{lost}", p["fetch"], t["fetches"]));
        expect(counted(hits + misses, n(&t["sendfiles"])), format!("{name}: {hits} hits + {misses} misses, {} sendfiles{lost}", t["sendfiles"]));
        match name {
            // Every read waited for the disk.
            "cold" => {
                expect(counted(misses, n(&t["sendfiles"])), format!("cold: {misses} misses of {} sendfiles{lost}", t["sendfiles"]));
                expect(p["top_cold_partition"] == "cold-0", format!("cold: top cold partition {}", p["top_cold_partition"]));
                expect(p["top_cold_reader"] == FETCH_CLIENT, format!("cold: top cold reader {}", p["top_cold_reader"]));
            }
            // Only the first Fetch (and the odd readahead still in flight) waits; the others
            // hit pages the async prefetch added, which must not make them misses.
            "prefetch" => {
                expect(misses <= 3, format!("prefetch: {misses} misses (at most 3 expected), {hits} hits"));
                expect(n(&p["pages_added_on_hits"]) > 0, format!("prefetch: no pages added on hits: {p}"));
            }
            "warm" | "burst" => expect(misses == 0, format!("{name}: {misses} misses")),
            // A cold consumer's pass with the default readahead: each verdict within what the
            // kernel told the stand-in around the call.
            "readahead" => {
                let c = &t["chunks"];
                let (must_miss, must_hit) = (n(&c["must_miss"]), n(&c["must_hit"]));
                expect(
                    misses + skipped >= must_miss && hits + skipped >= must_hit,
                    format!(
                        "readahead: {misses} misses and {hits} hits; the stand-in saw {must_miss} calls that must miss (nothing cached before: {}, waited for I/O: {}) and {must_hit} that must hit{lost}",
                        c["none_cached_before"], c["waited_for_io"]
                    ),
                );
            }
            _ => {}
        }
        // Histogram entries kstall could not read or take out (a thread's calls missing).
        let unread = n(&p["lost"]["histogram_entries_unread"]);
        expect(unread == 0, format!("{name}: {unread} histogram entries unread"));
        if name == "cold" && p["socket_wait_measured"] == true {
            // Produce requests in flight during a cold sendfile waited behind a miss; kstall
            // joins them from their arrival in the socket. The stand-in's window is a little
            // wider (from its send to its receive), so kstall may find fewer: under emulation,
            // where that hop is slow, 83-98% of them in the runs so far.
            let truth = n(&t["produces_overlapping_sendfile"]);
            let found = n(&p["produce_stalled_by_miss"]);
            expect(
                found <= truth && found * 3 >= truth * 2 && found > 0,
                format!("cold: {found} Produce attributed to misses, {truth} overlapped a cold sendfile"),
            );
        }
        let exit = p["exit_after_signal_s"].as_f64().unwrap_or(f64::MAX);
        expect(exit < SIGNAL_DEADLINE.as_secs_f64(), format!("{name}: {} took {exit} s", p["signal"]));
    }
    bad
}

/// The record's line in a guest's output: `KERNEL-CHECK <json>`.
pub const RECORD_PREFIX: &str = "KERNEL-CHECK ";

pub fn record_from_output(output: &str) -> Option<Value> {
    output.lines().find_map(|l| l.strip_prefix(RECORD_PREFIX)).and_then(|j| serde_json::from_str(j).ok())
}

/// The check's data dir on this host: on the workspace's disk, not tmpfs.
pub fn host_data_dir() -> PathBuf {
    kstall_testbed::target_dir().join("kernel-check")
}

pub fn is_tmpfs(path: &Path) -> bool {
    output(Command::new("stat").args(["-f", "-c", "%T"]).arg(path)).is_ok_and(|t| t.trim() == "tmpfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose warm phase counted `fetch` of 128 Fetch requests and sendfiles, with
    /// `skipped` probe runs the kernel skipped.
    fn record(fetch: u64, skipped: u64) -> Value {
        json!({
            "kernel_log_problems": [], "taint_before": "0", "taint_after": "0",
            "check": {"can_run": true}, "early_signal": {"summary_printed": true},
            "phases": [{
                "phase": "warm", "signal": "SIGTERM", "exit_after_signal_s": 1.0,
                "truth": {"produces_sent": 10, "fetches": 128, "sendfiles": 128},
                "produce": 10, "fetch": fetch, "sendfile_hits": fetch, "sendfile_misses": 0,
                "lost": {"probe_runs_skipped": skipped, "histogram_entries_unread": 0},
            }],
        })
    }

    /// A readahead phase of 512 calls where kstall counted `misses`, the stand-in saw 40 that
    /// must miss and 300 that must hit; `unread` histogram entries.
    fn readahead(misses: u64, unread: u64) -> Value {
        let mut r = record(128, 0);
        r["phases"][0] = json!({
            "phase": "readahead", "signal": "SIGINT", "exit_after_signal_s": 1.0,
            "truth": {"produces_sent": 10, "fetches": 512, "sendfiles": 512, "chunks": {"must_miss": 40, "must_hit": 300}},
            "produce": 10, "fetch": 512, "sendfile_hits": 512 - misses, "sendfile_misses": misses,
            "lost": {"probe_runs_skipped": 0, "histogram_entries_unread": unread},
        });
        r
    }

    #[test]
    fn readahead_verdicts_fall_within_the_kernels_bounds_and_nothing_goes_unread() {
        for misses in [40, 100, 212] {
            assert!(failures(&readahead(misses, 0)).is_empty(), "{misses}: {:?}", failures(&readahead(misses, 0)));
        }
        // Fewer misses than calls that found nothing cached or waited; fewer hits than calls
        // that found every page uptodate.
        assert_eq!(failures(&readahead(39, 0)).len(), 1);
        assert_eq!(failures(&readahead(213, 0)).len(), 1);
        // A thread's entries unread: its calls are missing.
        assert_eq!(failures(&readahead(40, 1)).len(), 1);
    }

    #[test]
    fn counts_are_exact_but_for_runs_the_kernel_skipped_and_kstall_reported() {
        assert!(failures(&record(128, 0)).is_empty(), "{:?}", failures(&record(128, 0)));
        // One call missed, nothing skipped: kstall lost it without knowing.
        assert_eq!(failures(&record(127, 0)).len(), 2, "{:?}", failures(&record(127, 0)));
        // One call missed where the kernel skipped runs, counted and reported: allowed.
        assert!(failures(&record(127, 8)).is_empty(), "{:?}", failures(&record(127, 8)));
        // Never more than the truth, and never more missed than skipped.
        assert!(!failures(&record(129, 8)).is_empty());
        assert!(!failures(&record(100, 8)).is_empty());
    }
}
