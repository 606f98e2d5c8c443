//! Kafka framing on a network thread's sockets: requests in through reads, responses out
//! through writes and sendfile, followed by kstall_common::exchange (framing, pairing, the
//! connection's state), which this module feeds the bytes and times it reads from the kernel;
//! an answered request becomes a record (`records::send_request`).
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use kstall_common::{
    Syscall, counter,
    events::{Connection, RequestId},
    exchange::Sent,
    framing::{self, ByteSource, Feed},
};

use crate::{
    config::{CONFIG, global},
    inflight::{InFlight, broker_tid},
    maps::{bump, connection, connection_or_new},
    mem::{copy_words, zero_words},
    records::send_request,
};

/// Kafka framing on a network thread's socket: requests in through reads, responses out
/// through writes and sendfile.
#[inline(always)]
pub(crate) fn follow_protocol(tid: u32, syscall: Syscall, call: &InFlight, ret: u64, now: u64) {
    let fd = call.args[0] as u32;
    match syscall {
        Syscall::Read | Syscall::Readv => {
            // Without socket-read evidence, eventfd wakeups are fed too; they never parse.
            if call.sk == 0 && global(&CONFIG.have_sock_events) != 0 {
                return;
            }
            let Some(conn) = connection_or_new(fd) else { return };
            let conn = unsafe { &mut *conn };
            conn.socket_read(call.sk);
            let (base, len) = if syscall == Syscall::Read {
                (call.args[1], ret)
            } else {
                let Ok(v) = (unsafe { bpf_probe_read_user(call.args[1] as *const [u64; 2]) }) else {
                    return;
                };
                (v[0], if v[1] < ret { v[1] } else { ret })
            };
            let read = conn.read(&UserBytes { base }, len, ret, tid, call.start_ns, call.arrival_ns, now, || {
                bump(counter::REQUESTS_PARSED)
            });
            match read.feed {
                Feed::Ok => {}
                Feed::Tls => {
                    if read.first_tls {
                        bump(counter::TLS_CONNECTIONS);
                    }
                }
                _ => bump(counter::FRAMING_ERRORS),
            }
        }
        Syscall::Write | Syscall::Writev => {
            let Some(conn) = connection(fd) else { return };
            let conn = unsafe { &mut *conn };
            let start = if conn.is_responding() {
                None
            } else if syscall == Syscall::Write {
                read_user_8(call.args[1], ret)
            } else {
                writev_first_8(call.args[1], call.args[2])
            };
            // A plain value, zero when absent (see Connection::sent).
            let (has_start, start) = match start {
                Some(bytes) => (true, bytes),
                None => (false, [0; 8]),
            };
            progress_response(tid, fd, conn, has_start, start, ret, call.start_ns, now);
        }
        Syscall::Sendfile => {
            if let Some(conn) = connection(fd) {
                // A response's records go out by sendfile after its header was written.
                progress_response(tid, fd, unsafe { &mut *conn }, false, [0; 8], ret, call.start_ns, now);
            }
        }
        _ => {}
    }
}

/// One read's bytes in the broker's memory.
struct UserBytes {
    base: u64,
}

impl ByteSource for UserBytes {
    #[inline(always)]
    fn copy(&self, offset: u32, dst: &mut [u8], len: u32) -> bool {
        if len as usize > dst.len() {
            return false;
        }
        let len = bounded_len(len);
        let src = (self.base + offset as u64) as *const core::ffi::c_void;
        unsafe { generated::bpf_probe_read_user(dst.as_mut_ptr().cast(), len, src) == 0 }
    }

    #[inline(always)]
    fn copy_tail(&self, offset: u32, dst: &mut [u8; framing::REQUEST_TAIL]) -> bool {
        // A constant size into a fixed array: bounded for every verifier.
        let src = (self.base + offset as u64) as *const core::ffi::c_void;
        unsafe { generated::bpf_probe_read_user(dst.as_mut_ptr().cast(), framing::REQUEST_TAIL as u32, src) == 0 }
    }
}

