//! Types and arithmetic shared by kstall's kernel side (`tracer-ebpf/probes`, built for BPF) and its user
//! side (`tracer-cli/kstall`). Everything here is `#[repr(C)]` plain data or a `const fn`, so the two
//! sides agree on layout and on histogram bucketing by construction.
#![cfg_attr(not(test), no_std)]

pub mod body;
pub mod events;
pub mod exchange;
pub mod framing;

// The syscall table (Syscall::TRACED here, the numbers in tracer-cli/kstall's attach.rs) knows
// these two; another architecture needs its own entries there first.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("kstall's syscall table covers x86_64 and aarch64 only");

/// The syscalls kstall traces on the broker's threads. The discriminant is the `syscall` field
/// of [`HistKey`]; the name is the suffix of the `syscalls:sys_{enter,exit}_<name>` tracepoints.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Syscall {
    Sendfile = 0,
    Read,
    Readv,
    Pread64,
    Write,
    Writev,
    Pwrite64,
    EpollWait,
    EpollPwait,
    Fsync,
    Fdatasync,
}

impl Syscall {
    pub const ALL: [Syscall; 11] = [
        Syscall::Sendfile,
        Syscall::Read,
        Syscall::Readv,
        Syscall::Pread64,
        Syscall::Write,
        Syscall::Writev,
        Syscall::Pwrite64,
        Syscall::EpollWait,
        Syscall::EpollPwait,
        Syscall::Fsync,
        Syscall::Fdatasync,
    ];

    /// The syscalls this build's target architecture has, which kstall traces: every one on
    /// x86_64; on arm64 (and every architecture on include/uapi/asm-generic/unistd.h) all but
    /// epoll_wait, which that table never had: there the JVM and libc wait in epoll_pwait, and
    /// the kernel has no `sys_{enter,exit}_epoll_wait` tracepoints. The probes are built with
    /// `bpf_target_arch` set to the user side's architecture (aya-build), so both sides agree.
    #[cfg(not(any(target_arch = "aarch64", bpf_target_arch = "aarch64")))]
    pub const TRACED: &'static [Syscall] = &Syscall::ALL;
    #[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
    pub const TRACED: &'static [Syscall] = &[
        Syscall::Sendfile,
        Syscall::Read,
        Syscall::Readv,
        Syscall::Pread64,
        Syscall::Write,
        Syscall::Writev,
        Syscall::Pwrite64,
        Syscall::EpollPwait,
        Syscall::Fsync,
        Syscall::Fdatasync,
    ];

    /// Name as shown to users.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Sendfile => "sendfile",
            Syscall::Read => "read",
            Syscall::Readv => "readv",
            Syscall::Pread64 => "pread64",
            Syscall::Write => "write",
            Syscall::Writev => "writev",
            Syscall::Pwrite64 => "pwrite64",
            Syscall::EpollWait => "epoll_wait",
            Syscall::EpollPwait => "epoll_pwait",
            Syscall::Fsync => "fsync",
            Syscall::Fdatasync => "fdatasync",
        }
    }

    /// Name of the syscall tracepoints (`sys_enter_<this>`, `sys_exit_<this>`): the name of the
    /// kernel function, which is sys_sendfile64 for sendfile on x86_64 and arm64 alike.
    pub const fn tracepoint_name(self) -> &'static str {
        match self {
            Syscall::Sendfile => "sendfile64",
            other => other.name(),
        }
    }

    pub const fn from_u8(v: u8) -> Option<Syscall> {
        if (v as usize) < Syscall::ALL.len() { Some(Syscall::ALL[v as usize]) } else { None }
    }

    /// Calls whose positive return value is a byte count.
    pub const fn returns_bytes(self) -> bool {
        !matches!(self, Syscall::EpollWait | Syscall::EpollPwait | Syscall::Fsync | Syscall::Fdatasync)
    }

    /// Calls that read file data through the page cache when given a regular file. Only these
    /// get a hit/miss verdict: a write that appends adds new pages to the cache, which is not a miss.
    pub const fn reads_file_data(self) -> bool {
        matches!(self, Syscall::Sendfile | Syscall::Read | Syscall::Readv | Syscall::Pread64)
    }

    /// Calls that moved bytes only if they read a file: sendfile's source and pread's fd must
    /// be seekable (a socket or pipe fails with ESPIPE), while read and readv take any fd.
    pub const fn always_reads_a_file(self) -> bool {
        matches!(self, Syscall::Sendfile | Syscall::Pread64)
    }
}

