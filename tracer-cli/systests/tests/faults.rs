//! What goes wrong around kstall on a production broker, against a real Kafka broker (4.x by
//! default, `KSTALL_KAFKA` for 0.9) and real clients. Needs root, as CI has.
//!
//! - kstall killed with SIGKILL while attached leaves no probe behind (the kernel drops its
//!   links with its file descriptors) and the broker keeps serving. Checked with bpftool:
//!   `bpftool prog show` lists the programs kstall holds while attached and none after; the
//!   broker still takes writes and serves reads.
//! - A kernel or mount namespace without what kstall needs (a required tracepoint, tracefs, the
//!   kernel's BTF) or without an optional tracepoint, faked in a private mount namespace: a
//!   tracefs without `sched:sched_switch` and no tracefs at all (an empty read-only
//!   `/sys/kernel`) are one clear line each, exit 1; without the optional `sock` tracepoints the
//!   report names them unavailable and every Produce is still counted; with `/sys/kernel/btf`
//!   hidden every program attaches.
//! - The broker killed (SIGKILL, left unreaped), or stopped for a restart, under `kstall watch
//!   --format json`: watch says "broker pid N exited", prints its final summary with every
//!   Produce, exits 0 and leaves no probe.
//! - Hostile bytes on the broker's port next to a synchronous producer, seeded (random bytes,
//!   truncated requests, sizes over 100 MiB or negative, impossible headers): every broken frame
//!   is counted as a framing error, never as a request, and the producer, with its exact count
//!   (and on KRaft its one ApiVersions), is the only API and client.id reported; the broker
//!   answered nothing else but the controller plane's heartbeats.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use kstall_common::framing::{FIXED_HEADER, MAX_API_KEY, MAX_API_VERSION, MAX_REQUEST_SIZE, looks_like_tls};
use kstall_testbed::{
    kafka::DemoBroker,
    kafka_protocol::{SyncProducer, request_frame},
    support::{ScratchDir, assert_one_line_error, hook_names, interrupt, kstall_bin, requests_of, spawn_until_ready},
};
use serde_json::Value;

const READY: &str = "tracing broker pid";
const TOPIC: &str = "faults";
const PRODUCER: &str = "sync-producer";
/// Longer than any of these steps takes on a loaded 2-core CI machine; only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

/// Ids of the kstall programs loaded in the kernel now, per bpftool (names are cut to 15
/// characters).
fn kstall_programs() -> BTreeSet<u64> {
    const PREFIXES: [&str; 12] = [
        "enter_",
        "exit_",
        "raw_enter",
        "raw_exit",
        "fentry_",
        "fexit_",
        "sched_switch",
        "page_cache_",
        "sock_recv",
        "sock_data_ready",
        "sync_readahead",
        "async_readahea",
    ];
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .unwrap()
        .iter()
        // Each hook mechanism's program type (fentry and fexit are "tracing").
        .filter(|p| ["tracepoint", "raw_tracepoint", "tracing", "kprobe"].contains(&p["type"].as_str().unwrap_or("")))
        .filter(|p| p["name"].as_str().is_some_and(|n| PREFIXES.iter().any(|pre| n.starts_with(pre))))
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

/// Ids of the BPF programs a process holds open (`prog_id` in its fds' fdinfo): the programs of
/// this kstall and no other, should another run on the same machine meanwhile.
fn programs_held_by(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let Ok(info) = std::fs::read_to_string(fd.unwrap().path()) else { continue };
        ids.extend(info.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|id| id.trim().parse::<u64>().ok()));
    }
    ids
}

