//! `cargo xtask <command>`:
//!   setup   install the BPF toolchain, test tools and the Kafka distribution (idempotent)
//!   build   setup, then build kstall (release)
//!   dist    setup, then static kstall binaries for x86_64 and aarch64 in target/dist, with
//!           SHA256SUMS (xtask/src/dist.rs)
//!   test    setup, then run every test: plain `cargo test` (hermetic), the system tests
//!           (tracer-cli/systests, as root, real brokers) on Kafka 4.x and again on 0.9 and
//!           3.9, fuzzing, the kernel matrix; one total line at the end
//!           --quick: plain `cargo test` and the `stalls` system test on Kafka 4.x only (minutes)
//!   demo    setup, build, start a real Kafka 4.x broker (KRaft) on a slow disk with a
//!           synchronous producer, a tail consumer and a cold reader, run `kstall watch` on it
//!           for 30 s, stop everything
//!   broker  start the demo broker and keep it running until Enter (for trying kstall by hand)
//!   --kafka VERSION (with demo, broker, test): 4.4.0 (default), 3.9.1 or 0.9.0.1; also
//!           KSTALL_KAFKA
//!   bench-export [MINUTES] [RATE]
//!           run `kstall export` against the demo broker under a paced Produce load (RATE
//!           requests/s, default 1000) plus a tail consumer, scraping it every 5 s, for
//!           MINUTES (default 10); print kstall's CPU and RSS over the run
//!   bench [REPEATS] [REQUESTS]
//!           what tracing costs: per traced syscall (untraced, empty programs, kstall,
//!           bpftrace), startup, memory, lost records at 200k syscalls/s, and a real broker's
//!           producer throughput and p99 with and without kstall (docs/performance.md)
//!   futex-loop N
//!           N untraced syscalls (futex wakes) in this process: the bench's other process
//!   synthetic-broker kafka.Kafka DIR
//!           the bench's load (see tracer-cli/testbed/src/synthetic_broker.rs), driven on stdin
//!   matrix [host|5.10|6.1|6.12|sid ...]
//!           the kernel matrix (part of `test`): kstall's functional check on this host and
//!           inside QEMU guests booting Debian's kernels (xtask/src/matrix.rs)
//!   kernel-check [--no-kprobes | --every-mechanism]
//!           that check on the running kernel (the matrix runs it in each guest)
//!   arm64-check [KSTALL-AARCH64 XTASK-AARCH64]
//!           `kstall check` and that check in a Debian arm64 guest under qemu-system-aarch64
//!           (xtask/src/guest_arm64.rs); without binaries, only boots it and runs its programs
//!   stand-in kafka.Kafka DIR [READAHEAD_DIR]
//!           the check's stand-in broker (tracer-cli/testbed/src/stand_in.rs), driven on stdin
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kstall_testbed::{
    cache_dir,
    kafka::{self, DemoBroker, KafkaVersion},
    kafka_protocol::SyncProducer,
    kstall_path, release_binary, run,
    slow_disk::SlowDisk,
    workspace_root,
};
use xtask::setup::setup;

