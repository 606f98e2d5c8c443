//! `cargo xtask <command>`:
//!   setup   install the BPF toolchain, test tools and the Kafka distribution (idempotent)
//!   build   setup, then build kstall (release)
//!   test    setup, then run every test (unit, real-broker integration, bad input)
//!   demo    setup, build, start a real Kafka 0.9 broker on a slow disk with a synchronous
//!           producer, a tail consumer and a cold reader, run `kstall watch` on it for 30 s,
//!           stop everything
//!   broker  start the demo broker and keep it running until Enter (for trying kstall by hand)
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xtask::{
    cache_dir,
    kafka::{DemoBroker, SyncProducer},
    run,
    setup::setup,
    slow_disk::SlowDisk,
    workspace_root,
};

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn build_release() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "--package", "kstall"]))?;
    Ok(workspace_root().join("target/release/kstall"))
}

/// Runs every test target (no doc tests: there are none) and ends with one plain total line.
fn test(extra: &[String]) -> Result<()> {
    setup()?;
    let started = Instant::now();
    let mut child = cargo()
        .args(["test", "--workspace", "--lib", "--bins", "--tests"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()?;
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
    println!("xtask test: cargo test took {:.0}s", started.elapsed().as_secs_f64());
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
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
    // busy spinning disk (see tests/stalls.rs); the local disk when loop or FUSE is missing.
    let _ = std::fs::remove_dir_all(&dir);
    let disk = SlowDisk::create(&dir.join("disk"), 1024, Duration::from_millis(8))
        .inspect_err(|e| eprintln!("demo: no slow disk ({e:#}); using the local disk"))
        .ok();
    let log_dir = disk.as_ref().map_or(dir.join("broker/kafka-logs"), |d| d.mount_point.join("kafka-logs"));
    let broker = DemoBroker::start_with_log_dir(&dir.join("broker"), &log_dir)?;
    eprintln!("demo: Kafka 0.9.0.1 broker pid {} on {}, logs in {}", broker.pid(), broker.bootstrap(), log_dir.display());
    eprintln!("demo: writing 96 MiB to topic `cold`, then dropping it from the page cache");
    broker.produce("cold", 96 << 20, 1024)?;
    broker.produce("hot", 64 << 10, 200)?;
    broker.evict_from_page_cache("cold")?;
    let broker = Arc::new(broker);

    // A service producing to `hot` synchronously: one small acks=1 request at a time.
    let bootstrap = broker.bootstrap();
    let producer = Load::spawn(move |stop| {
        let Ok(mut producer) = SyncProducer::connect(&bootstrap, "orders-service") else { return };
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

fn broker_until_ctrl_c() -> Result<()> {
    setup()?;
    let broker = DemoBroker::start(&cache_dir().join("broker"))?;
    println!("broker pid {} on {} (log dirs {}); press Enter to stop it", broker.pid(), broker.bootstrap(), broker.log_dir.display());
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup().and_then(|_| build_release().map(|_| ())),
        Some("test") => test(&args[1..]),
        Some("demo") => {
            let seconds = args.get(1).and_then(|s| s.trim_end_matches('s').parse().ok()).unwrap_or(30);
            demo(seconds)
        }
        Some("broker") => broker_until_ctrl_c(),
        _ => {
            eprintln!("usage: cargo xtask <setup|build|test|demo [SECONDS]|broker>");
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
