//! What kstall knows of the kernel it runs on: which optional evidence it gathers there and
//! how, and the records the kernel sends.
use kstall_common::events::{RequestEvent, StallEvent, kind};
use serde::{Deserialize, Serialize};

/// Evidence that came with later kernels than kstall's floor. Each has tracepoints on recent
/// kernels and, for some, kprobes on older ones that allow kprobes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A call looked a file up in the page cache.
    FileLookups,
    /// A call needed a page that was absent (sync), or started a prefetch after a hit (async).
    Readahead,
    /// A network thread's read is a socket read, and which socket.
    SocketReads,
    /// Data reached a socket a network thread reads.
    DataArrival,
}

impl Evidence {
    pub const ALL: [Evidence; 4] = [Evidence::FileLookups, Evidence::Readahead, Evidence::SocketReads, Evidence::DataArrival];

    pub const fn as_str(self) -> &'static str {
        match self {
            Evidence::FileLookups => "file_lookups",
            Evidence::Readahead => "readahead",
            Evidence::SocketReads => "socket_reads",
            Evidence::DataArrival => "data_arrival",
        }
    }

    /// What the numbers lose on a kernel without it.
    pub const fn cost(self) -> &'static str {
        match self {
            Evidence::FileLookups => "read/readv page-cache hits get no verdict (sendfile and pread64 still do); stalls name their file by the fd, and a read() stall has no byte range",
            Evidence::Readahead => "a miss is known by its wait for page I/O or by pages added in the range a sendfile or pread64 asked for; pages an async prefetch adds elsewhere are not blamed on the call",
            Evidence::SocketReads => "no socket wait; eventfd wakeups go through the Kafka parser (they never parse)",
            Evidence::DataArrival => "no socket wait: request latency starts at the read, so a Produce that waited in its socket behind a stall is joined from its read",
        }
    }
}

/// How the traced syscalls' entries and exits are hooked. Best first: each kernel gets the
/// first it allows (`cargo xtask bench` measures what each costs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyscallHooks {
    /// fentry/fexit on each traced syscall's kernel function (`__x64_sys_read`): only those
    /// syscalls run a program, and no other task's syscalls are slowed (BTF, 5.5+ on x86_64,
    /// on arm64 only with ftrace direct calls, where the kernel allows them).
    Fentry,
    /// Raw tracepoints `sys_enter`/`sys_exit`: no perf record per event, but every syscall of
    /// every task takes the tracing path and runs the (filtering) program.
    RawTracepoint,
    /// The classic `syscalls:sys_{enter,exit}_*` tracepoints: every kernel with
    /// CONFIG_FTRACE_SYSCALLS; like raw tracepoints for other tasks, plus a perf record per event.
    Tracepoint,
}

impl SyscallHooks {
    pub const BEST_FIRST: [SyscallHooks; 3] = [SyscallHooks::Fentry, SyscallHooks::RawTracepoint, SyscallHooks::Tracepoint];

    /// The name `KSTALL_HOOKS` takes and the JSON shows.
    pub const fn as_str(self) -> &'static str {
        match self {
            SyscallHooks::Fentry => "fentry",
            SyscallHooks::RawTracepoint => "raw_tracepoint",
            SyscallHooks::Tracepoint => "tracepoint",
        }
    }

    pub fn from_name(name: &str) -> Option<SyscallHooks> {
        SyscallHooks::BEST_FIRST.into_iter().find(|h| h.as_str() == name)
    }
}

/// The syscall hooks in use, and why each better one is not.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyscallHookStatus {
    pub hooks: SyscallHooks,
    /// (better mechanism, why not), best first.
    pub not_used: Vec<(SyscallHooks, String)>,
}

impl std::fmt::Display for SyscallHookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.hooks.as_str())?;
        for (hooks, why) in &self.not_used {
            write!(f, "; not {}: {why}", hooks.as_str())?;
        }
        Ok(())
    }
}

/// How a BPF program is attached at a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// A classic tracepoint (`category:event` in tracefs): a perf record per event.
    Tracepoint,
    /// A raw tracepoint: the event's arguments as the kernel passes them, no perf record.
    RawTracepoint,
    /// A kprobe on a kernel function's entry.
    Kprobe,
    /// fentry on a kernel function (BTF).
    Fentry,
    /// fexit on a kernel function (BTF).
    Fexit,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [Mechanism::Tracepoint, Mechanism::RawTracepoint, Mechanism::Kprobe, Mechanism::Fentry, Mechanism::Fexit];

    /// The JSON spelling, and the Prometheus label's.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mechanism::Tracepoint => "tracepoint",
            Mechanism::RawTracepoint => "raw_tracepoint",
            Mechanism::Kprobe => "kprobe",
            Mechanism::Fentry => "fentry",
            Mechanism::Fexit => "fexit",
        }
    }
}

/// A hook: a kernel attach point.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hook {
    pub mechanism: Mechanism,
    /// A tracepoint's `category:event` (as tracefs lists it); a raw tracepoint's name (the
    /// kernel's, without category); the kernel function of a kprobe, fentry or fexit.
    pub target: String,
}

impl Hook {
    pub fn tracepoint(category: &str, event: &str) -> Hook {
        Hook { mechanism: Mechanism::Tracepoint, target: format!("{category}:{event}") }
    }

    pub fn new(mechanism: Mechanism, target: impl Into<String>) -> Hook {
        Hook { mechanism, target: target.into() }
    }
}

