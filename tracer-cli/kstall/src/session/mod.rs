//! One tracing session, shared by every presenter: check, discover, attach, then drain and
//! refresh the aggregation core until Ctrl-C, SIGTERM, the end of the duration, or the
//! broker's exit; then detach and hand over the final summary.
pub mod attach;
pub mod discover;
pub mod files;
pub mod follow;
pub mod record;
pub mod tracefs;

use std::{
    collections::{BTreeSet, HashMap},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use kstall_core::{
    aggregate::{KernelSide, Snapshot, Taken},
    broker::Broker,
    kernel::{Event, KernelCheck},
    listeners::BrokerConfig,
    report::Host,
    summary::Summary,
    timeline::Timeline,
};

use self::{attach::Probes, discover as discovery, files::FileNames, record::Core};
use crate::stop;

/// How often request and stall records are taken from the kernel's ring buffer.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Below this, ordinary socket calls would be reported as stalls by the thousand.
const MIN_STALL_THRESHOLD: Duration = Duration::from_micros(100);

#[derive(Clone, Copy)]
pub struct SessionOptions {
    pub pid: Option<u32>,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub stall_threshold: Duration,
}

/// Runs jcmd in the background: at start, and again (at most every RERUN) while live threads
/// with ambiguous comms lack a JVM name, so threads that appear later are named too.
struct JvmNames {
    broker: Broker,
    pending: Option<Receiver<Result<HashMap<u32, String>>>>,
    last_start: Instant,
    gave_up: bool,
}

/// How long the start waits for the JVM's thread names when comms cannot tell the roles.
const NAMES_AT_START: Duration = Duration::from_secs(5);
/// Topic names are read again at most this often (a directory listing per log dir).
const TOPIC_NAMES_EVERY: Duration = Duration::from_secs(10);

impl JvmNames {
    const RERUN: Duration = Duration::from_secs(30);

    fn start(broker: Broker) -> JvmNames {
        let mut names =
            JvmNames { broker, pending: None, last_start: Instant::now(), gave_up: false };
        names.spawn();
        names
    }

    fn spawn(&mut self) {
        let (tx, rx) = mpsc::channel();
        let broker = self.broker.clone();
        std::thread::spawn(move || tx.send(discovery::jvm_thread_names(&broker)));
        self.pending = Some(rx);
        self.last_start = Instant::now();
    }

    /// Hands finished results to the aggregator; `wait` bounds how long to wait for one.
    fn poll(&mut self, agg: &mut Core, wait: Duration) {
        let Some(rx) = &self.pending else { return };
        let result = match rx.recv_timeout(wait) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => return,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(anyhow::anyhow!("jcmd thread ended")),
        };
        self.pending = None;
        match result {
            Ok(names) => agg.add_jvm_names(names),
            // Thread names then come from comm and behaviour; the summary says which.
            Err(_) => {
                self.gave_up = true;
                agg.release_held();
            }
        }
    }

    /// A jcmd is running.
    fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    fn maybe_rerun(&mut self, threads_needing_names: usize) {
        if !self.gave_up && self.pending.is_none() && threads_needing_names > 0 && self.last_start.elapsed() > Self::RERUN {
            self.spawn();
        }
    }
}

/// SIGINT or SIGTERM came before the probes were attached: nothing was traced.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by a signal while attaching: nothing was traced")
    }
}

impl std::error::Error for Interrupted {}

pub struct Session {
    pub broker: Broker,
    tracer: Tracer,
    names: JvmNames,
    opts: SessionOptions,
}

/// The probes and the analysis core they feed, with what the core needs read for it.
struct Tracer {
    probes: Probes,
    agg: Core,
    files: FileNames,
    started: Instant,
    /// Where topic ids get their names (the broker's log directories), and when last read.
    topics: Option<(Broker, BrokerConfig)>,
    topics_read_at: Option<Instant>,
}

impl Tracer {
    /// Takes every record the kernel has queued to the core, naming each stall's file now,
    /// while the fd its call used is still open.
    fn drain(&mut self) {
        let Tracer { probes, agg, files, .. } = self;
        probes.drain_events(|event| {
            let file = match &event {
                Event::Stall(stall) => files.of_stall(stall),
                Event::Request(_) => None,
            };
            agg.ingest(event, file)
        });
    }

