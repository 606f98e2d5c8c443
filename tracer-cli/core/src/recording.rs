//! A recorded session: every input the session hands the core, in the order it handed them,
//! one JSON object a line (`KSTALL_RECORD=FILE kstall ...` writes one), and the replayer that
//! drives an [`Aggregator`] through it exactly as the session did: a real trace becomes a
//! hermetic test of the whole core (see the kstall crate's replay test).
//!
//! Format version 1, one line each, tagged by `"t"`:
//! - `start`: the format version, the broker, its config, the stall threshold, the kernel side
//!   (probes, socket wait, the monotonic clock at start) and the duration asked for;
//! - `topics`: topic ids (Kafka's spelling) to names, as the session set them;
//! - `event`: one ring-buffer record as the kernel laid it out, in hex with runs of zero bytes
//!   written `~NN` (NN: their count, in hex), and the file the session named for a stall;
//! - `names`: JVM thread names from jcmd; `release`: held records let through;
//! - `observe`: one refresh's snapshot (histogram entries with their non-zero buckets only);
//! - `summarize`: what the session asked the kernel to take, and what it took;
//! - `end`: the host and whether the broker exited; `truncated`: the recorder's bound was hit.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use kstall_common::{BUCKETS, HistKey, LatencyHist, counter};
use serde::{Deserialize, Serialize};

use crate::{
    aggregate::{Aggregator, KernelSide, Observed, Snapshot, Taken},
    broker::Broker,
    kafka::{TopicId, TopicNames},
    kernel::{Event, Evidence, EvidenceStatus, Hook, Probe, ProbeStatus, SyscallHookStatus, decode_event},
    listeners::BrokerConfig,
    report::{Host, Report},
    summary::Summary,
    timeline::Timeline,
};

/// Bumped on any change a replayer of the previous version cannot read.
pub const FORMAT_VERSION: u32 = 1;

/// One line of a recording.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Line {
    Start(Box<Start>),
    Topics { names: BTreeMap<String, String> },
    Event {
        e: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        f: Option<String>,
    },
    /// (tid, name), by tid (JSON object keys would be strings).
    Names { names: Vec<(u32, String)> },
    Release,
    Observe(Box<Observe>),
    Summarize { exited: Vec<Key>, taken: Vec<Entry>, failed: Vec<Key> },
    End { host: Host, broker_exited: bool },
    Truncated,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    pub version: u32,
    pub kstall_version: String,
    pub broker: Broker,
    pub config: Option<BrokerConfig>,
    pub stall_threshold_ns: u64,
    pub probes: Probes,
    pub start_ns: u64,
    pub requested_seconds: Option<f64>,
}

/// [`ProbeStatus`] as recorded (each evidence's cost is the code's, not the recording's).
#[derive(Debug, Serialize, Deserialize)]
pub struct Probes {
    pub syscall_hooks: SyscallHookStatus,
    pub attached: Vec<Probe>,
    pub unavailable: Vec<Hook>,
    /// (evidence, hooks in use, why missing)
    pub evidence: Vec<(Evidence, Vec<Hook>, Option<String>)>,
    pub attach_ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Observe {
    pub histograms: Vec<Entry>,
    pub unread: u64,
    /// (tid, comm), by tid.
    pub comms: Vec<(u32, String)>,
    pub alive_unlisted: Vec<u32>,
    pub counters: Vec<u64>,
    pub probe_runs_skipped: u64,
    pub elapsed_ns: u64,
}

/// A histogram key: (tid, syscall, verdict).
pub type Key = (u32, u8, u8);

/// One histogram entry: its key, its totals (count, total_ns, max_ns, bytes, pages_added,
/// blocked_ns) and its non-zero buckets as (index, count).
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry(pub Key, pub [u64; 6], pub Vec<(u16, u64)>);

fn key(k: &HistKey) -> Key {
    (k.tid, k.syscall, k.cache)
}

fn hist_key(k: Key) -> HistKey {
    HistKey { tid: k.0, syscall: k.1, cache: k.2, _pad: [0; 2] }
}

fn entry((k, h): &(HistKey, LatencyHist)) -> Entry {
    let buckets = h.buckets.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (i as u16, *n)).collect();
    Entry(key(k), [h.count, h.total_ns, h.max_ns, h.bytes, h.pages_added, h.blocked_ns], buckets)
}

fn hist_entry(e: Entry) -> Result<(HistKey, LatencyHist), String> {
    let Entry(k, [count, total_ns, max_ns, bytes, pages_added, blocked_ns], buckets) = e;
    let mut h = LatencyHist { count, total_ns, max_ns, bytes, pages_added, blocked_ns, ..LatencyHist::ZERO };
    for (i, n) in buckets {
        *h.buckets.get_mut(i as usize).ok_or_else(|| format!("bucket {i} of {BUCKETS}"))? = n;
    }
    Ok((hist_key(k), h))
}

