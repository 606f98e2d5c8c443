//! Kafka framing on a network thread's sockets: requests in through reads (parsed by
//! kstall_common::framing, kept in its connection until answered), responses out through writes and
//! sendfile; an answered request becomes a record (`records::send_request`).
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use kstall_common::{
    Syscall, counter,
    events::{Connection, PendingRequest, RequestId},
    framing::{self, ByteSource, Feed, RequestFraming, RequestHeader, parse_response_start},
};

use crate::{
    config::{CONFIG, global},
    inflight::{InFlight, broker_tid},
    maps::{bump, connection, connection_or_new},
    mem::{copy_bytes, copy_words, zero_words},
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
            if call.sk != 0 && conn.sk != call.sk {
                if conn.sk != 0 {
                    // Another socket behind the fd (a close we did not see): start over.
                    conn.requests = RequestFraming::NEW;
                    conn.responding = 0;
                    conn.response_left = 0;
                    conn.has_pending = 0;
                }
                conn.sk = call.sk;
            }
            // readv: the first iovec only (a second parser would double the program past
            // the verifier's budget). A JVM reads a socket with read(); if a readv spills into
            // a second iovec, the parser resyncs at a later read.
            let (base, len) = if syscall == Syscall::Read {
                (call.args[1], ret)
            } else {
                let Ok(v) = (unsafe { bpf_probe_read_user(call.args[1] as *const [u64; 2]) }) else {
                    return;
                };
                (v[0], if v[1] < ret { v[1] } else { ret })
            };
            feed(tid, conn, &UserBytes { base }, len, call, now);
            if len < ret {
                conn.requests.state = framing::state::HUNTING;
            }
        }
        Syscall::Write | Syscall::Writev => {
            let Some(conn) = connection(fd) else { return };
            let conn = unsafe { &mut *conn };
            let start = if conn.responding != 0 {
                None
            } else if syscall == Syscall::Write {
                read_user_8(call.args[1], ret)
            } else {
                writev_first_8(call.args[1], call.args[2])
            };
            // The bytes as a plain value, zero when absent: an Option's payload is undefined
            // on its None path, and LLVM may still copy it, which the verifier refuses (a read
            // of an uninitialised register).
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
fn feed(tid: u32, conn: &mut Connection, src: &UserBytes, len: u64, call: &InFlight, now: u64) {
    let len = if len > u32::MAX as u64 { u32::MAX } else { len as u32 };
    let was_tls = conn.requests.tls;
    let outcome = framing::feed_request_bytes(&mut conn.requests, src, len, call.start_ns, call.arrival_ns, |f, header| {
        remember_request(&mut conn.pending, tid, f, header, now);
        conn.has_pending = 1;
        bump(counter::REQUESTS_PARSED);
    });
    match outcome {
        Feed::Ok => {}
        Feed::Tls => {
            if was_tls == 0 {
                bump(counter::TLS_CONNECTIONS);
            }
        }
        _ => bump(counter::FRAMING_ERRORS),
    }
}

/// A request was read completely: kept in its connection until its response is written (a
/// request without response, a Produce with acks=0, is replaced by the next one). Written in
/// place, field by field: a struct built and copied would be a byte-wise memcpy (`mem`).
/// Bytes of `client_id` past its length are left as they were (readers take the length).
#[inline(always)]
fn remember_request(p: &mut PendingRequest, tid: u32, f: &RequestFraming, header: &RequestHeader, now: u64) {
    let (len, cut) = framing::client_id(f, header, &mut p.id.client_id);
    p.id.correlation_id = header.correlation_id;
    p.id.api_key = header.api_key;
    p.id.api_version = header.api_version;
    p.id.client_id_len = len;
    p.id.client_id_cut = cut as u8;
    p.id.known = 1;
    p.id._pad = 0;
    p.tid = tid;
    p.request_bytes = f.body_len + 4;
    p.arrival_ns = f.arrival_ns;
    p.read_start_ns = f.started_ns;
    p.read_done_ns = now;
    p.response_start_ns = 0;
    // The first and last body bytes, for user space's body parser (kstall_common::body).
    const { assert!(framing::HEADER_CAPTURE <= framing::HEADER_BUFFER) };
    copy_bytes(&mut p.head, f.header.as_ptr().cast());
    copy_bytes(&mut p.tail, &f.tail);
    p.head_len = f.header_have;
    p.tail_len = f.tail_len;
    p._pad = [0; 6];
}

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
    if conn.responding == 0 {
        if !has_start {
            return;
        }
        let Some((total, correlation_id)) = parse_response_start(start) else { return };
        conn.responding = 1;
        conn.response_total = total as u64;
        conn.response_left = total as u64;
        conn.response_correlation_id = correlation_id;
        if conn.has_pending != 0 && conn.pending.id.correlation_id == correlation_id {
            conn.pending.response_start_ns = call_start_ns;
        }
    }
    conn.response_left = conn.response_left.saturating_sub(sent);
    if conn.response_left != 0 {
        return;
    }
    conn.responding = 0;
    if conn.has_pending == 0 || conn.pending.id.correlation_id != conn.response_correlation_id {
        bump(counter::RESPONSES_UNMATCHED);
        return;
    }
    // A record the ring buffer had no room for is counted there (EVENTS_LOST).
    send_request(tid, fd, conn, now);
    conn.has_pending = 0;
}

/// The request whose response is being written on `fd`, into `dst` (RequestId::NONE's fields
/// when unknown).
#[inline(always)]
pub(crate) fn request_on(fd: u32, dst: *mut RequestId) {
    if let Some(conn) = connection(fd) {
        let conn = unsafe { &*conn };
        if conn.responding != 0 && conn.has_pending != 0 && conn.pending.id.correlation_id == conn.response_correlation_id {
            copy_words(dst, &conn.pending.id);
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
        unsafe { (*conn).fd_plus_1 = 0 };
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
