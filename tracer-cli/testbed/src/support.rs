//! Process and directory helpers shared by the system tests and the demo.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::Duration,
};

use anyhow::{Context, Result};

/// The kstall binary the system tests run ([`crate::kstall_path`]: $KSTALL, else the release
/// build), looked up once. Missing, it fails the test that asks, saying how to build it: the
/// system tests cannot build it themselves (a test cannot depend on another package's binary).
pub fn kstall_bin() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = crate::kstall_path();
        assert!(
            path.is_file(),
            "no kstall binary at {}: build it with `cargo build --release -p kstall` (`cargo xtask test` does), or name one in KSTALL",
            path.display()
        );
        path.into_os_string().into_string().expect("kstall's path is UTF-8")
    })
}

/// Starts a long-running tool and returns once a line of its stderr contains `ready`; its
/// other stderr lines are passed through.
pub fn spawn_until_ready(mut cmd: Command, ready: &str) -> Result<Child> {
    let mut child = cmd.stderr(Stdio::piped()).spawn().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    let wanted = ready.to_string();
    std::thread::spawn(move || {
        let mut said = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !said && line.contains(&wanted) {
                said = tx.send(()).is_ok();
            } else {
                eprintln!("{line}");
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        anyhow::bail!("{:?} did not say {ready:?} within 60 s", cmd.get_program());
    }
    Ok(child)
}

/// SIGINT, as Ctrl-C would send.
pub fn interrupt(child: &Child) {
    // SAFETY: kill(2) on a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// A scratch directory removed on drop, even when a test fails.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        ScratchDir(std::env::temp_dir().join(format!("{name}-{}", std::process::id())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`, ...) in bytes; None once the process
/// is gone.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kib: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Requests of `api` from `client` in a kstall JSON summary (`watch --format json`, or a
/// report's `summary`); 0 without a row.
pub fn requests_of(summary: &serde_json::Value, client: &str, api: &str) -> u64 {
    summary["requests"]["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["client_id"] == client && c["api"] == api)
        .filter_map(|c| c["count"].as_u64())
        .sum()
}

/// The sum of `field` over the syscall `rows` (of a kstall summary) with verdict `cache`.
pub fn cache_total(rows: &[&serde_json::Value], cache: &str, field: &str) -> u64 {
    rows.iter().filter(|r| r["cache"] == cache).map(|r| r[field].as_u64().unwrap_or_else(|| panic!("no {field} in {r}"))).sum()
}

/// kstall failed the way a user should see it fail: exit 1, one line `kstall: ...` on stderr
/// that contains `expected`, no panic, nothing on stdout.
pub fn assert_one_line_error(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected, got: {stderr}");
    assert!(stderr.starts_with("kstall: ") && stderr.contains(expected), "expected {expected:?}, got: {stderr}");
    assert!(!stderr.contains("panicked"));
    assert!(out.stdout.is_empty());
}