/// Waits until none of `ids` is loaded (the kernel frees programs shortly after their last fd).
fn assert_programs_unloaded(ids: &BTreeSet<u64>, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u64> = kstall_programs().intersection(ids).copied().collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "kstall's programs {left:?} are still loaded 10 s after {after}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A kstall run whose stderr and stdout are kept for the checks.
struct Traced {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_reader: JoinHandle<()>,
    stdout_reader: JoinHandle<Vec<u8>>,
    /// Programs it loaded, read once it said it was tracing.
    programs: BTreeSet<u64>,
}

/// How a kstall run ended.
struct Finished {
    status: ExitStatus,
    stderr: String,
    stdout: Vec<u8>,
}

impl Traced {
    /// Starts `cmd` (kstall, or something that execs it) and returns once it is tracing.
    fn start(mut cmd: Command) -> Traced {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run kstall");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let ready = line.contains(READY);
                lines.lock().unwrap().push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut pipe = child.stdout.take().unwrap();
        let stdout_reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        });
        if ready_rx.recv_timeout(HANG).is_err() {
            let _ = child.kill();
            panic!("kstall did not say {READY:?}: {:?}", stderr.lock().unwrap());
        }
        let programs = programs_held_by(child.id());
        Traced { child, stderr, stderr_reader, stdout_reader, programs }
    }

    /// Waits for kstall to exit on its own (`why` says what should make it).
    fn finish(mut self, why: &str) -> Finished {
        let deadline = Instant::now() + HANG;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kstall did not exit within {HANG:?} after {why}; stderr: {:?}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.stderr_reader.join().unwrap();
        let stdout = self.stdout_reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().join("\n");
        assert!(!stderr.contains("panicked"), "kstall panicked after {why}: {stderr}");
        Finished { status, stderr, stdout }
    }
}

fn watch_json(broker_pid: u32) -> Command {
    let mut cmd = Command::new(kstall_bin());
    cmd.args(["watch", "--pid", &broker_pid.to_string(), "--format", "json"]);
    cmd
}

/// Sends `n` Produce requests, one at a time, on a connection of their own.
fn produce(broker: &DemoBroker, n: u64) -> u64 {
    let mut producer = broker.sync_producer(PRODUCER).expect("connect");
    for _ in 0..n {
        producer.produce(TOPIC, &[b'p'; 100]).expect("produce");
    }
    n
}

/// A shell script run in a private mount namespace: what it mounts is seen by it and the
/// kstall it ends by exec'ing (`"$@"`), never by the rest of the machine.
fn in_mount_namespace(script: &str, script_args: &[&str], kstall_args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-euc", script, "sh"]).args(script_args);
    cmd.arg(kstall_bin()).args(kstall_args);
    cmd
}

/// Builds in `$1` (a tmpfs) a copy of tracefs whose `events/` lacks category `$2`, or only its
/// event `$3` when given: every other category and event is the real directory, bind-mounted
/// (its `id` and `format` are the kernel's own), so what remains attaches as usual. Then puts
/// it over /sys/kernel/tracing.
const TRACEFS_WITHOUT: &str = r#"
fake=$1; cat=$2; ev=$3; shift 3
real=/sys/kernel/tracing
mount -t tmpfs kstall-fake-tracefs "$fake"
mkdir "$fake/events"
for dir in "$real"/events/*/; do
    c=$(basename "$dir")
    if [ "$c" != "$cat" ]; then
        mkdir "$fake/events/$c" && mount --bind "$dir" "$fake/events/$c"
    elif [ -n "$ev" ]; then
        mkdir "$fake/events/$c"
        for e in "$dir"*/; do
            n=$(basename "$e")
            [ "$n" = "$ev" ] || { mkdir "$fake/events/$c/$n" && mount --bind "$e" "$fake/events/$c/$n"; }
        done
    fi
done
mount --rbind "$fake" "$real"
gone="$real/events/$cat${ev:+/$ev}"
test ! -e "$gone" || { echo "setup: $gone is still there" >&2; exit 99; }
test -e "$real/events/syscalls/sys_enter_read/id" || { echo "setup: the fake tracefs lacks the rest" >&2; exit 99; }
exec "$@"
"#;

/// An empty read-only tmpfs over /sys/kernel: no tracefs mounted, nowhere to mount one
/// (/sys/kernel/tracing and /sys/kernel/debug are gone), as in a container with a read-only /sys.
const NO_TRACEFS: &str = r#"
mount -t tmpfs -o ro,size=4k kstall-empty /sys/kernel
test ! -e /sys/kernel/tracing && test ! -e /sys/kernel/debug || { echo "setup: tracefs mount points remain" >&2; exit 99; }
exec "$@"
"#;