/// Page-cache verdict of one call, the `cache` field of [`HistKey`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CacheResult {
    /// The call read no file data through the page cache (socket, eventfd, write, ...).
    NoFileRead = 0,
    /// File data was read and all of it was already in the page cache.
    Hit = 1,
    /// File data had to come from disk during the call (see [`classify_file_read`]).
    Miss = 2,
}

impl CacheResult {
    /// The one spelling of a verdict: JSON, metric labels, CSS classes.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheResult::NoFileRead => "none",
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
        }
    }

    pub const fn from_u8(v: u8) -> Option<CacheResult> {
        match v {
            0 => Some(CacheResult::NoFileRead),
            1 => Some(CacheResult::Hit),
            2 => Some(CacheResult::Miss),
            _ => None,
        }
    }
}

/// Kernel evidence gathered on one thread while one traced syscall ran.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallEvidence {
    /// `filemap:mm_filemap_get_pages` events: the call read a file through the page cache.
    pub get_pages: u32,
    /// `readahead:page_cache_sync_ra` events: a requested page was absent from the page cache.
    pub sync_readahead: u32,
    /// `readahead:page_cache_async_ra` events: prefetch started by a hit on a readahead mark.
    pub async_readahead: u32,
    /// Pages this thread added to the page cache (`filemap:mm_filemap_add_to_page_cache`, 1 << order).
    pub pages_added: u32,
    /// Of those, pages inside the range the call asked for (known for sendfile and pread64,
    /// which name their file offset): data that was not in the page cache when asked for.
    pub wanted_pages_added: u32,
    pub _pad: u32,
    /// Nanoseconds the thread slept in uninterruptible (D) state (`sched:sched_switch`).
    pub blocked_ns: u64,
}

/// Which optional kinds of [`CallEvidence`] this kernel reports (they came with different
/// releases; user space finds out at load time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceSources {
    /// Synchronous and asynchronous readahead: `readahead:*` tracepoints (6.18+) or kprobes on
    /// page_cache_{sync,async}_ra.
    pub readahead: bool,
    /// Page-cache lookups: `filemap:mm_filemap_get_pages` (6.12+).
    pub file_lookups: bool,
}

/// Decides hit or miss for one call from kernel evidence, never from its duration.
///
/// - a synchronous readahead means the page asked for was not in the page cache;
/// - sleeping in D state during a file read is waiting for page I/O (possibly started earlier
///   by readahead, in which case this call added no pages itself);
/// - pages added without an async readahead came from a plain miss (readahead disabled);
///   pages added *by* async readahead are a prefetch after a hit and do not make a miss;
/// - pages added inside the byte range the call asked for were absent when asked for, on any
///   kernel (a prefetch adds pages beyond it). This one does not depend on timing: on a
///   device that completes reads at once (an emulated disk) a miss may never sleep.
///
/// Without readahead evidence, pages added elsewhere cannot be told apart (a prefetch after a
/// hit adds them too), so only those in the wanted range and waiting for page I/O make a miss. Without page-cache lookups, a hit leaves no trace; a sendfile or pread64 that
/// `moved_bytes` read a file all the same (read and readv of a file then get no verdict unless
/// they miss).
pub const fn classify_file_read(
    syscall: Syscall,
    ev: &CallEvidence,
    sources: EvidenceSources,
    moved_bytes: bool,
) -> CacheResult {
    let known_file = if sources.file_lookups {
        ev.get_pages > 0
    } else {
        moved_bytes && syscall.always_reads_a_file()
    };
    let touched_file = known_file || ev.sync_readahead > 0 || ev.pages_added > 0;
    if !syscall.reads_file_data() || !touched_file {
        return CacheResult::NoFileRead;
    }
    let miss = ev.wanted_pages_added > 0
        || ev.blocked_ns > 0
        || (sources.readahead && (ev.sync_readahead > 0 || (ev.pages_added > 0 && ev.async_readahead == 0)));
    if miss { CacheResult::Miss } else { CacheResult::Hit }
}