/// The record's bytes as the kernel wrote them.
fn event_bytes(event: &Event) -> Vec<u8> {
    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a #[repr(C)] record with no hidden padding (kstall_common's
        // records_have_no_hidden_padding), so every byte is initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }
    match event {
        Event::Request(r) => bytes(r),
        Event::Stall(s) => bytes(s),
    }
}

/// Hex, with each run of 2 to 255 zero bytes written `~NN`.
fn pack(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let zeros = bytes[i..].iter().take(255).take_while(|b| **b == 0).count();
        if zeros >= 2 {
            let _ = write!(out, "~{zeros:02x}");
            i += zeros;
        } else {
            let _ = write!(out, "{:02x}", bytes[i]);
            i += 1;
        }
    }
    out
}

fn unpack(text: &str) -> Result<Vec<u8>, String> {
    let hex = |s: &str| u8::from_str_radix(s, 16).map_err(|e| format!("{s:?}: {e}"));
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let zeros = rest.starts_with('~');
        let at = zeros as usize;
        let two = rest.get(at..at + 2).ok_or_else(|| format!("cut short: {rest:?}"))?;
        let n = hex(two)?;
        if zeros {
            out.resize(out.len() + n as usize, 0);
        } else {
            out.push(n);
        }
        rest = &rest[at + 2..];
    }
    Ok(out)
}

fn by_tid(names: &HashMap<u32, String>) -> Vec<(u32, String)> {
    let sorted: BTreeMap<u32, &String> = names.iter().map(|(t, n)| (*t, n)).collect();
    sorted.into_iter().map(|(t, n)| (t, n.clone())).collect()
}

impl Line {
    /// The session started: what [`Aggregator::new`] was given.
    pub fn start(broker: &Broker, config: Option<&BrokerConfig>, stall_threshold: Duration, kernel: &KernelSide, requested: Option<Duration>) -> Line {
        let p = &kernel.probes;
        Line::Start(Box::new(Start {
            version: FORMAT_VERSION,
            kstall_version: env!("CARGO_PKG_VERSION").to_string(),
            broker: broker.clone(),
            config: config.cloned(),
            stall_threshold_ns: stall_threshold.as_nanos() as u64,
            probes: Probes {
                syscall_hooks: p.syscall_hooks.clone(),
                attached: p.attached.clone(),
                unavailable: p.unavailable.clone(),
                evidence: p.evidence.iter().map(|e| (e.evidence, e.hooks.clone(), e.missing.clone())).collect(),
                attach_ms: p.attach_ms,
            },
            start_ns: kernel.start_ns,
            requested_seconds: requested.map(|d| d.as_secs_f64()),
        }))
    }

    pub fn topics(names: &TopicNames) -> Line {
        Line::Topics { names: names.0.iter().map(|(id, name)| (id.to_string(), name.clone())).collect() }
    }

    pub fn event(event: &Event, file: Option<&Path>) -> Line {
        Line::Event { e: pack(&event_bytes(event)), f: file.map(|f| f.display().to_string()) }
    }

    pub fn names(names: &HashMap<u32, String>) -> Line {
        Line::Names { names: by_tid(names) }
    }

    pub fn observe(s: &Snapshot) -> Line {
        Line::Observe(Box::new(Observe {
            histograms: s.histograms.iter().map(entry).collect(),
            unread: s.histograms_unread,
            comms: by_tid(&s.comms),
            alive_unlisted: {
                let mut tids: Vec<u32> = s.alive_unlisted.iter().copied().collect();
                tids.sort_unstable();
                tids
            },
            counters: s.counters.to_vec(),
            probe_runs_skipped: s.probe_runs_skipped,
            elapsed_ns: s.elapsed.as_nanos() as u64,
        }))
    }

    pub fn summarize(observed: &Observed, taken: &Taken) -> Line {
        Line::Summarize {
            exited: observed.exited.iter().map(key).collect(),
            taken: taken.entries.iter().map(entry).collect(),
            failed: taken.failed.iter().map(key).collect(),
        }
    }

    pub fn end(host: &Host, broker_exited: bool) -> Line {
        Line::End { host: host.clone(), broker_exited }
    }
}

/// What a replay ends with: the session's final summary and what a report adds to it.
pub struct Replayed {
    pub summary: Summary,
    pub timeline: Timeline,
    pub host: Host,
    pub broker_exited: bool,
    pub requested_seconds: Option<f64>,
    /// Refreshes replayed.
    pub refreshes: usize,
    pub events: usize,
}

