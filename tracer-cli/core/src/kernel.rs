//! What kstall knows of the kernel it runs on: which optional evidence it gathers there and
//! how, and the records the kernel sends.
use kstall_common::events::{RequestEvent, StallEvent, kind};
use serde::Serialize;

/// Evidence that came with later kernels than kstall's floor. Each has tracepoints on recent
/// kernels and, for some, kprobes on older ones that allow kprobes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
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