/// Key of the in-kernel latency histograms: one histogram per thread, syscall and verdict.
/// Keying by thread (not role) lets user space decide roles later, from JVM thread names or
/// behaviour, and fold the data of exited threads away so the map stays small.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    pub tid: u32,
    pub syscall: u8,
    pub cache: u8,
    pub _pad: [u8; 2],
}

// Log-linear buckets over nanoseconds: one underflow bucket (< 2^MIN_POW ns ~ 1 us), then
// SUB_BUCKETS per power of two up to 2^MAX_POW ns (~17 s), then one overflow bucket.
pub const MIN_POW: u32 = 10;
pub const MAX_POW: u32 = 34;
pub const SUB_BITS: u32 = 3;
pub const SUB_BUCKETS: usize = 1 << SUB_BITS;
pub const BUCKETS: usize = 2 + (MAX_POW - MIN_POW) as usize * SUB_BUCKETS;

/// floor(log2(v)) for v > 0 (0 for 0), branch-only so the BPF verifier accepts it (no loops,
/// no clz instruction on BPF).
#[inline(always)]
pub const fn log2_floor(v: u64) -> u32 {
    let mut v = v;
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket of a latency in nanoseconds; always `< BUCKETS`.
#[inline(always)]
pub const fn bucket_index(ns: u64) -> usize {
    if ns < 1 << MIN_POW {
        return 0;
    }
    let pow = log2_floor(ns);
    if pow >= MAX_POW {
        return BUCKETS - 1;
    }
    let sub = ((ns >> (pow - SUB_BITS)) as usize) & (SUB_BUCKETS - 1);
    1 + (pow - MIN_POW) as usize * SUB_BUCKETS + sub
}

/// Smallest latency (ns) that falls into `bucket`.
pub const fn bucket_lower_ns(bucket: usize) -> u64 {
    if bucket == 0 {
        return 0;
    }
    if bucket >= BUCKETS - 1 {
        return 1 << MAX_POW;
    }
    let pow = MIN_POW + ((bucket - 1) / SUB_BUCKETS) as u32;
    let sub = ((bucket - 1) % SUB_BUCKETS) as u64;
    (1 << pow) + sub * (1 << (pow - SUB_BITS))
}

/// One past the largest latency (ns) of `bucket` (`u64::MAX` for the overflow bucket).
pub const fn bucket_upper_ns(bucket: usize) -> u64 {
    if bucket >= BUCKETS - 1 { u64::MAX } else { bucket_lower_ns(bucket + 1) }
}

/// Latency histogram plus per-call totals, the value of the in-kernel histogram map.
/// Written only by the thread named in its key, so plain adds are race-free.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHist {
    pub buckets: [u64; BUCKETS],
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Sum of positive return values (bytes moved for read/write/sendfile).
    pub bytes: u64,
    pub pages_added: u64,
    pub blocked_ns: u64,
}

impl LatencyHist {
    pub const ZERO: LatencyHist = LatencyHist {
        buckets: [0; BUCKETS],
        count: 0,
        total_ns: 0,
        max_ns: 0,
        bytes: 0,
        pages_added: 0,
        blocked_ns: 0,
    };