/// An empty directory over /sys/kernel/btf: a kernel without CONFIG_DEBUG_INFO_BTF.
const NO_BTF: &str = r#"
empty=$1; shift
mount --bind "$empty" /sys/kernel/btf
test ! -e /sys/kernel/btf/vmlinux || { echo "setup: /sys/kernel/btf/vmlinux is still there" >&2; exit 99; }
exec "$@"
"#;

/// kstall under `report` until Ctrl-C, with `n` Produce requests meanwhile; returns the report.
fn report_while_producing(cmd: Command, broker: &DemoBroker, n: u64, out: &Path) -> Value {
    let traced = Traced::start(cmd);
    assert_eq!(traced.programs.len(), traced.programs.intersection(&kstall_programs()).count());
    produce(broker, n);
    interrupt(&traced.child);
    let ended = traced.finish("Ctrl-C");
    assert!(ended.status.success(), "kstall report: {:?}: {}", ended.status, ended.stderr);
    serde_json::from_slice(&std::fs::read(out).expect("report written")).expect("report is JSON")
}

#[test]
fn sigkill_missing_kernel_features_and_broker_death() {
    let scratch = ScratchDir::new("kstall-faults");
    let dir = &scratch.0;
    let broker = DemoBroker::start(&dir.join("broker")).expect("start Kafka");
    broker.produce(TOPIC, 1024, 100).expect("create the topic");
    let pid = broker.pid().to_string();

    // kstall killed with SIGKILL while attached.
    let mut cmd = Command::new(kstall_bin());
    cmd.args(["watch", "--pid", &pid, "--format", "json"]).stdout(Stdio::null());
    let mut kstall = spawn_until_ready(cmd, READY).expect("kstall attaches");
    let ours = programs_held_by(kstall.id());
    eprintln!("kstall holds {} programs", ours.len());
    assert!(!ours.is_empty(), "kstall holds its programs");
    assert!(ours.is_subset(&kstall_programs()), "bpftool lists them: {ours:?} vs {:?}", kstall_programs());
    kstall.kill().expect("SIGKILL");
    let _ = kstall.wait();
    assert_programs_unloaded(&ours, "SIGKILL");
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(broker.pid() as i32, 0) }, 0, "the broker survived");
    broker.produce("after-kill", 4096, 100).expect("the broker still takes writes");
    assert_eq!(broker.consume_all("after-kill").unwrap(), 41, "and serves reads");

    // A kernel without a required tracepoint: one line naming it.
    let fake = dir.join("fake-tracefs");
    std::fs::create_dir_all(&fake).unwrap();
    let fake_arg = fake.to_str().unwrap();
    let out = in_mount_namespace(TRACEFS_WITHOUT, &[fake_arg, "sched", "sched_switch"], &["watch", "--pid", &pid])
        .output()
        .unwrap();
    assert_one_line_error(&out, "this kernel has no tracepoint sched:sched_switch; kstall needs it");

    // Nowhere to find or mount tracefs.
    let out = in_mount_namespace(NO_TRACEFS, &[], &["watch", "--pid", &pid]).output().unwrap();
    assert_one_line_error(&out, "tracefs is not mounted and could not be mounted (mount: /sys/kernel/tracing: mount point does not exist): run `mount -t tracefs nodev /sys/kernel/tracing` (kernel needs CONFIG_TRACING)");

    // Without the kernel's BTF: kstall does not need it (it loads with `.btf(None)`); only
    // fentry does, and kstall says that is why it does not use it.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let traced = Traced::start(in_mount_namespace(NO_BTF, &[empty.to_str().unwrap()], &["watch", "--pid", &pid, "--format", "json"]));
    assert_eq!(traced.programs.len(), ours.len(), "every program loads without BTF");
    produce(&broker, 200);
    interrupt(&traced.child);
    let programs = traced.programs.clone();
    let ended = traced.finish("Ctrl-C");
    assert!(ended.status.success(), "{:?}: {}", ended.status, ended.stderr);
    let summary: Value = serde_json::from_slice(&ended.stdout).expect("JSON summary");
    assert_eq!(requests_of(&summary, PRODUCER, "Produce"), 200, "every Produce counted: {}", summary["requests"]["clients"]);
    assert_programs_unloaded(&programs, "Ctrl-C");
    let every_tracepoint = &summary["probes"]["attached"];
    assert_eq!(summary["probes"]["unavailable"], serde_json::json!([]));
    let not_used = &summary["probes"]["syscall_hooks"]["not_used"];
    assert!(not_used[0][0] == "fentry" && not_used[0][1].as_str().unwrap().contains("no BTF"), "{not_used}");

    // Without the optional sock tracepoints (kernels before 6.3): kstall says so and still
    // counts every request, only without socket wait.
    let json = dir.join("no-sock.json");
    let md = dir.join("no-sock.md");
    let mut cmd = in_mount_namespace(
        TRACEFS_WITHOUT,
        &[fake_arg, "sock", ""],
        &["report", "--pid", &pid, "--duration", "600s", "--out", json.to_str().unwrap(), "--out", md.to_str().unwrap()],
    );
    cmd.stdin(Stdio::null());
    let report = report_while_producing(cmd, &broker, 200, &json);
    let summary = &report["summary"];
    let unavailable = hook_names(&summary["probes"]["unavailable"]);
    eprintln!("without sock: unavailable {unavailable:?}, protocol {}", summary["protocol"]);
    assert_eq!(unavailable, ["sock:sock_recv_length", "sock:sk_data_ready"]);
    // By event: the sock events are attached as raw tracepoints (`raw_tracepoint:sk_data_ready`)
    // where they exist, and named as tracefs has them (`sock:sk_data_ready`) where they do not.
    let event = |v: &String| v.rsplit(':').next().unwrap().to_string();
    let mut seen: Vec<String> = hook_names(&summary["probes"]["attached"]).iter().chain(&unavailable).map(event).collect();
    seen.sort();
    let mut every: Vec<String> = hook_names(every_tracepoint).iter().map(event).collect();
    every.sort();
    assert_eq!(seen, every, "all the others attached");
    assert_eq!(summary["protocol"]["socket_wait_measured"], false);
    assert_eq!(requests_of(summary, PRODUCER, "Produce"), 200, "every Produce counted: {}", summary["requests"]["clients"]);
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("unavailable: sock:sock_recv_length, sock:sk_data_ready"), "the report says so: {md}");

    // The broker killed with SIGKILL under `watch`.
    let traced = Traced::start(watch_json(broker.pid()));
    let sent = produce(&broker, 300);
    // SAFETY: kill(2) on the broker, our child.
    assert_eq!(unsafe { libc::kill(broker.pid() as i32, libc::SIGKILL) }, 0);
    // Its parent (this test) has not reaped it: it stays a zombie until `broker.stop()`, as any
    // broker does until whatever started it waits for it. It has exited all the same.
    let programs = traced.programs.clone();
    let ended = traced.finish("the broker's SIGKILL");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.rsplit_once(')').unwrap().1.starts_with(" Z "), "kstall ended while the broker was a zombie: {stat}");
    assert_broker_exit_handled(&ended, broker.pid(), sent, &programs);
    broker.stop();
}