/// For people: a tracepoint as `category:event`, the others as `mechanism:target`
/// (`kprobe:tcp_recvmsg`, `raw_tracepoint:sys_exit`, `fexit:__x64_sys_read`).
impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mechanism {
            Mechanism::Tracepoint => f.write_str(&self.target),
            m => write!(f, "{}:{}", m.as_str(), self.target),
        }
    }
}

/// A probe: one of kstall's BPF programs, attached at a hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Probe {
    #[serde(flatten)]
    pub hook: Hook,
    /// The program's name in kstall's probes object.
    pub program: String,
}

/// How one kind of evidence is gathered on this kernel, or why it is not.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct EvidenceStatus {
    pub evidence: Evidence,
    /// The hooks in use; empty when none.
    pub hooks: Vec<Hook>,
    /// Why it is missing, when it is.
    pub missing: Option<String>,
    /// What the numbers lose without it.
    pub cost: &'static str,
}

impl EvidenceStatus {
    pub fn available(&self) -> bool {
        self.missing.is_none()
    }

    /// Its hooks for people: `readahead:page_cache_sync_ra, kprobe:tcp_recvmsg`.
    pub fn hooks_text(&self) -> String {
        self.hooks.iter().map(Hook::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// What the probes are on this kernel, as the session attached them (once): how the syscalls
/// are hooked, every probe, what is missing. `kstall check`, the summary (and so the report),
/// the live header and /metrics all read this one.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ProbeStatus {
    /// How the traced syscalls are hooked on this kernel, and why not better.
    pub syscall_hooks: SyscallHookStatus,
    /// Every probe attached (tail-called programs, which have no hook of their own, are not).
    pub attached: Vec<Probe>,
    /// Optional tracepoints this kernel lacks.
    pub unavailable: Vec<Hook>,
    /// How each kind of optional kernel evidence is gathered here, or why not.
    pub evidence: Vec<EvidenceStatus>,
    /// From load start to the last probe attached.
    pub attach_ms: f64,
}

impl ProbeStatus {
    /// Nothing attached (for tests).
    pub fn none() -> ProbeStatus {
        ProbeStatus {
            syscall_hooks: SyscallHookStatus { hooks: SyscallHooks::Tracepoint, not_used: Vec::new() },
            attached: Vec::new(),
            unavailable: Vec::new(),
            evidence: Vec::new(),
            attach_ms: 0.0,
        }
    }

    fn has(&self, evidence: Evidence) -> bool {
        self.evidence.iter().any(|s| s.evidence == evidence && s.available())
    }

    /// The kernel shows which socket a read takes and when its data arrived.
    pub fn socket_wait_measured(&self) -> bool {
        self.has(Evidence::SocketReads) && self.has(Evidence::DataArrival)
    }

    /// The kinds of evidence this kernel does not give.
    pub fn missing_evidence(&self) -> impl Iterator<Item = &EvidenceStatus> {
        self.evidence.iter().filter(|e| !e.available())
    }

    /// Probes attached per mechanism, in the order each first appears.
    pub fn per_mechanism(&self) -> Vec<(Mechanism, usize)> {
        let mut counts: Vec<(Mechanism, usize)> = Vec::new();
        for p in &self.attached {
            match counts.iter_mut().find(|(m, _)| *m == p.hook.mechanism) {
                Some((_, n)) => *n += 1,
                None => counts.push((p.hook.mechanism, 1)),
            }
        }
        counts
    }
}

/// What `kstall check` found: whether every probe loads and attaches here (pointed at no
/// process), and what this kernel gives.
#[derive(Clone, Debug, Serialize)]
pub struct KernelCheck {
    pub kernel: String,
    pub arch: &'static str,
    /// Every probe loaded and attached.
    pub can_run: bool,
    /// Why not, when it cannot.
    pub error: Option<String>,
    /// The probes as they attached; absent when kstall cannot run here.
    #[serde(flatten)]
    pub probes: Option<ProbeStatus>,
    pub socket_wait_measured: bool,
    /// The kernel's BTF (/sys/kernel/btf/vmlinux): fentry and fexit need it.
    pub btf: bool,
}

/// A record from the kernel's ring buffer.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Request(RequestEvent),
    Stall(StallEvent),
}

/// A ring-buffer record as the kernel wrote it; None for a record of unknown kind or size.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
        // SAFETY: the length is checked and T is plain #[repr(C)] data valid for any bytes.
        (bytes.len() >= std::mem::size_of::<T>())
            .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
    match read::<u32>(bytes)? {
        kind::REQUEST => read(bytes).map(Event::Request),
        kind::STALL => read(bytes).map(Event::Stall),
        _ => None,
    }
}

/// How the kernel-side enums are spelled in JSON (and in labels, via their `as_str`).
pub mod spelling {
    use kstall_common::{CacheResult, Syscall};
    use serde::Serializer;

    pub fn syscall<S: Serializer>(s: &Syscall, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.name())
    }

    pub fn cache<S: Serializer>(c: &CacheResult, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(c.as_str())
    }

    pub fn some_syscall<S: Serializer>(s: &Option<Syscall>, ser: S) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => syscall(s, ser),
            None => ser.serialize_none(),
        }
    }

    pub fn some_cache<S: Serializer>(c: &Option<CacheResult>, ser: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => cache(c, ser),
            None => ser.serialize_none(),
        }
    }
}
