//! Socket reads of the network threads and data arrival on those sockets, for socket wait:
//! a tracepoint on 6.3+, a kprobe on older kernels that allow them.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{kprobe, raw_tracepoint, tracepoint},
    programs::{ProbeContext, RawTracePointContext, TracePointContext},
};

use kstall_common::{counter, events::socket_slot};

use crate::{
    config::{CONFIG, global},
    inflight::{broker_tid, is_network_thread, with_current_call},
    maps::{SOCKETS, bump},
};

/// sock:sock_recv_length (6.3+): the read in progress on a network thread is a socket read.
#[tracepoint]
pub fn sock_recv(ctx: TracePointContext) -> u32 {
    on_socket_read(unsafe { ctx.read_at(global(&CONFIG.recv_sk_offset) as usize) }.unwrap_or(0));
    0
}

/// The same as a raw tracepoint, sock_recv_length(sk, ret, flags): no perf record built, the
/// socket an argument (no helper call). Preferred where the tracepoint exists.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_raw(ctx: RawTracePointContext) -> i32 {
    on_socket_read(ctx.arg(0));
    0
}

/// The same from a kprobe on tcp_recvmsg(sk, ...), where the tracepoint is missing.
#[kprobe]
pub fn sock_recv_kprobe(ctx: ProbeContext) -> u32 {
    on_socket_read(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// Socket `sk` is read by the call in progress: if that is a network thread's, take the
/// time the unread data arrived, and restart the clock for the next data.
#[inline(always)]
fn on_socket_read(sk: u64) {
    let Some(tid) = broker_tid() else { return };
    if sk == 0 || !is_network_thread(tid) {
        return;
    }
    let Some(s) = SOCKETS.get_ptr_mut(socket_slot(sk)) else { return };
    let mut arrival_ns = 0;
    unsafe {
        if (*s).sk == sk {
            arrival_ns = (*s).unread_since_ns;
        } else {
            // First read of this socket: its slot from now on (another's, if any, is lost).
            if (*s).sk != 0 {
                bump(counter::SLOTS_TAKEN);
            }
            (*s).sk = sk;
        }
        (*s).unread_since_ns = 0;
    }
    with_current_call(|call| {
        if call.sk == 0 {
            call.sk = sk;
            call.arrival_ns = arrival_ns;
        }
    });
}

/// sock:sk_data_ready (6.3+): data reached a socket.
#[tracepoint]
pub fn sock_data_ready(ctx: TracePointContext) -> u32 {
    on_data_ready(unsafe { ctx.read_at(global(&CONFIG.data_ready_sk_offset) as usize) }.unwrap_or(0));
    0
}

/// The same as a raw tracepoint, sk_data_ready(sk): it runs for every socket on the host, so
/// the cheapest hook matters most here.
#[raw_tracepoint(tracepoint = "sk_data_ready")]
pub fn sock_data_ready_raw(ctx: RawTracePointContext) -> i32 {
    on_data_ready(ctx.arg(0));
    0
}

/// The same from a kprobe on sock_def_readable(sk), the data-ready callback of TCP
/// sockets, where the tracepoint is missing.
#[kprobe]
pub fn sock_data_ready_kprobe(ctx: ProbeContext) -> u32 {
    on_data_ready(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// Data reached socket `sk`. Runs for every socket on the host (often in the sender's
/// context), so it only touches sockets a network thread has read.
#[inline(always)]
fn on_data_ready(sk: u64) {
    if let Some(s) = SOCKETS.get_ptr_mut(socket_slot(sk)) {
        unsafe {
            if (*s).sk == sk && sk != 0 && (*s).unread_since_ns == 0 {
                (*s).unread_since_ns = bpf_ktime_get_ns();
            }
        }
    }
}
