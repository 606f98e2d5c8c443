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

/// How one kind of evidence is gathered on this kernel, or why it is not.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct EvidenceStatus {
    pub evidence: Evidence,
    /// The hooks in use (`readahead:page_cache_sync_ra`, `kprobe:tcp_recvmsg`); empty when none.
    pub hooks: Vec<String>,
    /// Why it is missing, when it is.
    pub missing: Option<String>,
    /// What the numbers lose without it.
    pub cost: &'static str,
}

impl EvidenceStatus {
    pub fn available(&self) -> bool {
        self.missing.is_none()
    }
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

