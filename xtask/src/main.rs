//! `cargo xtask <command>`:
//!   setup   install the BPF toolchain, test tools and the Kafka distribution (idempotent)
//!   build   setup, then build kstall (release)
//!   test    setup, then run every test (unit, real-broker integration, bad input)
//!   demo    setup, build, start a real Kafka 0.9 broker with a produce load and a cold
//!           reader, run `kstall watch` on it for 30 s, stop everything
//!   broker  start the demo broker and keep it running until Enter (for trying kstall by hand)
use std::{
    io::{BufRead, BufReader, Write},
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
use xtask::{cache_dir, kafka::DemoBroker, run, setup::setup, workspace_root};

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
    let broker = DemoBroker::start(&cache_dir().join("demo"))?;
    eprintln!("demo: Kafka 0.9.0.1 broker pid {} on {}", broker.pid(), broker.bootstrap());
    eprintln!("demo: writing 96 MiB to topic `cold`, then dropping it from the page cache");
    broker.produce("cold", 96 << 20, 1024)?;
    broker.produce("hot", 64 << 10, 200)?;
    broker.evict_from_page_cache("cold")?;
    let broker = Arc::new(broker);

    // A steady produce load on `hot`: one kcat producer, a message every 5 ms.
    let b = broker.clone();
    let _producer = Load::spawn(move |stop| {
        let Ok(mut child) = b.kcat().args(["-P", "-t", "hot", "-X", "linger.ms=0"]).stdin(Stdio::piped()).spawn() else { return };
        let mut stdin = child.stdin.take().expect("piped");
        while !stop.load(Ordering::Relaxed) {
            if stdin.write_all(b"order-created {\"id\": 42, \"amount\": 17}\n").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        drop(stdin);
        let _ = child.wait();
    });
    // A tail consumer on `hot`: Fetches served from the page cache.
    let mut tail = broker.kcat().args(["-C", "-t", "hot", "-o", "end", "-q"]).stdout(Stdio::null()).spawn()?;
    // A backfill consumer re-reading `cold` from offset 0, the data evicted again each pass.
    let b = broker.clone();
    let _cold_reader = Load::spawn(move |stop| {
        thread::sleep(Duration::from_secs(3));
        while !stop.load(Ordering::Relaxed) {
            if b.consume_all("cold").is_err() || b.evict_from_page_cache("cold").is_err() {
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
