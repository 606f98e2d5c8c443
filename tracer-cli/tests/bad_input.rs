//! Every mistake a user can make on the command line ends in one clear line naming the fix
//! and a non-zero exit, never a panic or a hang.
use std::process::Command;

use xtask::support::assert_one_line_error;

const KSTALL: &str = env!("CARGO_BIN_EXE_kstall");


#[test]
fn pid_that_does_not_exist() {
    // pid_max is at most 2^22.
    let out = Command::new(KSTALL).args(["watch", "--pid", "8388608"]).output().unwrap();
    assert_one_line_error(&out, "no process with pid 8388608: pass the broker's pid");
}

#[test]
fn pid_that_is_not_a_kafka_broker() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new(KSTALL).args(["watch", "--pid", &sleeper.id().to_string()]).output().unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_one_line_error(&out, &format!("pid {} (sleep) is not a Kafka broker", sleeper.id()));
}

#[test]
fn without_privileges() {
    // Same user, but every capability dropped: what `kstall` run without sudo sees.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", KSTALL, "watch", "--pid", "1"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "needs root to load its eBPF probes");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run it with sudo"));
}

#[test]
fn malformed_duration_is_rejected_by_the_parser() {
    let out = Command::new(KSTALL).args(["watch", "--duration", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'soon'"));
}

#[test]
fn stall_threshold_too_low_to_be_useful() {
    let out = Command::new(KSTALL).args(["watch", "--pid", "1", "--stall-threshold", "0s"]).output().unwrap();
    assert_one_line_error(&out, "--stall-threshold 0s is below 100us");
}

#[test]
fn export_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(KSTALL).args(["export", "--listen", &addr]).output().unwrap();
    assert_one_line_error(&out, &format!("cannot listen on {addr}: pick a free --listen address"));
}
