//! `kstall watch` in real terminals: tmux panes of 80x24 and 200x50 on the KAFKA-7504 scenario
//! (the demo broker with its log on the slow disk, reads 8 ms each; a synchronous producer; a
//! consumer, client.id `cold-reader`, reading an evicted topic from offset 0). Both panes run
//! `kstall watch` at once, attached before the cold read starts, beside a third kstall writing
//! `--format jsonl` to a file: one cold read for all three keeps the test short.
//!
//! During the cold read, each pane's screen (`tmux capture-pane -J`: a line the terminal wrapped
//! comes back joined, longer than the pane) has no line wider than the pane, the broker's pid
//! and Kafka version in the header, and the page-cache-miss finding on the line right under the
//! 4-line header (critical, or a warning when fewer than half the slowest 1% of Produce requests
//! were stalled: which one depends on how many this machine managed); `5` switches to the cold
//! reads view, which names `cold-0` and `cold-reader`. After `q` kstall exits 0 with the
//! findings on the normal screen: tmux's `alternate_on` is 0 and `stty`, run in the pane after
//! kstall, finds the tty back in canonical mode with echo.
//!
//! The jsonl file: every line parses, `elapsed_seconds` goes up line by line, and the last line
//! (the final summary, after SIGINT) names the cold reader.
//! Needs root (eBPF, loop devices, FUSE) and tmux, as CI has.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use kstall_testbed::{
    kafka::DemoBroker,
    slow_disk::SlowDisk,
    support::{ScratchDir, interrupt, kstall_bin, spawn_until_ready},
};
use serde_json::Value;

const COLD: &str = "cold";
const HOT: &str = "hot";
const COLD_READER: &str = "cold-reader";
const MISS_TITLE: &str = "Produce requests wait behind page-cache misses";
/// Lines of the view's header (broker, threads, listeners, probes): the findings come next.
const HEADER_LINES: usize = 4;
const SIZES: [(usize, usize); 2] = [(80, 24), (200, 50)];

/// A tmux server of the test's own (its socket in the scratch directory), killed on drop,
/// when a test fails too.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        Tmux { socket: dir.join("tmux.sock") }
    }

    /// Runs a tmux command; its stdout. UTF-8 forced (`-u`, and the locale): the bars and `…`
    /// would come back as `_` from a client it thinks cannot show them.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env("LANG", "C.UTF-8")
            .output()
            .expect("tmux (apt-get install tmux)");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("tmux prints UTF-8")
    }

    /// A detached session of this size running `command` in its one pane.
    fn start(&self, name: &str, (width, height): (usize, usize), command: &str) {
        self.run(&["new-session", "-d", "-s", name, "-x", &width.to_string(), "-y", &height.to_string(), command]);
    }

    /// The pane's screen, wrapped lines joined.
    fn capture(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", name])
    }

    /// The normal screen's scrollback and screen (what the alternate screen showed is in neither).
    fn history(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", name])
    }

    fn alternate_on(&self, name: &str) -> bool {
        self.run(&["display-message", "-p", "-t", name, "#{alternate_on}"]).trim() == "1"
    }

    fn send(&self, name: &str, key: &str) {
        self.run(&["send-keys", "-t", name, key]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").stderr(Stdio::null()).status();
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn session_name((width, height): (usize, usize)) -> String {
    format!("{width}x{height}")
}

/// Polls `check` every 200 ms until it gives a value; `what` and the last capture on timeout.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => panic!("{what}: not within {timeout:?}; last screen:\n{last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn assert_fits(screen: &str, (width, height): (usize, usize)) {
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines.len() <= height, "{} lines in a {height}-line pane:\n{screen}", lines.len());
    for line in lines {
        assert!(line.chars().count() <= width, "a line of {} columns in a {width}-column pane:\n{line}\n\n{screen}", line.chars().count());
    }
}

fn show(label: &str, size: (usize, usize), screen: &str) {
    let rule = "-".repeat(size.0);
    eprintln!("{label} ({}):\n{rule}\n{}\n{rule}", session_name(size), screen.trim_end_matches('\n'));
}