    /// Reads the kernel's histograms and counters and the broker's threads, does what the core
    /// asks in the kernel (network threads to follow, exited threads' entries to take), and
    /// returns the summary of everything since attach.
    fn refresh(&mut self) -> Result<Summary> {
        let pid = self.agg.broker_pid();
        // At the first refresh, then again (at most every TOPIC_NAMES_EVERY) when a request named
        // a topic id the names lack: a topic created since.
        let due = self.topics_read_at.is_none_or(|at| self.agg.needs_topic_names() && at.elapsed() >= TOPIC_NAMES_EVERY);
        if let (true, Some((broker, config))) = (due, &self.topics) {
            self.agg.set_topic_names(discovery::topic_names(broker, config));
            self.topics_read_at = Some(Instant::now());
        }
        let (histograms, histograms_unread) = {
            let _unpreempted = Unpreempted::now();
            self.probes.histograms()?
        };
        let comms = discovery::thread_comms(pid);
        // A listing of /proc/PID/task taken while threads exit can skip live ones: each thread
        // missing from it is asked for by tid before the core may call it gone.
        let unlisted: BTreeSet<u32> = histograms.iter().map(|(k, _)| k.tid).filter(|tid| !comms.contains_key(tid)).collect();
        let alive_unlisted = unlisted.into_iter().filter(|&tid| discovery::thread_is_alive(pid, tid)).collect();
        let counters = {
            let _unpreempted = Unpreempted::now();
            self.probes.counters()?
        };
        let probe_runs_skipped = self.probes.probe_runs_skipped();
        let observed = self.agg.observe(Snapshot {
            histograms,
            histograms_unread,
            comms,
            alive_unlisted,
            counters,
            probe_runs_skipped,
            elapsed: self.started.elapsed(),
        });
        let taken = {
            let _unpreempted = Unpreempted::now();
            self.probes.set_network_threads(&observed.network_threads)?;
            if observed.exited.is_empty() { Taken::default() } else { self.probes.take_histograms(&observed.exited)? }
        };
        Ok(self.agg.summarize(observed, taken))
    }
}

/// While alive, the calling thread runs SCHED_FIFO at the lowest real-time priority, so no
/// broker thread preempts it. A bpf() map syscall marks its CPU as running BPF
/// (bpf_prog_active) with only migration disabled: on a kernel with full or lazy preemption
/// (Debian sid's 7.x kernel), a broker thread that preempts it there runs with every probe
/// skipped: one CI run of the kernel matrix counted 1232 of 1233 Produce requests so. Without
/// CAP_SYS_NICE (or in a cgroup with no real-time budget) the policy stays as it was; skipped
/// runs are counted either way (`Lost::probe_runs_skipped`).
struct Unpreempted {
    previous: Option<(libc::c_int, libc::sched_param)>,
}

impl Unpreempted {
    fn now() -> Unpreempted {
        // SAFETY: scheduling calls on the calling thread (0) with valid pointers.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            let mut param = libc::sched_param { sched_priority: 0 };
            if policy < 0 || libc::sched_getparam(0, &mut param) != 0 {
                return Unpreempted { previous: None };
            }
            let fifo = libc::sched_param { sched_priority: 1 };
            let raised = policy != libc::SCHED_FIFO && libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) == 0;
            Unpreempted { previous: raised.then_some((policy, param)) }
        }
    }
}

