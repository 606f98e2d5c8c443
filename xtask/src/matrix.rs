//! The kernel matrix: the functional check of `kernel_check.rs` on this host and inside a
//! QEMU guest per Debian kernel line (`guest.rs`), each guest with its data on a real
//! (virtio) block device. The check runs first as kstall chooses (the best syscall hooks the
//! kernel allows, kprobes where allowed), then once per worse syscall-hook mechanism with
//! kprobes hidden (KSTALL_HOOKS, KSTALL_NO_KPROBES), so every path a kernel can take is proven.
//!
//! The kernels: Debian's newest 5.10, 6.1, 6.12 and sid packages, fetched once through a private
//! apt configuration (`~/.cache/kstall/kernels`, the host's apt untouched), booted by virtme-ng
//! with this machine's root read-only and an ext4 disk on virtio. `cargo xtask matrix
//! [host|5.10|6.1|6.12|sid ...]` runs some; `cargo xtask test` runs all, each (kernel, hooks)
//! run one test, 4 to 5 minutes in all.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use kstall_core::kernel::SyscallHooks;
use kstall_testbed::slow_disk::SlowDisk;
use serde_json::Value;

use crate::{
    guest::{self, DISK_MOUNT_POINT, GuestOptions, MOUNT_DISK},
    kernel_check::{self, CheckOptions, RECORD_PREFIX},
};

/// One (kernel, hooks) run of the check.
pub struct Outcome {
    pub name: String,
    pub record: Option<Value>,
    pub failures: Vec<String>,
    pub seconds: f64,
}

pub fn uses_kprobes(record: &Value) -> bool {
    record["run"]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["hooks"].as_array().into_iter().flatten().any(|h| h["mechanism"] == "kprobe"))
}

pub fn outcome(name: String, record: Option<Value>, why_none: String, seconds: f64) -> Outcome {
    let failures = match &record {
        Some(r) => kernel_check::failures(r),
        None => vec![why_none],
    };
    Outcome { name, record, failures, seconds }
}

/// A record's name in the matrix: the kernel, then the syscall hooks and kprobes it used.
fn label(kernel: &str, record: &Value) -> String {
    let hooks = kernel_check::hooks_used(record).map_or("no syscall hooks", SyscallHooks::as_str);
    format!("{kernel} ({hooks}{})", if uses_kprobes(record) { ", kprobes" } else { "" })
}

/// The records of one kernel: the first run with the best hooks it allows, then one per
/// worse mechanism (kprobes hidden); a missing run is a failure. `best`: the mechanism the
/// first run must have used, where it is known.
fn outcomes_of(kernel: &str, records: Vec<Value>, best: Option<SyscallHooks>, why_none: String, seconds: f64) -> Vec<Outcome> {
    let Some(first) = records.first() else { return vec![outcome(kernel.to_string(), None, why_none, seconds)] };
    let first_hooks = kernel_check::hooks_used(first);
    let mut outcomes: Vec<Outcome> = records.iter().map(|r| outcome(label(kernel, r), Some(r.clone()), String::new(), seconds)).collect();
    if let (Some(best), Some(o)) = (best, outcomes.first_mut())
        && first_hooks != Some(best)
    {
        o.failures.push(format!("kstall chose {first_hooks:?} where {} is allowed", best.as_str()));
    }
    for hooks in SyscallHooks::BEST_FIRST.into_iter().filter(|&h| first_hooks.is_some_and(|f| h > f)) {
        if !records.iter().any(|r| r["hooks_forced"] == hooks.as_str()) {
            outcomes.push(outcome(format!("{kernel} ({})", hooks.as_str()), None, format!("no record of the run with KSTALL_HOOKS={}: {why_none}", hooks.as_str()), seconds));
        }
    }
    outcomes
}

/// The check on this machine's own kernel, with every syscall-hook mechanism it allows.
fn on_host(kstall: &Path) -> Vec<Outcome> {
    let started = Instant::now();
    let data_dir = kernel_check::host_data_dir();
    let mut records = Vec::new();
    // The host's own disk reads ahead faster than the stand-in sends: the readahead-on pass
    // reads from a slow disk (every read 8 ms), as a cold reader does on a busy broker.
    let ran = std::fs::create_dir_all(&data_dir).map_err(anyhow::Error::from).and_then(|()| {
        let slow = SlowDisk::create(&kstall_testbed::target_dir().join("kernel-check-slow"), 96, Duration::from_millis(8))?;
        let opts = CheckOptions {
            kstall: kstall.to_path_buf(),
            data_dir: data_dir.clone(),
            readahead_dir: Some(slow.mount_point.clone()),
            no_kprobes: false,
            hooks: None,
        };
        kernel_check::run_mechanisms(&opts, true, |r| records.push(r))
    });
    let why = ran.err().map_or(String::new(), |e| format!("{e:#}"));
    outcomes_of("host", records, None, why, started.elapsed().as_secs_f64())
}