#[test]
fn live_view_fits_80x24_and_200x50_during_a_cold_read() {
    let scratch = ScratchDir::new("kstall-watch-tui");
    let dir = scratch.0.clone();
    let disk = SlowDisk::create(&dir.join("disk"), 256, Duration::from_millis(8)).expect("slow disk");
    let broker = DemoBroker::start_with_log_dir(&dir.join("broker"), &disk.mount_point.join("kafka-logs")).expect("start Kafka");
    // 32 MiB: a cold read of 6 to 10 s on this disk, long enough for the captures below.
    broker.produce(COLD, 32 << 20, 1024).expect("produce the cold topic");
    broker.produce(HOT, 1024, 100).expect("create the hot topic");
    assert!(broker.evict_from_page_cache(COLD).unwrap() >= 1);

    let tmux = Tmux::new(&dir);
    let pid = broker.pid().to_string();
    for size in SIZES {
        // After kstall: its exit status, then the tty's mode as kstall left it.
        let script = format!(
            "{} watch --pid {pid} --interval 500ms; echo \"kstall exited $?\"; stty -a | tr -s ' ;' '\\n' | grep -x -E -- '-?(icanon|echo)'; sleep 600",
            kstall_bin()
        );
        tmux.start(&session_name(size), size, &script);
    }
    let jsonl_path = dir.join("watch.jsonl");
    let mut jsonl_cmd = Command::new(kstall_bin());
    jsonl_cmd.args(["watch", "--pid", &pid, "--interval", "500ms", "--format", "jsonl"]);
    jsonl_cmd.stdout(std::fs::File::create(&jsonl_path).unwrap());
    let mut jsonl = spawn_until_ready(jsonl_cmd, "tracing broker pid").expect("kstall --format jsonl");
    // The view takes the alternate screen once the probes are attached.
    for size in SIZES {
        let name = session_name(size);
        wait_for("the live view", Duration::from_secs(60), || if tmux.alternate_on(&name) { Ok(()) } else { Err(tmux.capture(&name)) });
    }

    let producing = AtomicBool::new(true);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut producer = broker.sync_producer("sync-producer").expect("connect");
            while producing.load(Ordering::SeqCst) {
                producer.produce(HOT, &[b'p'; 100]).expect("produce");
            }
        });
        // A failed check below must stop the producer too, or the scope would wait for it.
        let _stop_producing = StopOnDrop(&producing);
        // A second of Produce before the cold read: without it the few requests the producer
        // gets through during the read make the slowest 1% one request, and one slow for another
        // reason (a JVM safepoint) turns the finding into a warning.
        std::thread::sleep(Duration::from_secs(1));
        let cold_read_started = Instant::now();
        let mut consumer = broker.read_from_start(COLD, COLD_READER).expect("cold consumer");

        for size in SIZES {
            let name = session_name(size);
            let screen = wait_for("the page-cache-miss finding", Duration::from_secs(60), || {
                let screen = tmux.capture(&name);
                if screen.contains(MISS_TITLE) { Ok(screen) } else { Err(screen) }
            });
            let during = consumer.try_wait().unwrap().is_none();
            show(&format!("first screen, {:.1} s into the cold read, consumer still reading: {during}", cold_read_started.elapsed().as_secs_f64()), size, &screen);
            assert_fits(&screen, size);
            let lines: Vec<&str> = screen.lines().collect();
            assert!(lines[0].contains(&format!("broker pid {pid} ")) && lines[0].contains(&format!("Kafka {}", broker.version.as_str())), "{}", lines[0]);
            let finding = lines[HEADER_LINES];
            assert!(finding.contains(MISS_TITLE), "the finding right under the header:\n{screen}");
            assert!(finding.starts_with("CRITICAL") || finding.starts_with("WARNING"), "{finding}");
            // The syscall rows come by role and listener: at 24 lines the CONTROLLER listener's
            // can fill the view before PLAINTEXT's sendfile.
            if size.1 >= 50 {
                assert!(lines.iter().any(|l| l.contains("sendfile") && l.contains("miss")), "the sendfile miss row in the first view:\n{screen}");
            }
        }
        for size in SIZES {
            let name = session_name(size);
            tmux.send(&name, "5");
            let screen = wait_for("the cold reads view", Duration::from_secs(10), || {
                let screen = tmux.capture(&name);
                if screen.contains("cold-0") && screen.contains(COLD_READER) { Ok(screen) } else { Err(screen) }
            });
            show("after key 5", size, &screen);
            assert_fits(&screen, size);
            assert!(screen.contains("Page-cache misses by topic-partition"), "{screen}");
        }
        producing.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumer.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("cold read: {:.1} s", cold_read_started.elapsed().as_secs_f64());
        let _ = consumer.kill();
        let _ = consumer.wait();
    });

    for size in SIZES {
        let name = session_name(size);
        tmux.send(&name, "q");
        let screen = wait_for("kstall's exit after q", Duration::from_secs(30), || {
            let screen = tmux.capture(&name);
            if screen.contains("kstall exited") && screen.lines().any(|l| l.ends_with("echo")) { Ok(screen) } else { Err(screen) }
        });
        show("after q", size, &screen);
        assert!(!tmux.alternate_on(&name), "the alternate screen was left");
        assert!(screen.contains("kstall exited 0"), "{screen}");
        let modes: Vec<&str> = screen.lines().filter(|l| l.ends_with("icanon") || l.ends_with("echo")).collect();
        assert_eq!(modes, ["icanon", "echo"], "the tty back in canonical mode with echo:\n{screen}");
        // The findings can be longer than an 80x24 pane: looked for in its scrollback, which the
        // view, on the alternate screen, left no line in.
        let history = tmux.history(&name);
        assert!(history.contains(&format!("Top cold reader: client.id \"{COLD_READER}\"")), "the findings printed after the view:\n{history}");
        assert!(!history.contains("q quit"), "the live view left lines behind:\n{history}");
    }

    interrupt(&jsonl);
    let status = jsonl.wait().expect("kstall exit");
    assert!(status.success(), "kstall --format jsonl: {status:?}");
    let text = std::fs::read_to_string(&jsonl_path).unwrap();
    let summaries: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a JSON line: {e}: {l}"))).collect();
    let elapsed: Vec<f64> = summaries.iter().map(|s| s["elapsed_seconds"].as_f64().unwrap()).collect();
    eprintln!("jsonl: {} lines, elapsed_seconds {:?}", summaries.len(), elapsed);
    assert!(summaries.len() >= 5, "one line per 500 ms interval, then the final one: {elapsed:?}");
    assert!(elapsed.windows(2).all(|w| w[0] < w[1]), "elapsed_seconds counts up: {elapsed:?}");
    let last = summaries.last().unwrap();
    assert_eq!(last["stalls"]["cold_readers"][0]["name"], COLD_READER, "{}", last["stalls"]["cold_readers"]);

    drop(tmux);
    broker.stop();
    drop(disk);
}