    /// Adds `other` into `self` (user space merges threads into roles with this).
    pub fn merge(&mut self, other: &LatencyHist) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.max_ns = if other.max_ns > self.max_ns { other.max_ns } else { self.max_ns };
        self.bytes += other.bytes;
        self.pages_added += other.pages_added;
        self.blocked_ns += other.blocked_ns;
    }
}

/// Indexes of the kernel's diagnostic counters (a per-CPU array).
pub mod counter {
    /// A histogram could not be created because its map was full.
    pub const HIST_MAP_FULL: u32 = 0;
    /// An in-flight syscall could not be recorded because its map was full.
    pub const IN_FLIGHT_MAP_FULL: u32 = 1;
    /// A request or stall record was dropped because the ring buffer was full.
    pub const RECORDS_LOST: u32 = 2;
    /// Connections whose bytes looked like TLS records (counted once per connection).
    pub const TLS_CONNECTIONS: u32 = 3;
    /// Reads on a network-thread socket that did not parse as Kafka framing.
    pub const FRAMING_ERRORS: u32 = 4;
    /// Requests read completely (header parsed).
    pub const REQUESTS_PARSED: u32 = 5;
    /// Responses whose request was not known (read before kstall attached, or aged out).
    pub const RESPONSES_UNMATCHED: u32 = 6;
    /// A connection's or socket's state replaced by another's that shares its slot (fds
    /// CONNECTION_SLOTS apart, or socket addresses hashed alike): its request or data
    /// arrival time is lost.
    pub const SLOTS_TAKEN: u32 = 7;
    /// A traced call returned with its thread's switch back onto a CPU unseen: the kernel did
    /// not run the sched_switch program for it, and did not count that run as skipped (seen
    /// on 6.18 beside raw syscall tracepoints). Its time away is counted from its switch out.
    pub const SWITCH_INS_MISSED: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// What user space tells the probes at load time: the broker's tgid, which optional evidence is
/// attached, the stall threshold, and field offsets read from the tracefs `format` files. One
/// read-only global in the probes' .rodata ([`global::CONFIG`]), which aya's
/// `EbpfLoader::override_global` replaces whole before the load: the sizes must match, so any
/// padding is an explicit field (the size check below fails on implicit padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Network-thread syscalls at least this slow are reported as stalls.
    pub stall_threshold_ns: u64,
    /// The broker whose threads are traced (u32::MAX for none: `kstall check`).
    pub target_tgid: u32,
    pub switch_prev_pid_offset: u32,
    pub switch_prev_state_offset: u32,
    pub switch_next_pid_offset: u32,
    /// u32::MAX: the event has no `order` field (one page per event; 5.10 has none).
    pub add_to_cache_order_offset: u32,
    pub add_to_cache_index_offset: u32,
    pub sys_exit_ret_offset: u32,
    /// Offset of a syscall's first argument in sys_enter_* records; the others follow, 8 bytes apart.
    pub sys_enter_args_offset: u32,
    /// `__syscall_nr` in sys_enter_* records.
    pub syscall_nr_offset: u32,
    pub get_pages_inode_offset: u32,
    pub get_pages_dev_offset: u32,
    pub get_pages_index_offset: u32,
    pub get_pages_last_index_offset: u32,
    /// Offset of the sock pointer in sock:sock_recv_length and sock:sk_data_ready.
    pub recv_sk_offset: u32,
    pub data_ready_sk_offset: u32,
    /// 1 when readahead evidence is attached (tracepoints or kprobes).
    pub have_readahead_events: u8,
    /// 1 when filemap:mm_filemap_get_pages is attached.
    pub have_get_pages_events: u8,
    /// 1 when socket reads are known (sock:sock_recv_length or a kprobe on tcp_recvmsg).
    pub have_sock_events: u8,
    /// log2 of the kernel's page size: 12 on x86_64; arm64 kernels are built for 4, 16 or
    /// 64 KiB pages (RHEL 8's for 64), and page-cache indexes count those pages.
    pub page_shift: u8,
}

