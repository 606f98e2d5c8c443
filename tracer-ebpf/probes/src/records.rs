//! The records user space reads from the EVENTS ring buffer: one per stall (a page-cache
//! miss, or a network-thread call at least `stall_threshold_ns` slow) and one per answered
//! request. A full ring buffer counts RECORDS_LOST.
use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use kstall_common::{
    CacheResult, Syscall, counter,
    events::{Connection, RequestEvent, StallEvent, kind},
};

use crate::{
    inflight::{InFlight, page_shift},
    kafka::{request_on, unknown_request},
    mem::{copy_bytes, copy_words},
    maps::{EVENTS, bump},
};

/// User space drains the ring buffer on a timer (every 100 ms) and never sleeps on it, so a
/// submit need not wake anyone: a wakeup is an irq_work per record, hundreds of ns.
const NO_WAKEUP: u64 = BPF_RB_NO_WAKEUP as u64;

#[inline(always)]
pub(crate) fn send_stall(tid: u32, syscall: Syscall, cache: CacheResult, call: &InFlight, duration_ns: u64, ret: i64) {
    let fd = call.args[0] as i32;
    let (socket_fd, file_fd) = match syscall {
        Syscall::Sendfile => (fd, call.args[1] as i32),
        _ if cache != CacheResult::NoFileRead => (-1, fd),
        Syscall::Read | Syscall::Readv | Syscall::Write | Syscall::Writev => (fd, -1),
        Syscall::Pwrite64 | Syscall::Fsync | Syscall::Fdatasync => (-1, fd),
        _ => (-1, -1),
    };
    let Some(mut entry) = EVENTS.reserve::<StallEvent>(0) else {
        bump(counter::RECORDS_LOST);
        return;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).kind = kind::STALL;
        (*e).tid = tid;
        (*e).syscall = syscall as u8;
        (*e).cache = cache as u8;
        (*e)._pad = [0; 2];
        (*e).socket_fd = socket_fd;
        (*e).file_fd = file_fd;
        (*e).dev = call.dev;
        (*e).inode = call.inode;
        // The pages looked up (6.12+), else the pages asked for (sendfile, pread64).
        let (first, last) = if call.inode != 0 {
            (call.first_index, call.last_index)
        } else {
            (call.wanted_first, call.wanted_last)
        };
        (*e).first_byte = first << page_shift();
        (*e).end_byte = if first <= last { (last + 1) << page_shift() } else { 0 };
        (*e).start_ns = call.start_ns;
        (*e).duration_ns = duration_ns;
        (*e).off_cpu_ns = call.off_cpu_ns;
        (*e).blocked_ns = call.evidence.blocked_ns;
        (*e).pages_added = call.evidence.pages_added as u64;
        (*e).bytes = ret;
        if socket_fd >= 0 {
            request_on(socket_fd as u32, &raw mut (*e).request);
        } else {
            unknown_request(&raw mut (*e).request);
        }
    }
    entry.submit(NO_WAKEUP);
}

/// The response to the connection's pending request went out completely on `fd`
/// (`conn.response_total` bytes, the last at `now`).
#[inline(always)]
pub(crate) fn send_request(tid: u32, fd: u32, conn: &Connection, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<RequestEvent>(0) else {
        bump(counter::RECORDS_LOST);
        return;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        let p = &conn.pending;
        (*e).kind = kind::REQUEST;
        (*e).tid = tid;
        (*e).fd = fd;
        (*e).request_bytes = p.request_bytes;
        (*e).response_bytes = conn.response_total;
        (*e).arrival_ns = p.arrival_ns;
        (*e).read_start_ns = p.read_start_ns;
        (*e).read_done_ns = p.read_done_ns;
        (*e).response_start_ns = p.response_start_ns;
        (*e).response_done_ns = now;
        copy_words(&raw mut (*e).id, &p.id);
        copy_bytes(&raw mut (*e).head, &p.head);
        copy_bytes(&raw mut (*e).tail, &p.tail);
        (*e).head_len = p.head_len;
        (*e).tail_len = p.tail_len;
        (*e)._pad = [0; 6];
    }
    entry.submit(NO_WAKEUP);
}
