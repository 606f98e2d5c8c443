//! Every mistake a user can make on the command line ends in one clear line naming the fix
//! and a non-zero exit, never a panic or a hang: no privileges (`setpriv` drops every
//! capability), an export port already taken. Also `kstall check` on this kernel, which loads
//! and attaches every probe: needs root, as CI has. (Mistakes caught before anything needs
//! root, such as a wrong pid, a stall threshold too low or a bad flag, are tested by `cargo
//! test`, in tracer-cli/kstall/tests/cli.rs.)
use std::process::Command;

use kstall_testbed::support::{assert_one_line_error, hook_names, kstall_bin};

#[test]
fn without_privileges() {
    // Same user, but every capability dropped: what `kstall` run without sudo sees. The pid is
    // a process kstall takes for a broker (`kafka.Kafka` among its arguments), since the broker
    // is looked for first.
    let mut broker = Command::new("sh").args(["-c", "sleep 30; :", "kafka.Kafka"]).spawn().unwrap();
    // Until the fork has exec'd sh.
    let cmdline = format!("/proc/{}/cmdline", broker.id());
    while !std::fs::read_to_string(&cmdline).unwrap_or_default().contains("kafka.Kafka") {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", kstall_bin(), "watch", "--pid", &broker.id().to_string()])
        .output()
        .unwrap();
    broker.kill().unwrap();
    broker.wait().unwrap();
    assert_one_line_error(&out, "needs root to load its eBPF probes");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run it with sudo"));
}

#[test]
fn export_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(kstall_bin()).args(["export", "--listen", &addr]).output().unwrap();
    assert_one_line_error(&out, &format!("cannot listen on {addr}: pick a free --listen address"));
}

#[test]
fn check_without_privileges_says_why_it_cannot_run() {
    let out = Command::new("setpriv").args(["--bounding-set=-all", "--inh-caps=-all", kstall_bin(), "check"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("needs root to load its eBPF probes"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("kstall cannot run here: kstall needs root"));
}

/// The syscall-hook mechanisms, best first, and a hook each attaches (x86_64 names).
const MECHANISMS: [(&str, &str); 3] =
    [("fentry", "fexit:__x64_sys_read"), ("raw_tracepoint", "raw_tracepoint:sys_exit"), ("tracepoint", "syscalls:sys_exit_read")];

fn check_json(hooks: Option<&str>) -> (std::process::Output, serde_json::Value) {
    let mut cmd = Command::new(kstall_bin());
    cmd.args(["check", "--format", "json"]);
    if let Some(hooks) = hooks {
        cmd.env("KSTALL_HOOKS", hooks);
    }
    let out = cmd.output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

/// `kstall check` that cannot run: its report on stdout, one line naming the fix on stderr.
fn assert_check_refused(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("kstall: ") && stderr.contains(expected), "expected {expected:?}, got: {stderr}");
    assert!(!stderr.contains("panicked"));
}

/// `kstall check` on this kernel: it loads and attaches every probe, says which syscall hooks
/// it chose and why not a better one, and names each kind of evidence with its hooks or with
/// why it is missing. Every mechanism from the chosen one down attaches when forced
/// (KSTALL_HOOKS); a better one the kernel refuses is one line naming the fix.
#[test]
fn check_says_what_this_kernel_gives() {
    let (out, check) = check_json(None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(check["can_run"], true);
    let chosen = check["syscall_hooks"]["hooks"].as_str().unwrap().to_string();
    let rank = MECHANISMS.iter().position(|(m, _)| *m == chosen).unwrap();
    let not_used = check["syscall_hooks"]["not_used"].as_array().unwrap();
    assert_eq!(not_used.len(), rank, "each better mechanism with why not: {not_used:?}");
    for (i, refused) in not_used.iter().enumerate() {
        assert_eq!(refused[0], MECHANISMS[i].0);
        assert!(!refused[1].as_str().unwrap().is_empty());
    }
    let attached = hook_names(&check["attached"]);
    assert!(attached.iter().any(|h| h == "sched:sched_switch") && attached.iter().any(|h| h == MECHANISMS[rank].1), "{attached:?}");
    let evidence = check["evidence"].as_array().unwrap();
    let kinds: Vec<&str> = evidence.iter().map(|e| e["evidence"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["file_lookups", "readahead", "socket_reads", "data_arrival"]);
    for e in evidence {
        let has_hooks = !e["hooks"].as_array().unwrap().is_empty();
        assert_eq!(has_hooks, e["missing"].is_null(), "hooks, or why not: {e}");
        for hook in hook_names(&e["hooks"]) {
            assert!(attached.contains(&hook), "{hook} attached");
        }
    }
    for (i, (mechanism, hook)) in MECHANISMS.iter().enumerate() {
        let (out, forced) = check_json(Some(mechanism));
        if i < rank {
            // Refused here: one line saying so and how to let kstall pick.
            assert_check_refused(&out, "unset KSTALL_HOOKS to let kstall pick");
            continue;
        }
        assert!(out.status.success(), "{mechanism}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(forced["syscall_hooks"]["hooks"], *mechanism);
        let attached = hook_names(&forced["attached"]);
        assert!(attached.iter().any(|h| h == hook) && attached.iter().any(|h| h == "sched:sched_switch"), "{mechanism}: {attached:?}");
        // Only this mechanism's syscall hooks.
        for (other, other_hook) in MECHANISMS.iter().filter(|(m, _)| m != mechanism) {
            assert!(!attached.iter().any(|h| h == other_hook), "{mechanism} attached {other}'s {other_hook}");
        }
    }
    // After the check, none of its programs stays loaded.
    let text = Command::new(kstall_bin()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("kstall can run here") && text.contains(&format!("syscall hooks: {chosen}")), "{text}");
}

#[test]
fn unknown_hook_mechanism() {
    let (out, check) = check_json(Some("kprobe"));
    assert_check_refused(&out, "KSTALL_HOOKS=kprobe is not a hook mechanism: use fentry, raw_tracepoint, tracepoint");
    assert_eq!(check["can_run"], false);
}

/// A reader that goes away (`kstall check | head -0`) ends the output quietly, as with other
/// Unix tools: no "failed printing to stdout" panic.
#[test]
fn closed_stdout_ends_quietly() {
    let mut child = Command::new(kstall_bin()).args(["check", "--format", "json"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
