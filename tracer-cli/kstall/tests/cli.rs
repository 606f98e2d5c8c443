//! Mistakes on the command line that kstall catches before it loads anything into the kernel:
//! each ends in one line naming the fix and a non-zero exit, never a panic, with or without
//! root. (What needs root, such as no privileges, a port taken or `kstall check`, is in the
//! `bad_input` system test.)
use std::process::{Command, Output};

fn kstall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kstall")).args(args).output().unwrap()
}

/// kstall's own error: exit 1, one line `kstall: ...` containing `expected`, nothing on stdout.
fn assert_one_line_error(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected, got: {stderr}");
    assert!(stderr.starts_with("kstall: ") && stderr.contains(expected), "expected {expected:?}, got: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The argument parser's error: exit 2, `error: ...` naming what is wrong first, no panic.
fn assert_usage_error(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status; stderr: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: ") && first.contains(expected), "expected {expected:?} first, got: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn pid_that_does_not_exist() {
    // pid_max is at most 2^22.
    for command in ["watch", "report"] {
        let out = kstall(&[command, "--pid", "8388608"]);
        assert_one_line_error(&out, "no process with pid 8388608: pass the broker's pid (pgrep -f kafka.Kafka)");
    }
}

#[test]
fn pid_that_is_not_a_kafka_broker() {
    // This test's own process: alive, and surely no broker.
    let me = std::process::id().to_string();
    for command in ["watch", "report"] {
        let out = kstall(&[command, "--pid", &me]);
        assert_one_line_error(&out, &format!("pid {me} ("));
        assert_one_line_error(&out, "is not a Kafka broker: its command line runs none of kafka.Kafka");
        assert_one_line_error(&out, "pass the broker's pid (pgrep -f kafka.Kafka)");
    }
}

#[test]
fn stall_threshold_too_low_to_be_useful() {
    let out = kstall(&["watch", "--pid", "1", "--stall-threshold", "0s"]);
    assert_one_line_error(&out, "--stall-threshold 0s is below 100us: every network-thread call would be a stall; use 1ms (the default) or more");
}

#[test]
fn web_config_file_that_does_not_exist() {
    let out = kstall(&["export", "--web.config.file", "/nonexistent/web.yml"]);
    assert_one_line_error(&out, "cannot read the web config file /nonexistent/web.yml: pass an existing file to --web.config.file");
}

#[test]
fn bad_flags_are_refused_by_the_parser() {
    assert_usage_error(&kstall(&["watch", "--bogus"]), "unexpected argument '--bogus'");
    assert_usage_error(&kstall(&["watch", "--duration", "soon"]), "invalid value 'soon' for '--duration <DURATION>'");
    assert_usage_error(&kstall(&["report", "--pid", "broker"]), "invalid value 'broker' for '--pid <PID>'");
    assert_usage_error(&kstall(&["watch", "--format", "yaml"]), "invalid value 'yaml' for '--format <FORMAT>'");
    assert_usage_error(&kstall(&["export", "--listen", "9464"]), "invalid value '9464' for '--listen <LISTEN>'");
    assert_usage_error(&kstall(&["export", "--auto", "--pid", "1"]), "the argument '--auto' cannot be used with '--pid <PID>'");
    assert_usage_error(&kstall(&["trace"]), "unrecognized subcommand 'trace'");
}

/// One set of tracing arguments: every command that traces takes them, with the same help.
#[test]
fn watch_report_and_export_take_the_same_tracing_arguments() {
    for command in ["watch", "report", "export"] {
        let help = String::from_utf8(kstall(&[command, "--help"]).stdout).unwrap();
        for flag in ["--pid <PID>", "--stall-threshold <STALL_THRESHOLD>"] {
            assert!(help.contains(flag), "{command} --help lacks {flag}: {help}");
        }
        assert!(help.contains("Network-thread calls at least this slow are stalls"), "{command}: {help}");
    }
}
