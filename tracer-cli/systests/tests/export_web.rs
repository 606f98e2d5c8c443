//! `kstall export --web.config.file`: the real Prometheus (Debian's package) scrapes kstall over
//! TLS with basic auth, as it would a DaemonSet on another host, while kstall traces a real
//! Kafka broker; requests without or with wrong credentials are refused. Needs root, as CI has.
//!
//! At test time: a self-signed certificate for 127.0.0.1 (openssl) and a bcrypt hash made by
//! glibc's crypt(3) through perl (libxcrypt: another bcrypt than the one kstall checks with),
//! with htpasswd's `$2y$` prefix and the cost the exporter-toolkit documents (10). The web
//! config names its files relative to itself and kstall runs from `/`, as the toolkit resolves
//! them. Asserted:
//! - Prometheus's target (`scheme: https`, `tls_config.ca_file`, `basic_auth`) is healthy,
//!   `up` is 1 and `kstall_target_up` 1 arrived through it;
//! - curl with the CA and the password gets 200 and the metrics; without credentials, with a
//!   wrong password or an unknown user, 401 with `WWW-Authenticate: Basic`; without the CA
//!   the certificate is refused; plain HTTP on the TLS port gets no HTTP answer;
//! - a storm of wrong passwords from 16 clients costs kstall at most ~1/4 of one core (bcrypt
//!   checks run one at a time, paced) while the scraper whose password is cached still gets
//!   200 at once;
//! - beyond loopback (0.0.0.0 inside an empty network namespace, so nothing is exposed) kstall
//!   warns about missing TLS and auth, and not with them; bad config files fail at start with
//!   one line naming the fix.
use std::{
    path::Path,
    process::{Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use kstall_testbed::{
    kafka::DemoBroker,
    support::{Prometheus, ScratchDir, assert_one_line_error, free_port, http_get, kstall_bin, spawn_until_ready, terminate},
};

const USER: &str = "prometheus";

/// A self-signed certificate (EC P-256) for IP 127.0.0.1; Go's TLS checks the SAN, not the CN.
fn make_certificate(dir: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=kstall-export-test", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-keyout", "server.key", "-out", "server.crt"])
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
}

/// bcrypt of `password` at cost 10 with a random salt, by glibc's crypt(3) (libxcrypt).
fn bcrypt_hash(password: &str) -> String {
    // 22 salt characters of bcrypt's alphabet; the last one carries 2 bits, so one of ".Oeu".
    const ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    let mut salt: String = bytes[..21].iter().map(|b| ALPHABET[(*b & 63) as usize] as char).collect();
    salt.push(b".Oeu"[(bytes[21] & 3) as usize] as char);
    let out = Command::new("perl")
        .args(["-e", "print crypt($ARGV[0], $ARGV[1])", password, &format!("$2y$10${salt}")])
        .output()
        .expect("perl");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$2y$10$") && hash.len() == 60, "crypt(3) made no bcrypt hash: {hash:?}");
    hash
}

