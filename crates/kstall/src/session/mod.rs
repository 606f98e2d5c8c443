//! One tracing session, shared by every presenter: check, discover, attach, then drain and
//! refresh the aggregation core until Ctrl-C, SIGTERM, the end of the duration, or the
//! broker's exit; then detach and hand over the final summary.
pub mod attach;
pub mod discover;
pub mod tracefs;
use std::{
    collections::HashMap,
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use self::{
    attach::Probes,
    discover::{self as discovery, Broker},
};
use crate::{
    stop,
    aggregate::{Aggregator, Summary},
    timeline::Timeline,
};

/// How often request and stall records are taken from the kernel's ring buffer.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Below this, ordinary socket calls would be reported as stalls by the thousand.
const MIN_STALL_THRESHOLD: Duration = Duration::from_micros(100);

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
    fn poll(&mut self, agg: &mut Aggregator, wait: Duration) {
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
    probes: Probes,
    agg: Aggregator,
    names: JvmNames,
    opts: SessionOptions,
}

/// How a session ended.
pub struct Ended {
    pub summary: Summary,
    pub timeline: Timeline,
    pub broker_exited: bool,
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
        attach::check_privileges()?;
        let broker = discovery::find_broker(opts.pid)?;
        // jcmd runs while the probes load: modern Kafka's threads all have the comm
        // `data-plane-kafk`, so its network threads are known only by their JVM names, and the
        // kernel follows requests only on threads it knows as network threads.
        let mut names = JvmNames::start(broker.clone());
        let mut probes = match attach::attach(broker.pid, opts.stall_threshold) {
            Ok(probes) => probes,
            // The verifier gives up when a signal is pending (EAGAIN): that is the user's stop,
            // not an error.
            Err(_) if stop::requested() => return Err(Interrupted.into()),
            Err(e) => return Err(e),
        };
        // Which listeners the broker has and which carry controller traffic.
        let config = discovery::broker_config(&broker);
        let mut agg = Aggregator::new(broker.clone(), config, opts.stall_threshold);
        // Tells the kernel the network threads known by name now, so requests are followed from
        // the moment kstall says it is tracing: by comm (Kafka before 1.0), else by the JVM
        // names jcmd gives (about a second; bounded, and a Ctrl-C does not wait for it).
        agg.refresh(&mut probes)?;
        if agg.comms_need_jvm_names() {
            let deadline = Instant::now() + NAMES_AT_START;
            while names.waiting() && Instant::now() < deadline && !stop::requested() {
                names.poll(&mut agg, Duration::from_millis(50));
            }
            agg.refresh(&mut probes)?;
        }
        eprintln!(
            "kstall: tracing broker pid {} ({}): {} probes attached in {:.0} ms; Ctrl-C to stop",
            broker.pid,
            broker.main_class,
            probes.attached.len(),
            probes.attach_time.as_secs_f64() * 1e3
        );
        Ok(Session { broker, probes, agg, names, opts })
    }

    /// Traces until the session ends, calling `on_refresh` with each interval's summary; then
    /// detaches and returns the final summary.
    pub fn run(mut self, mut on_refresh: impl FnMut(&Summary)) -> Result<Ended> {
        let Session { broker, probes, agg, names, opts } = &mut self;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let broker_exited = runtime.block_on(async {
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
                    _ = drain.tick() => probes.drain_events(|e| agg.ingest(e)),
                    _ = tick.tick() => {
                        probes.drain_events(|e| agg.ingest(e));
                        names.poll(agg, Duration::ZERO);
                        if !discovery::is_alive(broker.pid) {
                            return Ok::<bool, anyhow::Error>(true);
                        }
                        // Refreshing also folds exited threads away, so do it even unseen.
                        let summary = agg.refresh(probes)?;
                        names.maybe_rerun(summary.threads_needing_names());
                        on_refresh(&summary);
                    }
                    _ = &mut end => return Ok(false),
                }
            }
        })?;

        // Names make the final roles exact; give a running jcmd a moment.
        let Session { broker, mut probes, mut agg, mut names, .. } = self;
        names.poll(&mut agg, Duration::from_secs(3));
        agg.release_held();
        probes.drain_events(|e| agg.ingest(e));
        let summary = agg.refresh(&mut probes)?;
        drop(probes); // detach before presenting: the broker runs untraced from here
        if broker_exited {
            eprintln!("kstall: broker pid {} exited", broker.pid);
        }
        Ok(Ended { summary, timeline: agg.timeline().clone(), broker_exited })
    }
}