impl Replayed {
    pub fn report(self) -> Report {
        Report::new(self.summary, self.timeline, self.host, self.broker_exited, self.requested_seconds)
    }
}

/// Drives a new aggregator through a recording, line by line, as the session did.
pub fn replay(text: &str) -> Result<Replayed, String> {
    let mut agg: Option<Aggregator> = None;
    let mut requested_seconds = None;
    let mut observed: Option<Observed> = None;
    let mut last: Option<Summary> = None;
    let (mut refreshes, mut events) = (0, 0);
    for (n, text) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |e: String| format!("line {}: {e}", n + 1);
        let line: Line = serde_json::from_str(text).map_err(|e| at(e.to_string()))?;
        let line = match line {
            Line::Start(s) => {
                if s.version != FORMAT_VERSION {
                    return Err(at(format!("format version {}, this replayer reads {FORMAT_VERSION}", s.version)));
                }
                let probes = ProbeStatus {
                    syscall_hooks: s.probes.syscall_hooks,
                    attached: s.probes.attached,
                    unavailable: s.probes.unavailable,
                    evidence: s
                        .probes
                        .evidence
                        .into_iter()
                        .map(|(evidence, hooks, missing)| EvidenceStatus { evidence, hooks, missing, cost: evidence.cost() })
                        .collect(),
                    attach_ms: s.probes.attach_ms,
                };
                let kernel = KernelSide { probes, start_ns: s.start_ns };
                agg = Some(Aggregator::new(s.broker, s.config, Duration::from_nanos(s.stall_threshold_ns), kernel));
                requested_seconds = s.requested_seconds;
                continue;
            }
            other => other,
        };
        let a = agg.as_mut().ok_or_else(|| at("before the start line".into()))?;
        match line {
            Line::Start(_) => unreachable!("handled above"),
            Line::Topics { names } => {
                let names = names.into_iter().map(|(id, name)| Ok((TopicId::parse(&id).ok_or(format!("topic id {id:?}"))?, name)));
                a.set_topic_names(TopicNames(names.collect::<Result<_, String>>().map_err(at)?));
            }
            Line::Event { e, f } => {
                let event = decode_event(&unpack(&e).map_err(at)?).ok_or_else(|| at("not a record".into()))?;
                a.ingest(event, f.map(PathBuf::from));
                events += 1;
            }
            Line::Names { names } => a.add_jvm_names(names.into_iter().collect()),
            Line::Release => a.release_held(),
            Line::Observe(o) => {
                let mut counters = [0; counter::COUNT as usize];
                for (c, v) in counters.iter_mut().zip(o.counters) {
                    *c = v;
                }
                let snapshot = Snapshot {
                    histograms: o.histograms.into_iter().map(hist_entry).collect::<Result<_, _>>().map_err(at)?,
                    histograms_unread: o.unread,
                    comms: o.comms.into_iter().collect(),
                    alive_unlisted: o.alive_unlisted.into_iter().collect(),
                    counters,
                    probe_runs_skipped: o.probe_runs_skipped,
                    elapsed: Duration::from_nanos(o.elapsed_ns),
                };
                observed = Some(a.observe(snapshot));
            }
            Line::Summarize { exited, taken, failed } => {
                let o = observed.take().ok_or_else(|| at("summarize without observe".into()))?;
                let replayed: Vec<Key> = o.exited.iter().map(key).collect();
                if replayed != exited {
                    return Err(at(format!("the core now asks to take {replayed:?}, the session took {exited:?}")));
                }
                let taken = Taken {
                    entries: taken.into_iter().map(hist_entry).collect::<Result<_, _>>().map_err(at)?,
                    failed: failed.into_iter().map(hist_key).collect(),
                };
                last = Some(a.summarize(o, taken));
                refreshes += 1;
            }
            Line::End { host, broker_exited } => {
                let summary = last.ok_or_else(|| at("no refresh before the end".into()))?;
                return Ok(Replayed { summary, timeline: a.timeline().clone(), host, broker_exited, requested_seconds, refreshes, events });
            }
            Line::Truncated => return Err(at("the recording was cut at its size bound".into())),
        }
    }
    Err("no end line: the recording is incomplete (kstall killed?)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_pack_and_unpack() {
        let mut bytes = vec![1, 0, 2, 0, 0, 0, 0xff];
        bytes.extend([0; 600]);
        bytes.push(7);
        let packed = pack(&bytes);
        assert_eq!(packed, "010002~03ff~ff~ff~5a07");
        assert_eq!(unpack(&packed).unwrap(), bytes);
        assert!(unpack("0").is_err() && unpack("~").is_err() && unpack("zz").is_err());
    }
}