/// Runs the matrix (`only`: the kernel lines to run, `host` among them; empty: all) and prints
/// a table; every outcome is one test.
pub fn run(kstall: &Path, only: &[String]) -> Result<Vec<Outcome>> {
    let wanted = |line: &str| only.is_empty() || only.iter().any(|o| o == line);
    let mut outcomes = Vec::new();
    if wanted("host") {
        for o in on_host(kstall) {
            report(&o);
            outcomes.push(o);
        }
    }
    let xtask = std::env::current_exe()?;
    let work = kstall_testbed::target_dir().join("kernel-matrix");
    std::fs::create_dir_all(&work)?;
    for kernel in guest::kernels()?.into_iter().filter(|k| wanted(k.line)) {
        let disk = work.join(format!("{}.img", kernel.line));
        guest::make_ext4_image(&disk, 256)?;
        // The check runs once more per worse syscall-hook mechanism, kprobes hidden.
        let script = format!(
            "{MOUNT_DISK}mkdir -p {DISK_MOUNT_POINT}/data\nKSTALL={} KSTALL_CHECK_DIR={DISK_MOUNT_POINT}/data {} kernel-check --every-mechanism\n",
            kstall.display(),
            xtask.display()
        );
        let started = Instant::now();
        let name = format!("{} {}", kernel.line, kernel.release);
        let opts = GuestOptions { disk: Some(disk.clone()), timeout: std::time::Duration::from_secs(1200), ..GuestOptions::default() };
        let found = match guest::run_in_guest(&kernel, &script, &opts) {
            Ok(run) => {
                let records: Vec<Value> = run
                    .output
                    .lines()
                    .filter_map(|l| l.strip_prefix(RECORD_PREFIX))
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect();
                let tail: String = run.output.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                // Debian's kernels (BTF, 5.10+ on x86_64) allow fentry: the best path must be taken.
                outcomes_of(&name, records, Some(SyscallHooks::Fentry), format!("no record from the guest (script status {}):\n{tail}", run.status), started.elapsed().as_secs_f64())
            }
            Err(e) => vec![outcome(name, None, format!("{e:#}"), started.elapsed().as_secs_f64())],
        };
        for o in found {
            report(&o);
            outcomes.push(o);
        }
        let _ = std::fs::remove_file(&disk);
    }
    print_table(&outcomes);
    // Every record, for reading what the table sums up.
    let records: String = outcomes.iter().filter_map(|o| o.record.as_ref()).map(|r| format!("{r}\n")).collect();
    let path = work.join("records.jsonl");
    std::fs::write(&path, records)?;
    println!("kernel matrix: records in {}", path.display());
    Ok(outcomes)
}

pub fn report(o: &Outcome) {
    if o.failures.is_empty() {
        println!("kernel matrix: {} ok ({:.0} s)", o.name, o.seconds);
    } else {
        for f in &o.failures {
            println!("kernel matrix: {} FAILED: {f}", o.name);
        }
    }
}

/// Per kernel: hooks, verdicts per phase against the stand-in's truth, attribution.
pub fn print_table(outcomes: &[Outcome]) {
    println!("\n| kernel | probes | evidence | cold miss/calls | prefetch hit/miss (pages added on hits) | warm hit/calls | readahead on: miss/calls (must miss, must hit) | burst after thread exit: hit/calls, Produce | Produce counted/sent | stalled by miss / overlapping | socket wait | Ctrl-C s | Ctrl-C while loading | result |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let Some(r) = &o.record else {
            println!("| {} | | | | | | | | | | | | | FAILED |", o.name);
            continue;
        };
        let phase = |n: &str| r["phases"].as_array().into_iter().flatten().find(|p| p["phase"] == n).cloned().unwrap_or(Value::Null);
        let (cold, pre, warm, ra, burst) = (phase("cold"), phase("prefetch"), phase("warm"), phase("readahead"), phase("burst"));
        let evidence: Vec<String> = r["run"]["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let how = match e["hooks"].as_array().and_then(|h| h.first()).and_then(|h| h["mechanism"].as_str()) {
                    Some("kprobe") => "kprobe",
                    Some("raw_tracepoint") => "raw",
                    Some(_) => "tp",
                    None => "-",
                };
                format!("{}:{how}", e["evidence"].as_str().unwrap_or("?"))
            })
            .collect();
        let produce: (u64, u64) = ["cold", "prefetch", "warm", "readahead", "burst"]
            .iter()
            .map(|n| phase(n))
            .fold((0, 0), |(c, s), p| (c + p["produce"].as_u64().unwrap_or(0), s + p["truth"]["produces_sent"].as_u64().unwrap_or(0)));
        println!(
            "| {} | {} | {} | {}/{} | {}/{} ({}) | {}/{} | {}/{} ({}, {}) | {}/{}, {}/{} | {}/{} | {}/{} | {} | {:.1} | {} | {} |",
            o.name,
            r["run"]["probes_attached"],
            evidence.join(" "),
            cold["sendfile_misses"],
            cold["truth"]["sendfiles"],
            pre["sendfile_hits"],
            pre["sendfile_misses"],
            pre["pages_added_on_hits"],
            warm["sendfile_hits"],
            warm["truth"]["sendfiles"],
            ra["sendfile_misses"],
            ra["truth"]["sendfiles"],
            ra["truth"]["chunks"]["must_miss"],
            ra["truth"]["chunks"]["must_hit"],
            burst["sendfile_hits"],
            burst["truth"]["sendfiles"],
            burst["produce"],
            burst["truth"]["produces_sent"],
            produce.0,
            produce.1,
            cold["produce_stalled_by_miss"],
            cold["truth"]["produces_overlapping_sendfile"],
            if cold["socket_wait_measured"] == true { "measured" } else { "unknown" },
            cold["exit_after_signal_s"].as_f64().unwrap_or(f64::NAN),
            match &r["early_signal"] {
                e if e["summary_printed"] == true => format!("summary, {:.1} s", e["exit_after_signal_s"].as_f64().unwrap_or(f64::NAN)),
                e if e["said_nothing_traced"] == true => format!("nothing traced, {:.1} s", e["exit_after_signal_s"].as_f64().unwrap_or(f64::NAN)),
                _ => "FAILED".into(),
            },
            if o.failures.is_empty() { "ok" } else { "FAILED" },
        );
    }
}