impl Config {
    /// The probes' values until user space sets them: no broker, no optional evidence, a 1 ms
    /// stall threshold. User space reads every required event's offsets from tracefs; an
    /// absent optional event's keep these (its program is then not attached).
    pub const DEFAULT: Config = Config {
        stall_threshold_ns: 1_000_000,
        target_tgid: 0,
        switch_prev_pid_offset: 24,
        switch_prev_state_offset: 32,
        switch_next_pid_offset: 56,
        add_to_cache_order_offset: u32::MAX,
        add_to_cache_index_offset: 24,
        sys_exit_ret_offset: 16,
        sys_enter_args_offset: 16,
        syscall_nr_offset: 8,
        get_pages_inode_offset: 8,
        get_pages_dev_offset: 16,
        get_pages_index_offset: 24,
        get_pages_last_index_offset: 32,
        recv_sk_offset: 8,
        data_ready_sk_offset: 8,
        have_readahead_events: 0,
        have_get_pages_events: 0,
        have_sock_events: 0,
        page_shift: 12,
    };
}

// 8 + 15 * 4 + 4 * 1 bytes: no implicit padding, so every byte aya copies is a field's.
const _: () = assert!(core::mem::size_of::<Config>() == 72);
const _: () = assert!(core::mem::offset_of!(Config, page_shift) == 71);

/// Names of the read-only globals user space sets at load time.
pub mod global {
    /// The [`Config`](super::Config).
    pub const CONFIG: &str = "CONFIG";
}

/// Names of the kernel maps user space reads.
pub mod map {
    pub const HISTOGRAMS: &str = "HISTOGRAMS";
    pub const COUNTERS: &str = "COUNTERS";
    /// Broker threads whose socket reads are parsed as Kafka requests (user space fills it):
    /// an array indexed by tid modulo IN_FLIGHT_SLOTS, holding the tid.
    pub const NETWORK_THREADS: &str = "NETWORK_THREADS";
    pub const EVENTS: &str = "EVENTS";
    /// Syscall number -> Syscall as u8 + 1, for the entry program all syscalls share
    /// ([`SYSCALL_ID_CLOSE`] for close on the raw-tracepoint path).
    pub const SYSCALL_IDS: &str = "SYSCALL_IDS";
    /// Syscall as u8 -> its exit program, which the raw sys_exit program tail-calls.
    pub const EXIT_PROGRAMS: &str = "EXIT_PROGRAMS";
}

/// In the syscall-id map: close(2), whose entry drops the fd's connection state (the raw
/// sys_enter program sees every syscall; the tracepoint path has sys_enter_close for it).
pub const SYSCALL_ID_CLOSE: u8 = u8::MAX;

/// Syscall numbers below this are looked up in the syscall-id map (x86_64 and arm64 are
/// below 512).
pub const SYSCALL_NR_LIMIT: u32 = 1024;

/// Bound of the histogram map: threads x syscalls x verdicts actually seen on a broker is a few
/// hundred; user space deletes the entries of exited threads.
pub const HIST_MAX_ENTRIES: u32 = 8192;
/// Slots for calls in progress, one per broker thread inside a traced syscall, indexed by
/// tid modulo this power of two: an array slot costs a fraction of a hash map insert and
/// delete, which every traced syscall would pay twice.
pub const IN_FLIGHT_SLOTS: u32 = 16384;
/// A thread's slot in the in-flight and network-thread arrays.
pub const fn thread_slot(tid: u32) -> u32 {
    tid % IN_FLIGHT_SLOTS
}

/// Bound of the overflow map for threads whose slot another thread's call holds.
pub const IN_FLIGHT_MAX_ENTRIES: u32 = 4096;
/// Ring buffer for request and stall records: 4 MiB holds ~18k requests (224 bytes each with
/// the ring buffer's header), far more than one user-space drain interval (100 ms) of a busy
/// broker.
pub const EVENTS_BYTES: u32 = 4 << 20;

