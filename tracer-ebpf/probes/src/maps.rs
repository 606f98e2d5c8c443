//! Every map of the probes (user space finds the ones it reads by these names, see
//! `kstall_common::map`), and the helpers that create entries too large for the 512-byte BPF
//! stack from a zeroed source.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
};
use kstall_common::{
    EVENTS_BYTES, HIST_MAX_ENTRIES, HistKey, IN_FLIGHT_MAX_ENTRIES, IN_FLIGHT_SLOTS, LatencyHist, SYSCALL_NR_LIMIT, Syscall,
    counter,
    events::{CONNECTION_SLOTS, Connection, SOCKET_SLOTS, SocketState, connection_slot},
};

use crate::inflight::InFlight;

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

/// Each traced syscall's exit program on the raw-tracepoint path, by Syscall as u8 (user space
/// fills it after loading them).
#[map]
pub(crate) static EXIT_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(Syscall::ALL.len() as u32, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Network threads by slot (tid modulo IN_FLIGHT_SLOTS): the tid, 0 when none. An array
/// because every traced call asks; a broker starts its network threads together, so their
/// tids do not share a slot.
#[map]
pub(crate) static NETWORK_THREADS: Array<u32> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

/// Connection state of the broker's network threads by fd slot (`connection_slot`): an
/// array, so following a request costs no hash or LRU operation per call.
#[map]
pub(crate) static CONNECTIONS: Array<Connection> = Array::with_max_entries(CONNECTION_SLOTS, 0);

/// Data arrival on sockets the network threads read, by socket slot (`socket_slot`): looked up
/// by every sk_data_ready on the host, so an array index, not a hash.
#[map]
pub(crate) static SOCKETS: Array<SocketState> = Array::with_max_entries(SOCKET_SLOTS, 0);

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

/// The state of connection `fd`, if its slot holds it.
#[inline(always)]
pub(crate) fn connection(fd: u32) -> Option<*mut Connection> {
    let c = CONNECTIONS.get_ptr_mut(connection_slot(fd))?;
    unsafe { (*c).is_fd(fd) }.then_some(c)
}

/// The state of connection `fd`, fresh on its first read: a slot held by another live
/// connection is taken over (counted in SLOTS_TAKEN).
#[inline(always)]
pub(crate) fn connection_or_new(fd: u32) -> Option<*mut Connection> {
    let c = CONNECTIONS.get_ptr_mut(connection_slot(fd))?;
    if unsafe { (*c).claim(fd) } {
        bump(counter::SLOTS_TAKEN);
    }
    Some(c)
}