impl Drop for Unpreempted {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.previous {
            // SAFETY: as in `now`.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// `kstall check`: loads and attaches every probe the way a trace would, pointed at no process
/// (no tgid is u32::MAX: the programs run but do nothing), then detaches: the verifier's
/// verdict, not a guess from the version number. `hold`: stays attached until a stop is
/// requested, saying so on stderr.
pub fn check_kernel(hold: bool) -> KernelCheck {
    let mut check = KernelCheck {
        kernel: attach::kernel_release(),
        arch: std::env::consts::ARCH,
        can_run: false,
        error: None,
        probes: None,
        socket_wait_measured: false,
        btf: attach::kernel_has_btf(),
    };
    match attach::check_privileges().and_then(|()| attach::attach(u32::MAX, Duration::from_millis(1))) {
        Ok(probes) => {
            check.can_run = true;
            check.socket_wait_measured = probes.status.socket_wait_measured();
            check.probes = Some(probes.status.clone());
            if hold {
                eprintln!("kstall: probes attached ({}), pointed at no process; Ctrl-C to detach", probes.status.syscall_hooks.hooks.as_str());
                while !stop::requested() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Err(e) => check.error = Some(format!("{e:#}").replace('\n', " ")),
    }
    check
}

/// How a session ended.
pub struct Ended {
    pub summary: Summary,
    pub timeline: Timeline,
    pub broker_exited: bool,
    /// The host and broker as they were at the end.
    pub host: Host,
}

/// The host's name and kernel, and the broker's Kafka version, now.
fn host(broker: &Broker) -> Host {
    Host {
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default(),
        kernel: attach::kernel_release(),
        kafka_version: discovery::kafka_version(broker),
    }
}

/// kstall's own CPU seconds (user + system) and resident bytes, for its metrics.
pub fn own_usage() -> (f64, f64) {
    let Ok(stat) = procfs::process::Process::myself().and_then(|p| p.stat()) else { return (0.0, 0.0) };
    let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    (cpu, stat.rss as f64 * procfs::page_size() as f64)
}

/// The clock bpf_ktime_get_ns() reads (CLOCK_MONOTONIC), in ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Session {
    /// Checks the options and privileges, finds the broker and attaches; says so on stderr.
    pub fn start(opts: SessionOptions) -> Result<Session> {
        if opts.stall_threshold < MIN_STALL_THRESHOLD {
            bail!(
                "--stall-threshold {} is below {}: every network-thread call would be a stall; use 1ms (the default) or more",
                humantime::format_duration(opts.stall_threshold),
                humantime::format_duration(MIN_STALL_THRESHOLD)
            );
        }
        // The broker first: a wrong --pid is said with its fix whether or not kstall runs as root.
        let broker = discovery::find_broker(opts.pid)?;
        attach::check_privileges()?;
        // jcmd runs while the probes load: modern Kafka's threads all have the comm
        // `data-plane-kafk`, so its network threads are known only by their JVM names, and the
        // kernel follows requests only on threads it knows as network threads.
        let mut names = JvmNames::start(broker.clone());
        let probes = match attach::attach(broker.pid, opts.stall_threshold) {
            Ok(probes) => probes,
            // The verifier gives up when a signal is pending (EAGAIN): that is the user's stop,
            // not an error.
            Err(_) if stop::requested() => return Err(Interrupted.into()),
            Err(e) => return Err(e),
        };
        // Which listeners the broker has and which carry controller traffic.
        let config = discovery::broker_config(&broker);
        let kernel = KernelSide { probes: probes.status.clone(), start_ns: monotonic_ns() };
        let topics = config.clone().map(|c| (broker.clone(), c));
        let agg = Core::new(broker.clone(), config, opts.stall_threshold, kernel, opts.duration);
        let mut tracer =
            Tracer { probes, agg, files: FileNames::new(broker.pid), started: Instant::now(), topics, topics_read_at: None };
        // Tells the kernel the network threads known by name now, so requests are followed from
        // the moment kstall says it is tracing: by comm (Kafka before 1.0), else by the JVM
        // names jcmd gives (about a second; bounded, and a Ctrl-C does not wait for it).
        tracer.refresh()?;
        if tracer.agg.comms_need_jvm_names() {
            let deadline = Instant::now() + NAMES_AT_START;
            while names.waiting() && Instant::now() < deadline && !stop::requested() {
                names.poll(&mut tracer.agg, Duration::from_millis(50));
            }
            tracer.refresh()?;
        }
        eprintln!(
            "kstall: tracing broker pid {} ({}): {} probes attached ({}) in {:.0} ms; Ctrl-C to stop",
            broker.pid,
            broker.main_class,
            tracer.probes.status.attached.len(),
            tracer.probes.status.syscall_hooks.hooks.as_str(),
            tracer.probes.status.attach_ms
        );
        Ok(Session { broker, tracer, names, opts })
    }

    /// Traces until the session ends, calling `on_refresh` with each interval's summary; then
    /// detaches and returns the final summary. Runs on the caller's tokio runtime.
    pub async fn run(self, mut on_refresh: impl FnMut(&Summary)) -> Result<Ended> {
        let Session { broker, mut tracer, mut names, opts } = self;
        let broker_exited = async {
            let mut tick = tokio::time::interval(opts.interval);
            tick.tick().await;
            let mut drain = tokio::time::interval(DRAIN_EVERY);
            let end = async {
                match opts.duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(end);
            loop {
                tokio::select! {
                    // The stop first: on a slow machine the timers are always ready.
                    biased;
                    _ = stop::wait() => return Ok(false),
                    _ = drain.tick() => tracer.drain(),
                    _ = tick.tick() => {
                        tracer.drain();
                        names.poll(&mut tracer.agg, Duration::ZERO);
                        if !discovery::is_alive(broker.pid) {
                            return Ok::<bool, anyhow::Error>(true);
                        }
                        // Refreshing also folds exited threads away, so do it even unseen.
                        let summary = tracer.refresh()?;
                        names.maybe_rerun(summary.threads_needing_names());
                        on_refresh(&summary);
                    }
                    _ = &mut end => return Ok(false),
                }
            }
        }
        .await?;

        // Names make the final roles exact; give a running jcmd a moment.
        names.poll(&mut tracer.agg, Duration::from_secs(3));
        tracer.agg.release_held();
        tracer.drain();
        let summary = tracer.refresh()?;
        let Tracer { probes, mut agg, .. } = tracer;
        drop(probes); // detach before presenting: the broker runs untraced from here
        if broker_exited {
            eprintln!("kstall: broker pid {} exited", broker.pid);
        }
        let host = host(&broker);
        agg.end(&host, broker_exited);
        Ok(Ended { summary, timeline: agg.timeline().clone(), broker_exited, host })
    }
}