/// After the broker's exit, `watch` says so in one line, prints its final summary (with every
/// request answered before the exit), exits 0 and leaves no program loaded. Exit 0: the trace
/// ran to its end, as with `--duration`, and its summary is whole; a script piping the JSON on
/// should take it.
fn assert_broker_exit_handled(ended: &Finished, broker_pid: u32, produced: u64, programs: &BTreeSet<u64>) {
    assert_eq!(ended.status.code(), Some(0), "exit status; stderr: {}", ended.stderr);
    let said: Vec<&str> = ended.stderr.lines().filter(|l| !l.contains(READY)).collect();
    assert_eq!(said, [format!("kstall: broker pid {broker_pid} exited")], "stderr: {}", ended.stderr);
    let summary: Value = serde_json::from_slice(&ended.stdout).expect("the final summary is JSON");
    eprintln!("after the broker's exit: Produce: client {produced}, kstall {}", requests_of(&summary, PRODUCER, "Produce"));
    assert_eq!(summary["broker"]["pid"], broker_pid);
    assert_eq!(requests_of(&summary, PRODUCER, "Produce"), produced, "{}", summary["requests"]["clients"]);
    assert_programs_unloaded(programs, "the broker's exit");
}

/// xorshift64: deterministic bytes without a crate.
struct XorShift(u64);