#[cfg(all(feature = "user", not(target_arch = "bpf")))]
mod pod {
    // SAFETY: plain #[repr(C)] data with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::HistKey {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::LatencyHist {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_floor_matches_leading_zeros() {
        for v in (1..5000u64).chain([1 << 20, (1 << 33) - 1, 1 << 33, u64::MAX, 10_000_000_000]) {
            assert_eq!(log2_floor(v), 63 - v.leading_zeros(), "v={v}");
        }
        assert_eq!(log2_floor(0), 0);
    }

    #[test]
    fn buckets_cover_1us_to_10s_with_at_least_4_per_octave() {
        const { assert!(SUB_BUCKETS >= 4) };
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1023), 0);
        assert_eq!(bucket_index(1024), 1);
        // 10 s is inside the log-linear range, not in the overflow bucket.
        assert!(bucket_index(10_000_000_000) < BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn every_value_lands_between_its_bucket_bounds() {
        let mut v = 1u64;
        while v < 1 << 36 {
            for x in [v, v + v / 3, v + v / 2, 2 * v - 1] {
                let b = bucket_index(x);
                assert!(bucket_lower_ns(b) <= x && x < bucket_upper_ns(b), "{x} in bucket {b}");
            }
            v *= 2;
        }
    }

    #[test]
    fn buckets_are_contiguous_and_increasing() {
        for b in 0..BUCKETS - 1 {
            assert_eq!(bucket_upper_ns(b), bucket_lower_ns(b + 1));
            assert!(bucket_lower_ns(b) < bucket_upper_ns(b));
            // Relative width of a log-linear bucket is at most 1/SUB_BUCKETS.
            if b > 0 {
                let width = bucket_upper_ns(b) - bucket_lower_ns(b);
                assert!(width * SUB_BUCKETS as u64 <= bucket_lower_ns(b), "bucket {b}");
            }
        }
    }

    #[test]
    fn hit_and_miss_come_from_evidence_not_time() {
        let none = CallEvidence::default();
        let cached = CallEvidence { get_pages: 1, ..none };
        let sync_miss = CallEvidence { get_pages: 1, sync_readahead: 1, pages_added: 32, blocked_ns: 8_000_000, ..none };
        let waited_for_readahead = CallEvidence { get_pages: 1, blocked_ns: 5_000, ..none };
        let prefetch_after_hit = CallEvidence { get_pages: 1, async_readahead: 1, pages_added: 64, ..none };
        let ra_disabled_miss = CallEvidence { get_pages: 1, pages_added: 1, ..none };
        let all = EvidenceSources { readahead: true, file_lookups: true };
        let verdict = |syscall, ev, sources| classify_file_read(syscall, ev, sources, true);
        assert_eq!(verdict(Syscall::Sendfile, &cached, all), CacheResult::Hit);
        assert_eq!(verdict(Syscall::Sendfile, &sync_miss, all), CacheResult::Miss);
        assert_eq!(verdict(Syscall::Sendfile, &waited_for_readahead, all), CacheResult::Miss);
        assert_eq!(verdict(Syscall::Sendfile, &prefetch_after_hit, all), CacheResult::Hit);
        assert_eq!(verdict(Syscall::Pread64, &ra_disabled_miss, all), CacheResult::Miss);
        // Socket reads and appending writes get no verdict.
        assert_eq!(verdict(Syscall::Read, &none, all), CacheResult::NoFileRead);
        assert_eq!(verdict(Syscall::Write, &ra_disabled_miss, all), CacheResult::NoFileRead);
        // A sendfile that sent nothing (EAGAIN) read no file.
        assert_eq!(classify_file_read(Syscall::Sendfile, &none, all, false), CacheResult::NoFileRead);
    }

    /// Kernels before 6.18 have no readahead tracepoints, before 6.12 no page-cache lookups:
    /// what each verdict rests on then.
    #[test]
    fn older_kernels_keep_hits_hits_and_misses_misses() {
        let none = CallEvidence::default();
        let prefetch_after_hit = CallEvidence { async_readahead: 1, pages_added: 64, ..none };
        let sync_miss = CallEvidence { sync_readahead: 1, pages_added: 32, blocked_ns: 8_000_000, ..none };
        // On an emulated disk a read may complete before the caller would sleep.
        let fast_miss = CallEvidence { sync_readahead: 1, pages_added: 16, wanted_pages_added: 16, ..none };
        // 5.10-6.11 without kprobes: neither.
        let bare = EvidenceSources { readahead: false, file_lookups: false };
        // A cached sendfile or pread64 leaves no evidence but the bytes it moved.
        assert_eq!(classify_file_read(Syscall::Sendfile, &none, bare, true), CacheResult::Hit);
        assert_eq!(classify_file_read(Syscall::Pread64, &none, bare, true), CacheResult::Hit);
        assert_eq!(classify_file_read(Syscall::Sendfile, &none, bare, false), CacheResult::NoFileRead);
        // A socket read is no file read, whatever it returned.
        assert_eq!(classify_file_read(Syscall::Read, &none, bare, true), CacheResult::NoFileRead);
        // Pages an async prefetch added do not make a miss: nothing waited for them.
        assert_eq!(classify_file_read(Syscall::Sendfile, &prefetch_after_hit, bare, true), CacheResult::Hit);
        assert_eq!(classify_file_read(Syscall::Read, &prefetch_after_hit, bare, true), CacheResult::Hit);
        // A miss waits for its page, with or without readahead evidence.
        assert_eq!(classify_file_read(Syscall::Sendfile, &sync_miss, bare, true), CacheResult::Miss);
        assert_eq!(classify_file_read(Syscall::Read, &sync_miss, bare, true), CacheResult::Miss);
        assert_eq!(classify_file_read(Syscall::Sendfile, &fast_miss, bare, true), CacheResult::Miss);
        let all = EvidenceSources { readahead: true, file_lookups: true };
        assert_eq!(classify_file_read(Syscall::Sendfile, &fast_miss, all, true), CacheResult::Miss);
        // 6.12: lookups but no readahead tracepoints (and no kprobes): the same rule.
        let lookups = EvidenceSources { readahead: false, file_lookups: true };
        let cached_prefetch = CallEvidence { get_pages: 1, ..prefetch_after_hit };
        assert_eq!(classify_file_read(Syscall::Pread64, &cached_prefetch, lookups, true), CacheResult::Hit);
    }

    /// The syscall table per architecture: x86_64 traces every syscall it always did; arm64's
    /// table (include/uapi/asm-generic/unistd.h) has no epoll_wait, so no tracepoint to attach.
    #[test]
    fn traced_syscalls_are_this_architectures() {
        let traced: Vec<&str> = Syscall::TRACED.iter().map(|s| s.tracepoint_name()).collect();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Syscall::TRACED, &Syscall::ALL[..]);
        #[cfg(target_arch = "aarch64")]
        {
            assert!(!traced.contains(&"epoll_wait"), "{traced:?}");
            assert_eq!(Syscall::TRACED.len(), Syscall::ALL.len() - 1);
        }
        // The JVM's network threads wait in one of these on either architecture.
        assert!(traced.contains(&"epoll_pwait") && traced.contains(&"sendfile64"), "{traced:?}");
        for s in Syscall::TRACED {
            assert_eq!(Syscall::from_u8(*s as u8), Some(*s));
        }
    }

    #[test]
    fn merge_keeps_max_and_sums() {
        let mut a = LatencyHist::ZERO;
        a.buckets[3] = 2;
        a.count = 2;
        a.max_ns = 50;
        let mut b = LatencyHist::ZERO;
        b.buckets[3] = 1;
        b.count = 1;
        b.max_ns = 70;
        b.pages_added = 4;
        a.merge(&b);
        assert_eq!((a.buckets[3], a.count, a.max_ns, a.pages_added), (3, 3, 70, 4));
    }
}
