//! A broker must never be hurt by kstall: killed with SIGKILL while attached, kstall leaves no
//! probe behind (the kernel drops its links with its file descriptors) and the broker keeps
//! serving. Checked with bpftool, against a real Kafka 0.9 broker. Needs root, as CI has.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xtask::{
    kafka::DemoBroker,
    support::{ScratchDir, spawn_until_ready},
};

const KSTALL: &str = env!("CARGO_BIN_EXE_kstall");

/// kstall's programs loaded in the kernel now (names are cut to 15 characters).
fn kstall_programs() -> usize {
    const PREFIXES: [&str; 8] =
        ["enter_", "exit_", "sched_switch", "page_cache_", "sock_recv", "sock_data_ready", "sync_readahead", "async_readahea"];
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "tracepoint")
        .filter(|p| p["name"].as_str().is_some_and(|n| PREFIXES.iter().any(|pre| n.starts_with(pre))))
        .count()
}

#[test]
fn sigkill_leaves_no_probe_and_the_broker_serving() {
    let scratch = ScratchDir::new("kstall-faults");
    let broker = DemoBroker::start(&scratch.0.join("broker")).expect("start Kafka");
    let before = kstall_programs();
    let mut cmd = Command::new(KSTALL);
    cmd.args(["watch", "--pid", &broker.pid().to_string(), "--format", "json"]).stdout(Stdio::null());
    let mut kstall = spawn_until_ready(cmd, "tracing broker pid").expect("kstall attaches");
    let attached = kstall_programs();
    assert!(attached >= before + 30, "kstall's 30 programs are loaded: {before} before, {attached} now");

    kstall.kill().expect("SIGKILL");
    let _ = kstall.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kstall_programs() > before {
        assert!(Instant::now() < deadline, "kstall's programs are still loaded 10 s after SIGKILL: {}", kstall_programs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(broker.pid() as i32, 0) }, 0, "the broker survived");
    broker.produce("after-kill", 4096, 100).expect("the broker still takes writes");
    assert_eq!(broker.consume_all("after-kill").unwrap(), 41, "and serves reads");
    broker.stop();
}