/// `cargo xtask kernel-check [--no-kprobes | --every-mechanism]`: the kernel matrix's
/// functional check on this machine (the matrix runs it inside each guest); prints each
/// record and fails on a failure. `--every-mechanism` runs it again for each syscall-hook
/// mechanism worse than the one kstall picked (KSTALL_HOOKS), with kprobes hidden, so every
/// path a kernel can take is proven on it.
fn kernel_check_here(args: &[String]) -> Result<()> {
    use xtask::kernel_check::{self, CheckOptions, RECORD_PREFIX};
    let data_dir = std::env::var_os("KSTALL_CHECK_DIR").map(PathBuf::from).unwrap_or_else(kernel_check::host_data_dir);
    std::fs::create_dir_all(&data_dir)?;
    if kernel_check::is_tmpfs(&data_dir) {
        bail!("{} is on tmpfs, which has no page cache to miss: use a disk", data_dir.display());
    }
    let kstall = kstall_path();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let opts = CheckOptions { kstall, data_dir, readahead_dir: None, no_kprobes: flag("--no-kprobes"), hooks: None };
    let mut failed = 0;
    kernel_check::run_mechanisms(&opts, flag("--every-mechanism"), |record| {
        println!("{RECORD_PREFIX}{record}");
        let failures = kernel_check::failures(&record);
        for f in &failures {
            eprintln!("kernel-check: FAILED: {f}");
        }
        failed += failures.len();
    })?;
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// `cargo xtask arm64-check [KSTALL XTASK]`: the aarch64 test (xtask/src/guest_arm64.rs) with
/// these static aarch64 builds; without them, the guest boots and runs programs of its root.
fn arm64_check(args: &[String]) -> Result<()> {
    match args {
        [kstall, xtask] => {
            let outcome = xtask::guest_arm64::outcome(Path::new(kstall), Path::new(xtask));
            if let Some(r) = &outcome.record {
                println!("{}{r}", xtask::kernel_check::RECORD_PREFIX);
            }
            if !outcome.failures.is_empty() {
                bail!("the arm64 check failed: {}", outcome.failures.join("; "));
            }
            Ok(())
        }
        [] => {
            let run = xtask::guest_arm64::smoke()?;
            print!("{}", run.output);
            println!("arm64 guest: script status {} in {:.0} s", run.status, run.wall.as_secs_f64());
            if run.status != 0 {
                bail!("the script failed in the arm64 guest");
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask arm64-check [KSTALL-AARCH64 XTASK-AARCH64]"),
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds the release kstall and returns its path (in the target directory `release_binary`
/// and cargo agree on: $CARGO_TARGET_DIR, else `target`).
fn build_release() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "--package", "kstall"]))?;
    Ok(release_binary("kstall"))
}

/// What one `cargo test` run counted.
struct CargoTests {
    passed: u64,
    failed: u64,
    ok: bool,
}

/// Runs `cargo test` with `args`, the broker `KSTALL_KAFKA` names and the kstall binary `KSTALL`
/// names, passing its output through and counting its `test result:` lines.
fn cargo_test(label: &str, args: &[&str], kafka: Option<KafkaVersion>, kstall: Option<&Path>, extra: &[String]) -> Result<CargoTests> {
    let started = Instant::now();
    let mut cmd = cargo();
    // Every test binary runs even when one fails, so the total counts them all.
    cmd.args(["test", "--no-fail-fast"]).args(args).args(extra).stdout(Stdio::piped());
    match kafka {
        Some(v) => cmd.env("KSTALL_KAFKA", v.as_str()),
        None => cmd.env_remove("KSTALL_KAFKA"),
    };
    if let Some(kstall) = kstall {
        cmd.env("KSTALL", kstall);
    }
    let mut child = cmd.spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        // `test result: ok. 17 passed; 0 failed; 0 ignored; ...`
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split([';', '.']) {
                let mut words = part.split_whitespace();
                match (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                    (Some(n), Some("passed")) => passed += n,
                    (Some(n), Some("failed")) => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("xtask test: {label} took {:.0}s ({passed} passed, {failed} failed)", started.elapsed().as_secs_f64());
    Ok(CargoTests { passed, failed, ok: status.success() })
}

/// The system tests (tracer-cli/systests), in release as the kstall they run.
const SYSTESTS: [&str; 3] = ["--release", "--package", "kstall-systests"];

/// The system tests that run once more on Kafka 0.9 (the default run is on Kafka 4.x), and the
/// ones that also run on 3.9 (its `ListenerName(...)` thread names).
const ON_KAFKA_0_9: [&str; 5] = ["broker", "stalls", "export", "faults", "churn"];
const ON_KAFKA_3: [&str; 2] = ["broker", "tls"];

/// The real-broker test `test --quick` runs: the KAFKA-7504 scenario on Kafka 4.x, the
/// slow disk, and every report format.
const QUICK_SYSTEST: &str = "stalls";

/// Runs every test target (no doc tests: there are none) and ends with one plain total line.
/// With `--quick`: the hermetic tests and one real-broker test only (`test_quick`).
fn test(extra: &[String]) -> Result<()> {
    if extra.iter().any(|a| a == "--quick") {
        let rest: Vec<String> = extra.iter().filter(|a| *a != "--quick").cloned().collect();
        return test_quick(&rest);
    }
    setup()?;
    // Plain `cargo test`: the default members, hermetic (no root, network, broker or BPF load).
    let mut runs = vec![cargo_test("cargo test", &["--lib", "--bins", "--tests"], None, None, extra)?];
    // The system tests run the release kstall, built here: a test gets CARGO_BIN_EXE_* only
    // for binaries of its own package.
    let kstall = build_release()?;
    runs.push(cargo_test("system tests on Kafka 4.x", &SYSTESTS, None, Some(&kstall), extra)?);
    for (version, targets) in [(kafka::KAFKA_3, &ON_KAFKA_3[..]), (kafka::KAFKA_0_9, &ON_KAFKA_0_9[..])] {
        let mut args = SYSTESTS.to_vec();
        for t in targets {
            args.extend(["--test", t]);
        }
        // The Java client test runs on KRaft brokers only (on 0.9 it would start 4.x again).
        if version == kafka::KAFKA_0_9 {
            args.extend(["--", "--skip", "java_client"]);
        }
        runs.push(cargo_test(&format!("system tests on Kafka {}", version.as_str()), &args, Some(version), Some(&kstall), extra)?);
    }
    let mut passed: u64 = runs.iter().map(|r| r.passed).sum();
    let mut failed: u64 = runs.iter().map(|r| r.failed).sum();
    let all_ok = runs.iter().all(|r| r.ok);
    let seconds = std::env::var("KSTALL_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let crashed = FUZZ_TARGETS.iter().filter(|(target, share)| !fuzz(target, seconds * share / 30)).count() as u64;
    passed += FUZZ_TARGETS.len() as u64 - crashed;
    failed += crashed;
    let (dist_passed, dist_failed, shipped) = dist_tests()?;
    passed += dist_passed;
    failed += dist_failed;
    // The kernel matrix runs the shipped static kstall, from outside the build tree.
    let (matrix_passed, matrix_failed) = matrix_tests(&shipped, &[])?;
    passed += matrix_passed;
    failed += matrix_failed;
    println!("tests: {passed} passed, {failed} failed");
    if !all_ok {
        bail!("cargo test failed");
    }
    if crashed > 0 {
        bail!("{crashed} fuzz target(s) failed");
    }
    if dist_failed > 0 {
        bail!("{dist_failed} test(s) of the shipped artifacts failed");
    }
    if matrix_failed > 0 {
        bail!("{matrix_failed} kernel matrix run(s) failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `cargo xtask test --quick`, for the edit-test loop (a few minutes): plain `cargo test`
/// (hermetic, the replayed trace included) and the one system test on Kafka 4.x that exercises
/// the most of kstall against a real broker. No other Kafka versions, fuzzing, artifacts or
/// kernel matrix: `cargo xtask test` (CI) runs those.
fn test_quick(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    setup()?;
    let mut runs = vec![cargo_test("cargo test", &["--lib", "--bins", "--tests"], None, None, extra)?];
    let kstall = build_release()?;
    let mut args = SYSTESTS.to_vec();
    args.extend(["--test", QUICK_SYSTEST]);
    runs.push(cargo_test(&format!("system test {QUICK_SYSTEST} on Kafka 4.x"), &args, None, Some(&kstall), extra)?);
    let passed: u64 = runs.iter().map(|r| r.passed).sum();
    let failed: u64 = runs.iter().map(|r| r.failed).sum();
    println!("tests (quick): {passed} passed, {failed} failed in {:.0}s", started.elapsed().as_secs_f64());
    if !runs.iter().all(|r| r.ok) {
        bail!("cargo test failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// One named check of the built artifacts, run once.
type Check<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// `cargo xtask dist`, then each artifact tested as a user gets it: the static x86_64 kstall
/// from outside the build tree with no toolchain on PATH, the .deb installed in a clean Debian
/// root, both .rpm's contents, both images (the x86_64 one run under podman against a broker),
/// and the static aarch64 kstall in an arm64 guest (`guest_arm64`). Returns (passed, failed)
/// and a copy of the static x86_64 kstall outside the build tree, for the kernel matrix.
fn dist_tests() -> Result<(u64, u64, PathBuf)> {
    use xtask::{
        dist::{self, Arch},
        guest_arm64, package,
    };
    let started = Instant::now();
    let built = dist::dist()?;
    let packages = |arch| built.packages(arch).context("dist made no packages");
    let (x86, arm) = (packages(Arch::X86_64)?, packages(Arch::Aarch64)?);
    let checks: Vec<(&str, Check)> = vec![
        ("static x86_64 kstall check, outside the build tree", Box::new(|| dist::test_static_kstall_check(built.binary(Arch::X86_64)))),
        (".deb in a clean Debian root", Box::new(|| package::test_deb(&x86.deb))),
        (".rpm x86_64", Box::new(|| package::test_rpm(&x86.rpm, Arch::X86_64))),
        (".rpm aarch64", Box::new(|| package::test_rpm(&arm.rpm, Arch::Aarch64))),
        ("image x86_64 under podman", Box::new(|| package::test_image(&x86.image, Arch::X86_64))),
        ("image aarch64", Box::new(|| package::test_image(&arm.image, Arch::Aarch64))),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in checks {
        let t = Instant::now();
        match check() {
            Ok(()) => {
                println!("dist test: {name}: ok ({:.0} s)", t.elapsed().as_secs_f64());
                passed += 1;
            }
            Err(e) => {
                println!("dist test: {name}: FAILED: {e:#}");
                failed += 1;
            }
        }
    }
    let arm64_xtask = dist::build_static("xtask", "xtask", Arch::Aarch64)?;
    match guest_arm64::outcome(built.binary(Arch::Aarch64), &arm64_xtask).failures.is_empty() {
        true => passed += 1,
        false => failed += 1,
    }
    let outside = std::env::temp_dir().join("kstall-shipped");
    std::fs::create_dir_all(&outside)?;
    let shipped = outside.join("kstall");
    std::fs::copy(built.binary(Arch::X86_64), &shipped)?;
    println!("xtask test: dist and its artifacts took {:.0}s ({passed} passed, {failed} failed)", started.elapsed().as_secs_f64());
    Ok((passed, failed, shipped))
}

/// The kernel matrix (`xtask/src/matrix.rs`); returns (passed, failed), one per run.
fn matrix_tests(kstall: &Path, only: &[String]) -> Result<(u64, u64)> {
    let started = Instant::now();
    let outcomes = xtask::matrix::run(kstall, only)?;
    let failed = outcomes.iter().filter(|o| !o.failures.is_empty()).count() as u64;
    println!("xtask test: kernel matrix took {:.0}s", started.elapsed().as_secs_f64());
    Ok((outcomes.len() as u64 - failed, failed))
}

/// The fuzz targets of the code the probes share with the host (tracer-ebpf/common/fuzz) and
/// their share of 30 s of fuzzing: response_start's input is 8 bytes, so 2 s covers what it
/// can find; the request framing and the exchange driven by sequences of calls get the most.
const FUZZ_TARGETS: [(&str, u64); 4] = [("framing", 15), ("exchange", 8), ("body", 5), ("response_start", 2)];

/// Builds and runs one fuzz target for `seconds` (cargo-fuzz on the stable toolchain, its
/// nightly flags let through by RUSTC_BOOTSTRAP; overflow checks on). Its output goes to
/// `artifacts/<target>.log`; on failure the log's end and the crashing input are printed.
fn fuzz(target: &str, seconds: u64) -> bool {
    let dir = workspace_root().join("tracer-ebpf/common/fuzz");
    let log = dir.join("artifacts").join(format!("{target}.log"));
    let status = std::fs::create_dir_all(dir.join("artifacts"))
        .and_then(|_| std::fs::File::create(&log))
        .and_then(|out| {
            cargo()
                .env("RUSTC_BOOTSTRAP", "1")
                .args(["fuzz", "run", "--sanitizer", "none", "--debug-assertions", "--fuzz-dir"])
                .arg(&dir)
                .args([target, "--", &format!("-max_total_time={}", seconds.max(1)), "-print_final_stats=1"])
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .status()
        });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stat = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map_or("?", str::trim);
    match status {
        Ok(s) if s.success() => {
            let (runs, rate) = (stat("stat::number_of_executed_units:"), stat("stat::average_exec_per_sec:"));
            println!("fuzz {target}: ok, {runs} inputs in {seconds}s ({rate}/s)");
            return true;
        }
        Ok(s) => println!("fuzz {target}: FAILED ({s}), from {}:", log.display()),
        Err(e) => println!("fuzz {target}: FAILED: cannot run cargo fuzz: {e}"),
    }
    // A panic's message without its backtrace, else the end of the log (a build error, a timeout).
    let lines: Vec<&str> = text.lines().collect();
    let shown = match lines.iter().position(|l| l.contains(" panicked at ")) {
        Some(at) => lines[at..].iter().take_while(|l| !l.starts_with("stack backtrace")).take(20).collect(),
        None => lines[lines.len().saturating_sub(40)..].iter().collect::<Vec<_>>(),
    };
    for line in shown {
        println!("  {line}");
    }
    for input in text.lines().filter_map(|l| l.split_once("Test unit written to ")).map(|(_, p)| p.trim()) {
        println!("fuzz {target}: crashing input {input}");
    }
    false
}

/// Stops a background load thread when dropped.
struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn spawn(f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Load { stop, handle: Some(thread::spawn(move || f(flag))) }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn demo(seconds: u64) -> Result<()> {
    setup()?;
    let kstall = build_release()?;
    let dir = cache_dir().join("demo");
    // Log segments on a disk whose reads take 8 ms each, so cold reads cost what they cost on a
    // busy spinning disk (see tracer-cli/systests/tests/stalls.rs); the local disk when loop or FUSE is missing.
    let _ = std::fs::remove_dir_all(&dir);
    let disk = SlowDisk::create(&dir.join("disk"), 1024, Duration::from_millis(8))
        .inspect_err(|e| eprintln!("demo: no slow disk ({e:#}); using the local disk"))
        .ok();
    let log_dir = disk.as_ref().map_or(dir.join("broker/kafka-logs"), |d| d.mount_point.join("kafka-logs"));
    let broker = DemoBroker::start_with_log_dir(&dir.join("broker"), &log_dir)?;
    eprintln!("demo: Kafka {} broker pid {} on {}, logs in {}", broker.version.as_str(), broker.pid(), broker.bootstrap(), log_dir.display());
    eprintln!("demo: writing 96 MiB to topic `cold`, then dropping it from the page cache");
    broker.produce("cold", 96 << 20, 1024)?;
    broker.produce("hot", 64 << 10, 200)?;
    broker.evict_from_page_cache("cold")?;
    let broker = Arc::new(broker);

    // A service producing to `hot` synchronously: one small acks=1 request at a time.
    let (bootstrap, handshake) = (broker.bootstrap(), broker.version.handshake());
    let producer = Load::spawn(move |stop| {
        let Ok(mut producer) = SyncProducer::connect(&bootstrap, "orders-service", handshake) else { return };
        while !stop.load(Ordering::Relaxed) {
            if producer.produce("hot", b"order-created {\"id\": 42, \"amount\": 17}").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    // A tail consumer on `hot`: Fetches served from the page cache.
    let mut tail = broker.kcat().args(["-C", "-t", "hot", "-o", "end", "-q"]).stdout(Stdio::null()).spawn()?;
    // A backfill job re-reading `cold` from offset 0, the data evicted again each pass.
    let b = broker.clone();
    let cold_reader = Load::spawn(move |stop| {
        thread::sleep(Duration::from_secs(3));
        while !stop.load(Ordering::Relaxed) {
            let read = b
                .kcat()
                .args(["-C", "-t", "cold", "-o", "beginning", "-e", "-q", "-X", "client.id=analytics-backfill"])
                .stdout(Stdio::null())
                .status();
            if !read.is_ok_and(|s| s.success()) || b.evict_from_page_cache("cold").is_err() {
                break;
            }
        }
    });

    eprintln!("demo: kstall watch --pid {} --duration {seconds}s", broker.pid());
    let status = Command::new(&kstall)
        .args(["watch", "--pid", &broker.pid().to_string(), "--duration", &format!("{seconds}s")])
        .status()
        .context("cannot run kstall")?;
    let _ = tail.kill();
    let _ = tail.wait();
    drop(cold_reader);
    drop(producer);
    // The broker goes before its disk.
    drop(broker);
    drop(disk);
    if !status.success() {
        bail!("kstall watch failed: {status}");
    }
    Ok(())
}

/// CPU seconds (user + system) and resident bytes of a process, from /proc.
fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    Some((ticks / hz.max(1) as f64, pages * page.max(1) as u64))
}

fn bench_export(minutes: f64, rate: u32) -> Result<()> {
    setup()?;
    let kstall = build_release()?;
    let broker = Arc::new(DemoBroker::start(&cache_dir().join("bench"))?);
    broker.produce("hot", 64 << 10, 200)?;
    let (bootstrap, handshake) = (broker.bootstrap(), broker.version.handshake());
    let producer = Load::spawn(move |stop| {
        let Ok(mut producer) = SyncProducer::connect(&bootstrap, "bench-producer", handshake) else { return };
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // Paced: request n goes out at n / rate seconds.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
            if producer.produce("hot", &[b'b'; 200]).is_err() {
                break;
            }
            sent += 1;
        }
    });
    let mut tail = broker.kcat().args(["-C", "-t", "hot", "-o", "end", "-q"]).stdout(Stdio::null()).spawn()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut exporter = Command::new(&kstall)
        .args(["export", "--pid", &broker.pid().to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()?;
    thread::sleep(Duration::from_secs(3));
    let scrape = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    let produce_count = |body: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with("kstall_request_duration_seconds_count{api=\"Produce\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (cpu0, rss0) = usage(exporter.id()).context("kstall export is not running")?;
    let count0 = scrape().map(|b| produce_count(&b)).unwrap_or(0.0);
    let started = Instant::now();
    let mut rss_max = rss0;
    let mut scrapes = 0;
    println!("bench-export: {minutes} min, paced Produce at {rate}/s + tail consumer; sample every 60 s");
    println!("  minute   cpu%   rss MiB");
    let mut last = (Instant::now(), cpu0);
    while started.elapsed() < Duration::from_secs_f64(minutes * 60.0) {
        thread::sleep(Duration::from_secs(5));
        if scrape().is_some() {
            scrapes += 1;
        }
        let (cpu, rss) = usage(exporter.id()).context("kstall export died")?;
        rss_max = rss_max.max(rss);
        if last.0.elapsed() >= Duration::from_secs(60) {
            let pct = (cpu - last.1) / last.0.elapsed().as_secs_f64() * 100.0;
            println!("  {:>6.1} {:>6.2} {:>9.1}", started.elapsed().as_secs_f64() / 60.0, pct, rss as f64 / 1048576.0);
            last = (Instant::now(), cpu);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, rss1) = usage(exporter.id()).context("kstall export died")?;
    let count1 = scrape().map(|b| produce_count(&b)).unwrap_or(0.0);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(exporter.id() as i32, libc::SIGTERM) };
    let _ = exporter.wait();
    let _ = tail.kill();
    let _ = tail.wait();
    drop(producer);
    println!(
        "bench-export: {:.0} Produce/s traced ({:.0} in {:.0} s), {} scrapes; kstall CPU {:.2}% of one core; RSS start {:.1} MiB, max {:.1} MiB, end {:.1} MiB",
        (count1 - count0) / elapsed,
        count1 - count0,
        elapsed,
        scrapes,
        (cpu1 - cpu0) / elapsed * 100.0,
        rss0 as f64 / 1048576.0,
        rss_max as f64 / 1048576.0,
        rss1 as f64 / 1048576.0
    );
    Ok(())
}

fn bench(repeats: usize, requests: u64) -> Result<()> {
    setup()?;
    let kstall = build_release()?;
    // The load runs from a release build too: less user time around each syscall, less noise.
    run(cargo().args(["build", "--release", "--package", "xtask"]))?;
    let dir = cache_dir().join("bench");
    let _ = std::fs::remove_dir_all(&dir);
    let options = xtask::bench::BenchOptions {
        kstall: kstall.clone(),
        load: release_binary("xtask"),
        scratch: dir.join("load"),
        repeats,
        requests,
    };
    xtask::bench::run(&options)?;
    xtask::bench::real_broker(&kstall, &dir.join("broker"), repeats.min(4))
}

fn broker_until_ctrl_c() -> Result<()> {
    setup()?;
    let broker = DemoBroker::start(&cache_dir().join("broker"))?;
    println!(
        "Kafka {} broker pid {} on {} (log dirs {}); press Enter to stop it",
        broker.version.as_str(),
        broker.pid(),
        broker.bootstrap(),
        broker.log_dir.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        flag.store(true, Ordering::Relaxed);
    });
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn kafka_versions() -> String {
    kafka::VERSIONS.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `--kafka VERSION` anywhere: the broker the demo, `broker` and the tests start.
    if let Some(at) = args.iter().position(|a| a == "--kafka") {
        let Some(version) = args.get(at + 1).cloned() else {
            eprintln!("xtask: --kafka needs a version ({})", kafka_versions());
            return ExitCode::from(2);
        };
        let Some(version) = KafkaVersion::parse(&version) else {
            eprintln!("xtask: --kafka {version}: none of the versions setup caches ({})", kafka_versions());
            return ExitCode::from(2);
        };
        // SAFETY: single-threaded still; the tests and brokers started later read it.
        unsafe { std::env::set_var("KSTALL_KAFKA", version.as_str()) };
        args.drain(at..at + 2);
    }
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup().and_then(|_| build_release().map(|_| ())),
        Some("dist") => setup().and_then(|_| xtask::dist::dist().map(drop)),
        Some("package") => xtask::package::package_command(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("demo") => {
            let seconds = args.get(1).and_then(|s| s.trim_end_matches('s').parse().ok()).unwrap_or(30);
            demo(seconds)
        }
        Some("broker") => broker_until_ctrl_c(),
        Some("bench") => {
            let repeats = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
            let requests = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
            bench(repeats, requests)
        }
        Some("futex-loop") => {
            // Another process on the host making untraced syscalls (the bench's bystander).
            let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
            kstall_testbed::synthetic_broker::pin_to_cpu_from_last(0);
            println!("done {} {n}", kstall_testbed::synthetic_broker::futex_wakes(n).as_nanos());
            Ok(())
        }
        Some("synthetic-broker") => match args.get(2) {
            Some(dir) => kstall_testbed::synthetic_broker::main(Path::new(dir)),
            None => Err(anyhow::anyhow!("usage: synthetic-broker kafka.Kafka DIR")),
        },
        Some("stand-in") => match args.get(2) {
            Some(dir) => kstall_testbed::stand_in::main(Path::new(dir), args.get(3).map(Path::new)),
            None => Err(anyhow::anyhow!("usage: stand-in kafka.Kafka DIR [READAHEAD_DIR]")),
        },
        Some("kernel-check") => kernel_check_here(&args),
        Some("arm64-check") => arm64_check(&args[1..]),
        // With KSTALL set, that binary (a static one from `dist`, say) instead of a fresh build.
        Some("matrix") => match std::env::var_os("KSTALL") {
            Some(kstall) => matrix_tests(Path::new(&kstall), &args[1..]).map(drop),
            None => build_release().and_then(|kstall| matrix_tests(&kstall, &args[1..])).map(drop),
        },
        Some("bench-export") => {
            let minutes = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
            let rate = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
            bench_export(minutes, rate)
        }
        _ => {
            eprintln!("usage: cargo xtask <setup|build|dist|test [--quick]|demo [SECONDS]|broker|bench [REPEATS] [REQUESTS]|bench-export [MINUTES] [RATE]|matrix [LINE...]|kernel-check>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
