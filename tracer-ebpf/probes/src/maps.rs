//! Every map of the probes (user space finds the ones it reads by these names, see
//! `kstall_common::map`), and the helpers that create entries too large for the 512-byte BPF
//! stack from a zeroed source.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use kstall_common::{
    CONNECTIONS_MAX_ENTRIES, EVENTS_BYTES, HIST_MAX_ENTRIES, HistKey, IN_FLIGHT_MAX_ENTRIES, IN_FLIGHT_SLOTS,
    LatencyHist, PENDING_MAX_ENTRIES, SOCKETS_MAX_ENTRIES, SYSCALL_NR_LIMIT, counter,
    events::{ConnKey, Connection, PendingKey, PendingRequest},
};

use crate::{
    config::{CONFIG, global},
    inflight::InFlight,
    sockets::SocketState,
};

#[map]
pub(crate) static IN_FLIGHT: Array<InFlight> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

/// Calls of threads whose slot was taken by another thread's call (tids equal modulo
/// IN_FLIGHT_SLOTS, both inside a syscall).
#[map]
pub(crate) static IN_FLIGHT_OVERFLOW: HashMap<u32, InFlight> = HashMap::with_max_entries(IN_FLIGHT_MAX_ENTRIES, 0);

/// One entry per (thread, syscall, verdict), created on first use. Preallocated: a tracing
/// program that allocates map memory at run time (BPF_F_NO_PREALLOC) makes 5.7-6.0 print a
/// kernel WARNING with a call trace at load (which taints the kernel and panics a host
/// with panic_on_warn), and is refused on PREEMPT_RT.
#[map]
pub(crate) static HISTOGRAMS: HashMap<HistKey, LatencyHist> = HashMap::with_max_entries(HIST_MAX_ENTRIES, 0);

/// Source of a zeroed histogram for inserts: too large for the 512-byte BPF stack.
#[map]
pub(crate) static ZERO_HIST: Array<LatencyHist> = Array::with_max_entries(1, 0);

/// Syscall number -> kstall_common::Syscall as u8 + 1 (0: not traced), filled by user
/// space: one program serves the entry of every traced syscall, which the kernel then
/// verifies once instead of once per syscall.
#[map]
pub(crate) static SYSCALL_IDS: Array<u8> = Array::with_max_entries(SYSCALL_NR_LIMIT, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Network threads by slot (tid modulo IN_FLIGHT_SLOTS): the tid, 0 when none. An array
/// because every traced call asks; a broker starts its network threads together, so their
/// tids do not share a slot.
#[map]
pub(crate) static NETWORK_THREADS: Array<u32> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

#[map]
pub(crate) static CONNECTIONS: LruHashMap<ConnKey, Connection> = LruHashMap::with_max_entries(CONNECTIONS_MAX_ENTRIES, 0);

#[map]
pub(crate) static PENDING: LruHashMap<PendingKey, PendingRequest> = LruHashMap::with_max_entries(PENDING_MAX_ENTRIES, 0);

#[map]
pub(crate) static SOCKETS: LruHashMap<u64, SocketState> = LruHashMap::with_max_entries(SOCKETS_MAX_ENTRIES, 0);

/// Source of a fresh connection state for inserts: too large for the BPF stack.
#[map]
pub(crate) static NEW_CONNECTION: Array<Connection> = Array::with_max_entries(1, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[inline(always)]
pub(crate) fn bump(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub(crate) fn histogram(key: &HistKey) -> Option<*mut LatencyHist> {
    if let Some(h) = HISTOGRAMS.get_ptr_mut(key) {
        return Some(h);
    }
    let zero = ZERO_HIST.get_ptr(0)?;
    let _ = HISTOGRAMS.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
    HISTOGRAMS.get_ptr_mut(key)
}

/// Connection state for a socket fd of the broker, created on its first read.
#[inline(always)]
pub(crate) fn connection(fd: u32) -> Option<*mut Connection> {
    let key = ConnKey { tgid: global(&CONFIG.target_tgid), fd };
    if let Some(c) = CONNECTIONS.get_ptr_mut(key) {
        return Some(c);
    }
    let fresh = NEW_CONNECTION.get_ptr(0)?;
    let _ = CONNECTIONS.insert(key, unsafe { &*fresh }, BPF_NOEXIST as u64);
    CONNECTIONS.get_ptr_mut(key)
}