impl XorShift {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 32) as u8
            })
            .collect()
    }
}

/// A request as a client frames it, correlation_id 7.
fn frame(api_key: i16, api_version: i16, client_id: &str, rest: &[u8]) -> Vec<u8> {
    request_frame(api_key, api_version, 7, client_id, rest)
}

/// A size field followed by `rest`.
fn sized(size: i32, rest: &[u8]) -> Vec<u8> {
    let mut framed = size.to_be_bytes().to_vec();
    framed.extend(rest);
    framed
}

/// The size field announces a request these bytes complete (Kafka reads all of it, then parses).
fn completes_a_frame(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && i32::from_be_bytes(bytes[..4].try_into().unwrap()).try_into().is_ok_and(|n: usize| n <= bytes.len() - 4)
}

/// Bytes a Kafka request cannot start with, by the rule kstall's framing parser documents: a
/// size outside 10 B..100 MiB (socket.request.max.bytes), or a fixed header with an api_key,
/// api_version or client_id length no request has. TLS-looking bytes are counted apart.
fn broken_framing(bytes: &[u8]) -> bool {
    if bytes.len() < 4 || looks_like_tls([bytes[0], bytes[1]]) {
        return false;
    }
    let size = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    if size < FIXED_HEADER as u32 || size > MAX_REQUEST_SIZE {
        return true;
    }
    let Some(header) = bytes.get(4..4 + FIXED_HEADER) else { return false };
    let i16_at = |at: usize| i16::from_be_bytes([header[at], header[at + 1]]);
    let (api_key, api_version, client_id_len) = (i16_at(0), i16_at(2), i16_at(8));
    !(0..=MAX_API_KEY).contains(&api_key)
        || !(0..=MAX_API_VERSION).contains(&api_version)
        || client_id_len < -1
        || client_id_len as i64 > size as i64 - FIXED_HEADER as i64
}

/// What a hostile client sends, each on a connection of its own.
fn hostile_payloads() -> Vec<(String, Vec<u8>)> {
    let mut rng = XorShift(0x6b73_7461_6c6c_2121);
    let mut cases = Vec::new();
    // (a) Random bytes, and random bodies behind a size that fits them.
    for (i, len) in [1usize, 3, 16, 200, 1500, 9000].into_iter().enumerate() {
        cases.push((format!("random {len} B"), rng.bytes(len)));
        let body = rng.bytes(len.max(FIXED_HEADER));
        cases.push((format!("random body {i}"), sized(body.len() as i32, &body)));
    }
    // (b) Valid requests cut short: a Metadata v0 and a Produce v0 whose body never comes.
    let metadata = frame(3, 0, "hostile-truncated", &0i32.to_be_bytes());
    for cut in [1, 3, 4, 5, 9, 14, 20, metadata.len() - 1] {
        cases.push((format!("Metadata cut at {cut}"), metadata[..cut].to_vec()));
    }
    let mut produce = frame(0, 0, "hostile-produce", &rng.bytes(100));
    produce[..4].copy_from_slice(&4096i32.to_be_bytes());
    cases.push((format!("Produce announcing 4096 B, sending {}", produce.len() - 4), produce));
    // (c) Sizes beyond socket.request.max.bytes (100 MiB), and negative ones, before a header.
    let header = &frame(0, 0, "hostile-oversized", &[])[4..];
    for size in [i32::MAX, 200 << 20, (100 << 20) + 1, -1, i32::MIN] {
        cases.push((format!("size {size}"), sized(size, header)));
    }
    // (d) A size that fits, then a header no client sends: a request as a client frames it
    // (correlation id 9), its client_id length then overwritten with one that lies.
    let mut header = |api_key: i16, api_version: i16, client_id_len: i16| {
        let mut framed = request_frame(api_key, api_version, 9, "hostile-header", &rng.bytes(8));
        framed[12..14].copy_from_slice(&client_id_len.to_be_bytes());
        framed
    };
    cases.push(("api_key 9999, client_id longer than the frame".into(), header(9999, 0, 500)));
    cases.push(("api_key -7".into(), header(-7, 0, 14)));
    cases.push(("Produce v9999".into(), header(0, 9999, 14)));
    cases.push(("Produce, client_id longer than the frame".into(), header(0, 0, 500)));
    cases.push(("Metadata, client_id length -5".into(), header(3, 0, -5)));
    cases
}