/// curl over TLS to kstall; returns (HTTP status, headers and body). Status 0: no HTTP answer.
fn curl(port: u16, ca: Option<&Path>, user: Option<&str>, scheme: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D", "-", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some(user) = user {
        cmd.args(["-u", user]);
    }
    let out = cmd.arg(format!("{scheme}://127.0.0.1:{port}/metrics")).output().expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), answer.to_string())
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the comm: state is field 3, utime 14 and stime 15 (proc(5)), in clock ticks.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// `kstall export` in a new, empty network namespace (only a down loopback: a socket on
/// 0.0.0.0 there reaches no one), told a pid that is no broker: it binds, warns or not, then
/// fails on the pid.
fn export_in_empty_netns(args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["--net", "--", kstall_bin(), "export", "--pid", &std::process::id().to_string(), "--listen", "0.0.0.0:9464"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)")
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_strangers_are_refused() {
    let scratch = ScratchDir::new("kstall-export-web");
    let dir = scratch.0.clone();
    let certs = dir.join("web");
    std::fs::create_dir_all(&certs).unwrap();
    make_certificate(&certs);
    let password = "correct horse battery staple";
    let web_config = certs.join("web-config.yml");
    std::fs::write(
        &web_config,
        format!("# exporter-toolkit format\ntls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  {USER}: {}\n", bcrypt_hash(password)),
    )
    .unwrap();
    let ca = certs.join("server.crt");

    // Warnings: beyond loopback without TLS and auth, each named; none with both.
    let bare = export_in_empty_netns(&[]);
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(stderr.contains("beyond loopback, without TLS") && stderr.contains("beyond loopback, without basic auth"), "{stderr}");
    assert!(stderr.contains("is not a Kafka broker"), "it got as far as discovery: {stderr}");
    let secured = export_in_empty_netns(&["--web.config.file", web_config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&secured.stderr);
    assert!(!stderr.contains("beyond loopback") && stderr.contains("serving /metrics on https://0.0.0.0:9464 (basic auth)"), "{stderr}");

    // Bad files: one line with the fix, before anything is traced.
    for (text, expected) in [
        (None, "pass an existing file to --web.config.file"),
        (Some("basic_auth_users:\n  prometheus: hunter2\n"), "is not a bcrypt hash"),
        (Some("tls_server_config:\n  cert_file: server.crt\n  key_file: nope.key\n"), "cannot read key_file"),
        (Some("tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n"), "holds no PEM private key"),
        (Some("tls_server_config: [\n"), "fix the YAML"),
    ] {
        let bad = certs.join("bad.yml");
        let _ = std::fs::remove_file(&bad);
        if let Some(text) = text {
            std::fs::write(&bad, text).unwrap();
        }
        let out = Command::new(kstall_bin()).args(["export", "--once", "--web.config.file"]).arg(&bad).output().unwrap();
        assert_one_line_error(&out, expected);
    }

    let broker = DemoBroker::start(&dir.join("broker")).expect("start Kafka");
    broker.produce("hot", 1024, 100).expect("create the topic");
    let port = free_port();
    let mut cmd = Command::new(kstall_bin());
    cmd.args(["export", "--pid", &broker.pid().to_string(), "--listen", &format!("127.0.0.1:{port}"), "--interval", "500ms"]);
    cmd.arg("--web.config.file").arg(&web_config).current_dir("/").stdout(Stdio::null());
    let mut exporter = spawn_until_ready(cmd, "attached to broker pid").expect("kstall export attaches");

    // The real Prometheus, over TLS with basic auth.
    let password_file = dir.join("prometheus-password");
    std::fs::write(&password_file, password).unwrap();
    let prometheus = Prometheus::start_with(
        &dir.join("prometheus"),
        &format!(
            "  - job_name: kstall-tls\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: {USER}\n      password_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca.display(),
            password_file.display()
        ),
    );
    prometheus.wait_for(r#"up{job="kstall-tls"}"#, "Prometheus scrapes over TLS with basic auth", |v| v == 1.0);
    prometheus.wait_for(r#"kstall_target_up{job="kstall-tls"}"#, "kstall's metrics arrive through it", |v| v == 1.0);
    let (status, targets) = http_get(prometheus.port, "/api/v1/targets", None);
    assert_eq!(status, 200);
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["scrapeUrl"], format!("https://127.0.0.1:{port}/metrics"));
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");

    // curl: the right password gets the metrics; anything else 401 with a Basic challenge.
    let right = format!("{USER}:{password}");
    let (status, answer) = curl(port, Some(&ca), Some(&right), "https");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\nkstall_target_up 1"), "{answer}");
    for (who, user) in [("no credentials", None), ("a wrong password", Some(format!("{USER}:wrong"))), ("an unknown user", Some(format!("alice:{password}")))] {
        let (status, answer) = curl(port, Some(&ca), user.as_deref(), "https");
        assert_eq!(status, 401, "{who}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("www-authenticate: basic"), "{who}: {answer}");
        assert!(!answer.contains("kstall_target_up"), "{who} got metrics");
    }
    let (status, answer) = curl(port, None, Some(&right), "https");
    assert_eq!(status, 0, "a client without the CA must refuse the certificate: {answer}");
    let (status, answer) = curl(port, None, Some(&right), "http");
    assert_eq!(status, 0, "plain HTTP on the TLS port: {answer}");

    // A storm of wrong passwords: bcrypt runs one check at a time, paced, so kstall stays under
    // ~1/(1+4) of a core (bound asserted: 1/3, for the TLS handshakes and the tracing around
    // it); the scraper whose password passed before is answered from the cache meanwhile.
    let cpu_before = cpu_seconds(exporter.id());
    let started = Instant::now();
    let ca = Arc::new(ca);
    let storm: Vec<_> = (0..16)
        .map(|i| {
            let ca = ca.clone();
            std::thread::spawn(move || (0..4).map(|j| curl(port, Some(&ca), Some(&format!("{USER}:guess-{i}-{j}")), "https").0).collect::<Vec<u16>>())
        })
        .collect();
    let mut cached_scrapes = Vec::new();
    while !storm.iter().all(|t| t.is_finished()) {
        let t = Instant::now();
        let (status, _) = curl(port, Some(&ca), Some(&right), "https");
        cached_scrapes.push((status, t.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let storm: Vec<u16> = storm.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(exporter.id()) - cpu_before;
    let refused = |code| storm.iter().filter(|&&s| s == code).count();
    eprintln!(
        "storm of {} wrong passwords ({} answered 401, {} 429): {wall:.1} s, kstall CPU {cpu:.2} s; {} scrapes with the right password meanwhile",
        storm.len(),
        refused(401),
        refused(429),
        cached_scrapes.len()
    );
    assert!(storm.iter().all(|&s| s == 401 || s == 429), "wrong passwords refused: {storm:?}");
    assert!(storm.contains(&401));
    assert!(cpu < wall / 3.0 + 0.3, "a storm of bad passwords used {cpu:.2} s of CPU in {wall:.1} s");
    assert!(!cached_scrapes.is_empty());
    for (status, took) in &cached_scrapes {
        assert_eq!(*status, 200, "the cached scraper is refused during the storm");
        assert!(*took < Duration::from_secs(2), "the cached scraper waited {took:?} during the storm");
    }
    prometheus.wait_for(r#"up{job="kstall-tls"}"#, "Prometheus still scrapes after the storm", |v| v == 1.0);

    // SIGTERM: a clean exit.
    let status = terminate(&mut exporter);
    assert!(status.success(), "exit status {status:?}");
    drop(prometheus);
    broker.stop();
}
