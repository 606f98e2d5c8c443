//! The broker's calls in flight: one slot per thread (tid modulo IN_FLIGHT_SLOTS), and the
//! overflow map for a thread whose slot another thread's call holds.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use kstall_common::{CallEvidence, thread_slot};

use crate::{
    config::{CONFIG, global},
    maps::{IN_FLIGHT, IN_FLIGHT_OVERFLOW, NETWORK_THREADS},
};

/// log2 of the kernel's page size (4 KiB on x86_64, 4, 16 or 64 KiB on arm64), as user space
/// read it at load: file offsets become the page-cache indexes of the pages they fall in.
#[inline(always)]
pub(crate) fn page_shift() -> u32 {
    global(&CONFIG.page_shift) as u32
}

/// A traced syscall in progress on one thread, and the evidence gathered during it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) start_ns: u64,
    /// Set while the thread is switched out, 0 otherwise.
    pub(crate) switched_out_ns: u64,
    pub(crate) off_cpu_ns: u64,
    pub(crate) evidence: CallEvidence,
    /// The first four syscall arguments, raw.
    pub(crate) args: [u64; 4],
    /// The socket read, from sock:sock_recv_length; 0 when none.
    pub(crate) sk: u64,
    /// When the data this read consumed reached the socket, 0 when unknown.
    pub(crate) arrival_ns: u64,
    /// Pages the call asks for (sendfile and pread64 name their offset), inclusive;
    /// wanted_last < wanted_first when unknown.
    pub(crate) wanted_first: u64,
    pub(crate) wanted_last: u64,
    /// First file the call looked up in the page cache, and the page range it asked for.
    pub(crate) inode: u64,
    pub(crate) first_index: u64,
    pub(crate) last_index: u64,
    pub(crate) dev: u32,
    pub(crate) syscall: u8,
    /// Switched out in D state (waiting for I/O), not preempted or sleeping.
    pub(crate) switched_out_blocked: u8,
    /// In an IN_FLIGHT slot: another thread's call went to IN_FLIGHT_OVERFLOW from this
    /// slot once, so lookups that miss here look there too (sticky).
    pub(crate) overflowed: u8,
    pub(crate) _pad: u8,
    /// The thread whose call this is; 0 in a free slot.
    pub(crate) tid: u32,
}

impl InFlight {
    /// The thread runs again at `now`: its time away since its switch out counts as off-CPU,
    /// and as blocked when it went out in D state. False when it was not switched out.
    #[inline(always)]
    pub(crate) fn switched_in(&mut self, now: u64) -> bool {
        if self.switched_out_ns == 0 {
            return false;
        }
        let away = now.saturating_sub(self.switched_out_ns);
        self.off_cpu_ns += away;
        if self.switched_out_blocked != 0 {
            self.evidence.blocked_ns += away;
        }
        self.switched_out_ns = 0;
        true
    }
}

/// This thread's tid when it belongs to the broker, else None.
#[inline(always)]
pub(crate) fn broker_tid() -> Option<u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == global(&CONFIG.target_tgid) { Some(pid_tgid as u32) } else { None }
}

/// The slot of thread `tid`.
#[inline(always)]
pub(crate) fn slot(tid: u32) -> Option<*mut InFlight> {
    IN_FLIGHT.get_ptr_mut(thread_slot(tid))
}

#[inline(always)]
pub(crate) fn is_network_thread(tid: u32) -> bool {
    NETWORK_THREADS.get(thread_slot(tid)).is_some_and(|t| *t == tid)
}

/// Thread `tid`'s call in progress, if any: in its slot, or in the overflow map.
#[inline(always)]
pub(crate) fn call_of(tid: u32) -> Option<*mut InFlight> {
    let s = slot(tid)?;
    unsafe {
        if (*s).tid == tid {
            return Some(s);
        }
        if (*s).overflowed == 0 {
            return None;
        }
    }
    IN_FLIGHT_OVERFLOW.get_ptr_mut(tid)
}

/// Applies `f` to the broker thread's call in progress, if any.
#[inline(always)]
pub(crate) fn with_current_call(f: impl FnOnce(&mut InFlight)) {
    let Some(tid) = broker_tid() else { return };
    if let Some(call) = call_of(tid) {
        f(unsafe { &mut *call });
    }
}