/// Lets one thread hold another's requests back between two of them.
#[derive(Default)]
struct Quiet {
    /// (held back wanted, the producer is waiting)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Quiet {
    /// The producer, before each request: waits while it is held back.
    fn checkpoint(&self) {
        let mut state = self.state.lock().unwrap();
        while state.0 {
            state.1 = true;
            self.changed.notify_all();
            state = self.changed.wait(state).unwrap();
        }
        state.1 = false;
    }

    /// Returns once the producer waits between requests; it goes on when the guard drops.
    fn hold(&self) -> QuietGuard<'_> {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        while !state.1 {
            let (next, waited) = self.changed.wait_timeout(state, HANG).unwrap();
            assert!(!waited.timed_out(), "the producer never came to wait between requests");
            state = next;
        }
        QuietGuard(self)
    }
}

struct QuietGuard<'a>(&'a Quiet);

impl Drop for QuietGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.0 = false;
        self.0.changed.notify_all();
    }
}

/// Sends `bytes` on a new connection, ends the sending side and reads until the broker closes.
fn send_hostile(bootstrap: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(bootstrap).expect("connect");
    stream.set_read_timeout(Some(HANG)).unwrap();
    // The broker may close (and reset) the connection before all of it is written.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

#[test]
fn hostile_bytes_are_framing_errors_never_requests() {
    let scratch = ScratchDir::new("kstall-hostile");
    let broker = DemoBroker::start(&scratch.0.join("broker")).expect("start Kafka");
    broker.produce(TOPIC, 1024, 100).expect("create the topic");
    let traced = Traced::start(watch_json(broker.pid()));

    // The producer runs throughout on its own connection. Kafka 0.9's network thread drops the
    // other requests it read in the same poll when it fails on a complete but malformed request
    // (an exception its loop only logs), which would leave the producer waiting forever: those
    // are sent while the producer has no request out (`quiet`), everything else while it runs.
    let quiet = Arc::new(Quiet::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (started_tx, started_rx) = mpsc::channel();
    let producer = {
        let (quiet, stop, sent, bootstrap) = (quiet.clone(), stop.clone(), sent.clone(), broker.bootstrap());
        let handshake = broker.version.handshake();
        std::thread::spawn(move || {
            let mut producer = SyncProducer::connect(&bootstrap, PRODUCER, handshake).expect("connect");
            while !stop.load(Ordering::Relaxed) || sent.load(Ordering::Relaxed) < 500 {
                quiet.checkpoint();
                producer.produce(TOPIC, &[b'p'; 100]).expect("produce");
                if sent.fetch_add(1, Ordering::Relaxed) + 1 == 50 {
                    let _ = started_tx.send(());
                }
            }
            sent.load(Ordering::Relaxed)
        })
    };
    started_rx.recv_timeout(HANG).expect("the producer runs");
    let cases = hostile_payloads();
    let sent_before = sent.load(Ordering::Relaxed);
    let mut broken = 0;
    for (name, bytes) in &cases {
        // At least one Produce between two hostile connections.
        let last = sent.load(Ordering::Relaxed);
        let deadline = Instant::now() + HANG;
        while sent.load(Ordering::Relaxed) == last {
            assert!(Instant::now() < deadline, "the producer stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        let _quiet = completes_a_frame(bytes).then(|| quiet.hold());
        broken += broken_framing(bytes) as u64;
        eprintln!("hostile: {name} ({} B){}", bytes.len(), if broken_framing(bytes) { ", not Kafka framing" } else { "" });
        send_hostile(&broker.bootstrap(), bytes);
    }
    eprintln!("the producer sent {} requests while the hostile client ran", sent.load(Ordering::Relaxed) - sent_before);
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().expect("the producer never failed");
    interrupt(&traced.child);
    let programs = traced.programs.clone();
    let ended = traced.finish("Ctrl-C");
    assert!(ended.status.success(), "kstall watch: {:?}: {}", ended.status, ended.stderr);
    assert_programs_unloaded(&programs, "Ctrl-C");
    let summary: Value = serde_json::from_slice(&ended.stdout).expect("JSON summary");
    let protocol = &summary["protocol"];
    let produce_api = summary["requests"]["apis"].as_array().unwrap().iter().find(|a| a["api"] == "Produce");
    eprintln!(
        "{} hostile connections, {broken} not Kafka framing; kstall: {protocol}; Produce: client {produced}, kstall {} ({} on the API row)",
        cases.len(),
        requests_of(&summary, PRODUCER, "Produce"),
        produce_api.map_or(Value::Null, |a| a["count"].clone()),
    );
    let framing_errors = protocol["framing_errors"].as_u64().unwrap();
    // Every connection whose framing is broken counted, and only hostile connections (the JVM
    // gives up on a connection at its first bad frame): at most one each.
    assert!(broken > 0 && framing_errors >= broken, "each broken frame is a framing error: {framing_errors} < {broken}");
    assert!(framing_errors <= cases.len() as u64, "framing errors beyond the hostile connections: {framing_errors}");
    // Nothing the hostile client sent became a request: the only API and client seen are the
    // producer's, with exactly its count, and nothing else was answered.
    // (To a KRaft broker the producer's first request is its ApiVersions.)
    let handshakes = broker.version.is_kraft() as u64;
    let apis: Vec<&str> = summary["requests"]["apis"].as_array().unwrap().iter().map(|a| a["api"].as_str().unwrap()).collect();
    assert_eq!(apis, if handshakes > 0 { &["Produce", "ApiVersions"][..] } else { &["Produce"][..] });
    assert_eq!(produce_api.unwrap()["count"].as_u64().unwrap(), produced);
    let clients: Vec<(&str, &str, u64)> = summary["requests"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["client_id"].as_str().unwrap(), c["api"].as_str().unwrap(), c["count"].as_u64().unwrap()))
        .collect();
    let mut expected = vec![(PRODUCER, "Produce", produced)];
    if handshakes > 0 {
        expected.push((PRODUCER, "ApiVersions", handshakes));
    }
    assert_eq!(clients, expected);
    // The kernel's count also holds the controller plane's requests (a KRaft broker's own
    // BrokerHeartbeat on its CONTROLLER listener), which the summary keeps apart.
    let controller: u64 = summary["controller_requests"].as_array().unwrap().iter().map(|a| a["count"].as_u64().unwrap()).sum();
    assert!(controller == 0 || broker.version.is_kraft(), "controller-plane requests on a ZooKeeper broker: {}", summary["controller_requests"]);
    assert_eq!(protocol["requests_answered"].as_u64().unwrap(), produced + handshakes + controller);

    // The broker stopped (SIGTERM, as a restart begins) under `watch`: watch ends, clean.
    let traced = Traced::start(watch_json(broker.pid()));
    let sent = produce(&broker, 300);
    let broker_pid = broker.pid();
    let programs = traced.programs.clone();
    broker.stop();
    let ended = traced.finish("the broker's stop");
    assert_broker_exit_handled(&ended, broker_pid, sent, &programs);
}
