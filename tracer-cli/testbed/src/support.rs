//! Process, directory and HTTP helpers shared by the system tests and the demo, and the real
//! Prometheus that the export tests scrape with.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
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

/// The hooks of a JSON list of probes or hooks (`{mechanism, target, ...}`), as kstall writes
/// them for people: a tracepoint as `category:event`, the others as `mechanism:target`.
pub fn hook_names(hooks: &serde_json::Value) -> Vec<String> {
    hooks
        .as_array()
        .map(|hooks| {
            hooks
                .iter()
                .map(|h| {
                    let (mechanism, target) = (h["mechanism"].as_str().unwrap_or("?"), h["target"].as_str().unwrap_or("?"));
                    if mechanism == "tracepoint" { target.to_string() } else { format!("{mechanism}:{target}") }
                })
                .collect()
        })
        .unwrap_or_default()
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

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET to 127.0.0.1; returns (status, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The status of a GET, None when nothing answers (yet).
pub fn http_get_opt(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The real Prometheus (Debian's package) scraping every second, on 127.0.0.1, stopped on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
}

impl Prometheus {
    /// Scrapes `kstall export` at 127.0.0.1:`target_port` (job `kstall`, plain HTTP).
    pub fn start(dir: &Path, target_port: u16) -> Prometheus {
        Prometheus::start_with(dir, &format!("  - job_name: kstall\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"))
    }

    /// With these `scrape_configs` entries (YAML list items, indented by two spaces).
    pub fn start_with(dir: &Path, scrape_configs: &str) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrape_configs}")).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let p = Prometheus { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get_opt(port, "/-/ready") != Some(200) {
            assert!(Instant::now() < deadline, "Prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// An instant query; returns the API's JSON answer.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", url_encode(promql)), None);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        assert!(status == 200 || status == 400 || status == 422, "query {promql}: HTTP {status} {body}");
        answer
    }

    /// The single value of a query, if it has one.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let answer = self.query(promql);
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls until `ok` holds for the query's value (Prometheus scrapes every second).
    pub fn wait_for(&self, promql: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(v) = self.value(promql).filter(|v| ok(*v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {promql} is {:?}", self.value(promql));
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child` and waits up to 15 s for it to end; fails the test if it does not.
pub fn terminate(child: &mut Child) -> ExitStatus {
    // SAFETY: kill(2) on a child of ours.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(Instant::now() < deadline, "{} did not exit on SIGTERM", child.id());
        std::thread::sleep(Duration::from_millis(100));
    }
}