/// `len & COPY_MASK`, computed where the verifier sees it. The framing parser already
/// bounds every copy (`min(4 - have, avail)`, `min(64 - have, take)`), so LLVM drops a mask
/// written in Rust; but the verifiers before 6.12 cannot bound a register by comparing it
/// with another register, and reject the copy as an unbounded memory access (5.10, 6.1).
/// The mask in assembly survives compilation; with the destination offset (< 64) it keeps
/// every copy inside the connection's header buffer (HEADER_BUFFER).
#[inline(always)]
fn bounded_len(len: u32) -> u32 {
    let mut len = len as u64;
    unsafe { core::arch::asm!("{0} &= 127", inout(reg) len, options(pure, nomem, nostack)) };
    len as u32
}
/// The mask in `bounded_len`: a copy is at most HEADER_CAPTURE bytes, at an offset below
/// HEADER_CAPTURE, so the buffer must hold offset + mask.
const COPY_MASK: usize = 127;
const _: () = assert!(COPY_MASK >= framing::HEADER_CAPTURE);
const _: () = assert!(framing::HEADER_CAPTURE - 1 + COPY_MASK <= framing::HEADER_BUFFER);

#[inline(always)]
fn read_user_8(addr: u64, available: u64) -> Option<[u8; 8]> {
    if available < 8 {
        return None;
    }
    unsafe { bpf_probe_read_user(addr as *const [u8; 8]) }.ok()
}

/// The first 8 bytes a writev sends: from the first iovec, or from the first two when the
/// first holds only the 4-byte size (as Kafka's responses do).
#[inline(always)]
fn writev_first_8(iov: u64, count: u64) -> Option<[u8; 8]> {
    let v: [u64; 4] = if count >= 2 {
        unsafe { bpf_probe_read_user(iov as *const [u64; 4]) }.ok()?
    } else {
        let first: [u64; 2] = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
        [first[0], first[1], 0, 0]
    };
    if v[1] >= 8 {
        return read_user_8(v[0], v[1]);
    }
    if v[1] == 4 && v[3] >= 4 {
        let size: [u8; 4] = unsafe { bpf_probe_read_user(v[0] as *const [u8; 4]) }.ok()?;
        let corr: [u8; 4] = unsafe { bpf_probe_read_user(v[2] as *const [u8; 4]) }.ok()?;
        return Some([size[0], size[1], size[2], size[3], corr[0], corr[1], corr[2], corr[3]]);
    }
    None
}

/// `sent` more bytes of a response went out on `fd`; `start` holds a response's first 8
/// bytes when this write begins one (`has_start`).
#[inline(always)]
fn progress_response(
    tid: u32,
    fd: u32,
    conn: &mut Connection,
    has_start: bool,
    start: [u8; 8],
    sent: u64,
    call_start_ns: u64,
    now: u64,
) {
    match conn.sent(has_start, start, sent, call_start_ns) {
        // A record the ring buffer had no room for is counted there (RECORDS_LOST).
        Sent::Answered => send_request(tid, fd, conn, now),
        Sent::Unmatched => bump(counter::RESPONSES_UNMATCHED),
        Sent::Ignored | Sent::InProgress => {}
    }
}

/// The request whose response is being written on `fd`, into `dst` (RequestId::NONE's fields
/// when unknown).
#[inline(always)]
pub(crate) fn request_on(fd: u32, dst: *mut RequestId) {
    if let Some(conn) = connection(fd) {
        if let Some(id) = unsafe { &*conn }.answering() {
            copy_words(dst, id);
            return;
        }
    }
    unknown_request(dst);
}

/// RequestId::NONE into `dst`, a word at a time.
#[inline(always)]
pub(crate) fn unknown_request(dst: *mut RequestId) {
    zero_words(dst);
    unsafe { (*dst).api_key = RequestId::NONE.api_key };
}

/// close(fd) by the broker: the fd's connection state goes, so a new connection that gets the
/// same fd starts from a clean parser (a client may leave mid-request).
#[inline(always)]
pub(crate) fn forget_connection(fd: u64) {
    if let Some(conn) = connection(fd as u32) {
        unsafe { (*conn).close() };
    }
}

/// sys_enter_close of the broker (classic tracepoints; the other mechanisms see close in
/// `syscalls`).
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    if broker_tid().is_none() {
        return 0;
    }
    let fd: u64 = unsafe { ctx.read_at(global(&CONFIG.sys_enter_args_offset) as usize) }.unwrap_or(u64::MAX);
    forget_connection(fd);
    0
}
