//! The analysis core as the session drives it, recording every input it hands the core when
//! `KSTALL_RECORD=FILE` is set (format: `kstall_core::recording`; replayed by the kstall
//! crate's replay test). Bounded: past `KSTALL_RECORD_MAX` bytes (64 MiB by default) the file
//! ends with a `truncated` line and nothing more is written.
use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    ops::Deref,
    path::PathBuf,
    time::Duration,
};

use kstall_core::{
    aggregate::{Aggregator, KernelSide, Observed, Snapshot, Taken},
    broker::Broker,
    kafka::TopicNames,
    kernel::Event,
    listeners::BrokerConfig,
    recording::Line,
    report::Host,
    summary::Summary,
};

const DEFAULT_MAX_BYTES: u64 = 64 << 20;

struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    max: u64,
}

impl Recorder {
    fn write(recorder: &mut Option<Recorder>, line: impl FnOnce() -> Line) {
        let Some(r) = recorder else { return };
        let mut text = serde_json::to_string(&line()).expect("a recording line serializes");
        text.push('\n');
        let over = r.written + text.len() as u64 > r.max;
        if over {
            text = serde_json::to_string(&Line::Truncated).expect("serializes") + "\n";
        }
        let wrote = r.out.write_all(text.as_bytes()).and_then(|_| r.out.flush());
        r.written += text.len() as u64;
        if let Err(e) = &wrote {
            eprintln!("kstall: recording to {} stopped: {e}", r.path.display());
        } else if over {
            eprintln!("kstall: recording to {} stopped at {} bytes (KSTALL_RECORD_MAX)", r.path.display(), r.max);
        }
        if over || wrote.is_err() {
            *recorder = None;
        }
    }
}

/// The aggregator, and the recording of what it was given (when asked for). Reads go through
/// `Deref`; everything that feeds it goes through here.
pub struct Core {
    agg: Aggregator,
    recorder: Option<Recorder>,
}

impl Deref for Core {
    type Target = Aggregator;

    fn deref(&self) -> &Aggregator {
        &self.agg
    }
}

impl Core {
    pub fn new(broker: Broker, config: Option<BrokerConfig>, stall_threshold: Duration, kernel: KernelSide, requested: Option<Duration>) -> Core {
        let recorder = std::env::var_os("KSTALL_RECORD").and_then(|path| {
            let path = PathBuf::from(path);
            let max = std::env::var("KSTALL_RECORD_MAX").ok().and_then(|m| m.parse().ok()).unwrap_or(DEFAULT_MAX_BYTES);
            match File::create(&path) {
                Ok(f) => Some(Recorder { path, out: BufWriter::new(f), written: 0, max }),
                Err(e) => {
                    eprintln!("kstall: cannot record to {}: {e}", path.display());
                    None
                }
            }
        });
        let mut recorder = recorder;
        Recorder::write(&mut recorder, || Line::start(&broker, config.as_ref(), stall_threshold, &kernel, requested));
        Core { agg: Aggregator::new(broker, config, stall_threshold, kernel), recorder }
    }

    pub fn ingest(&mut self, event: Event, file: Option<PathBuf>) {
        Recorder::write(&mut self.recorder, || Line::event(&event, file.as_deref()));
        self.agg.ingest(event, file);
    }

    pub fn set_topic_names(&mut self, names: TopicNames) {
        Recorder::write(&mut self.recorder, || Line::topics(&names));
        self.agg.set_topic_names(names);
    }

    pub fn add_jvm_names(&mut self, names: HashMap<u32, String>) {
        Recorder::write(&mut self.recorder, || Line::names(&names));
        self.agg.add_jvm_names(names);
    }

    pub fn release_held(&mut self) {
        Recorder::write(&mut self.recorder, || Line::Release);
        self.agg.release_held();
    }

    pub fn observe(&mut self, snapshot: Snapshot) -> Observed {
        Recorder::write(&mut self.recorder, || Line::observe(&snapshot));
        self.agg.observe(snapshot)
    }

    pub fn summarize(&mut self, observed: Observed, taken: Taken) -> Summary {
        Recorder::write(&mut self.recorder, || Line::summarize(&observed, &taken));
        self.agg.summarize(observed, taken)
    }

    /// The session ended: the host as it was then.
    pub fn end(&mut self, host: &Host, broker_exited: bool) {
        Recorder::write(&mut self.recorder, || Line::end(host, broker_exited));
        if let Some(r) = self.recorder.take() {
            eprintln!("kstall: recorded the session to {} ({} bytes)", r.path.display(), r.written);
        }
    }
}
