//! One connection's request/response exchange as the broker's network thread performs it:
//! requests in through socket reads (framed by [`crate::framing`]), kept in the connection until
//! answered, responses out through writes and sendfile, each response paired with the pending
//! request by correlation_id.
//!
//! Written once over plain data: the probes read the bytes, lengths and times from the kernel,
//! call these methods on the connection's map entry, and act on what they return (a counter, a
//! record from [`Connection::pending`]); the host unit tests and the `exchange` fuzz target
//! drive the same methods. Kafka's SocketServer serves one request per connection at a time
//! (it mutes the channel from a request's read until its response is sent), so the state is
//! one pending request and one response in progress.
use crate::{
    events::{Connection, PendingRequest, RequestId},
    framing::{self, ByteSource, Feed, RequestFraming, RequestHeader, parse_response_start},
};

/// What one socket read did on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The framing parser's verdict on the bytes fed.
    pub feed: Feed,
    /// The bytes looked like TLS for the first time on this connection (counted once).
    pub first_tls: bool,
}

/// What one write or sendfile on a connection did to its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// No response in progress and these bytes start none: not followed.
    Ignored,
    /// A response is in progress, bytes still to go.
    InProgress,
    /// The response to the pending request went out completely: the request is in
    /// `pending` (no longer pending: `has_pending` is cleared), the response's size in
    /// `response_total`.
    Answered,
    /// A response went out completely without a pending request of its correlation_id.
    Unmatched,
}

impl Connection {
    /// The slot holds connection `fd`.
    #[inline(always)]
    pub fn is_fd(&self, fd: u32) -> bool {
        self.fd_plus_1 == fd.wrapping_add(1)
    }

    /// Connection `fd`'s state, fresh on its first read: a slot held by another fd is taken
    /// over and started clean. True when it held another live connection (lost from now on).
    #[inline(always)]
    pub fn claim(&mut self, fd: u32) -> bool {
        if self.is_fd(fd) {
            return false;
        }
        let taken = self.fd_plus_1 != 0;
        *self = Connection::NEW;
        self.fd_plus_1 = fd.wrapping_add(1);
        taken
    }

    /// close(fd) by the broker: the slot is free, so a new connection that gets the same fd
    /// starts from a clean parser (a client may leave mid-request).
    #[inline(always)]
    pub fn close(&mut self) {
        self.fd_plus_1 = 0;
    }

    /// A read of socket `sk` (0: unknown) on this fd. Another socket behind the fd than
    /// before means a close that was not seen: framing and response start over.
    #[inline(always)]
    pub fn socket_read(&mut self, sk: u64) {
        if sk != 0 && self.sk != sk {
            if self.sk != 0 {
                self.requests = RequestFraming::NEW;
                self.responding = 0;
                self.response_left = 0;
                self.has_pending = 0;
            }
            self.sk = sk;
        }
    }

    /// Feeds one socket read: `len` bytes of `src` (of `ret` the call returned: a readv whose
    /// first iovec held fewer is fed those, and the parser then drops sync), read by thread
    /// `tid` in a call started at `start_ns`, its data arrived at `arrival_ns` (0: unknown),
    /// finished at `now`. Each request read completely becomes the pending one, and is
    /// announced to `on_request` (the probe counts it: a counter bumped there costs the read
    /// programs fewer instructions than a count returned).
    // The call's data as the probe holds it, in registers: a struct would go through the
    // 512-byte BPF stack.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn read<S: ByteSource>(
        &mut self,
        src: &S,
        len: u64,
        ret: u64,
        tid: u32,
        start_ns: u64,
        arrival_ns: u64,
        now: u64,
        mut on_request: impl FnMut(),
    ) -> ReadOutcome {
        let fed = if len > u32::MAX as u64 { u32::MAX } else { len as u32 };
        let was_tls = self.requests.tls;
        let pending = &mut self.pending;
        let has_pending = &mut self.has_pending;
        let feed = framing::feed_request_bytes(&mut self.requests, src, fed, start_ns, arrival_ns, |f, header| {
            remember_request(pending, tid, f, header, now);
            *has_pending = 1;
            on_request();
        });
        if len < ret {
            self.requests.state = framing::state::HUNTING;
        }
        ReadOutcome { feed, first_tls: feed == Feed::Tls && was_tls == 0 }
    }

    /// A response is being written: the next write continues it, so its first bytes need not
    /// be read (the probe reads a write's first 8 bytes only when this is false).
    #[inline(always)]
    pub fn is_responding(&self) -> bool {
        self.responding != 0
    }

    /// `sent` more bytes went out on this connection by a write or sendfile that started at
    /// `call_start_ns`; `start` holds the write's first 8 bytes when it may begin a response
    /// (`has_start`; never for sendfile, which sends a response's records after its header).
    /// The bytes are a plain value, zero when absent, not an Option: an Option's payload is
    /// undefined on its None path, and LLVM may still copy it, which the verifier refuses (a
    /// read of an uninitialised register).
    #[inline(always)]
    pub fn sent(&mut self, has_start: bool, start: [u8; 8], sent: u64, call_start_ns: u64) -> Sent {
        if self.responding == 0 {
            if !has_start {
                return Sent::Ignored;
            }
            let Some((total, correlation_id)) = parse_response_start(start) else { return Sent::Ignored };
            self.responding = 1;
            self.response_total = total as u64;
            self.response_left = total as u64;
            self.response_correlation_id = correlation_id;
            if self.has_pending != 0 && self.pending.id.correlation_id == correlation_id {
                self.pending.response_start_ns = call_start_ns;
            }
        }
        self.response_left = self.response_left.saturating_sub(sent);
        if self.response_left != 0 {
            return Sent::InProgress;
        }
        self.responding = 0;
        if self.has_pending == 0 || self.pending.id.correlation_id != self.response_correlation_id {
            return Sent::Unmatched;
        }
        self.has_pending = 0;
        Sent::Answered
    }

    /// The request whose response is being written, when known.
    #[inline(always)]
    pub fn answering(&self) -> Option<&RequestId> {
        if self.responding != 0 && self.has_pending != 0 && self.pending.id.correlation_id == self.response_correlation_id {
            Some(&self.pending.id)
        } else {
            None
        }
    }
}

/// A request was read completely: kept in its connection until its response is written (a
/// request without response, a Produce with acks=0, is replaced by the next one). Written in
/// place, field by field: a struct built and copied would be a memcpy, which BPF runs a byte
/// at a time (see `copy_words`). Bytes of `client_id` past its length are left as they were
/// (readers take the length).
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
    copy_words(&mut p.head, &f.header);
    copy_words(&mut p.tail, &f.tail);
    p.head_len = f.header_have;
    p.tail_len = f.tail_len;
    p._pad = [0; 6];
}

/// The first `N` bytes of `src` into `dst`, a u64 at a time. BPF has no memcpy: LLVM turns an
/// array copy into a call to one, which Rust's core implements in BPF one byte at a time (~800
/// instructions for 160 bytes, on every request read); volatile word accesses stay what they
/// are. Both arrays sit at 8-byte offsets of 8-byte aligned structs (`events`' layout test
/// checks each one copied).
#[inline(always)]
fn copy_words<const N: usize, const M: usize>(dst: &mut [u8; N], src: &[u8; M]) {
    const { assert!(N.is_multiple_of(8) && N <= M) };
    let (d, s) = (dst.as_mut_ptr().cast::<u64>(), src.as_ptr().cast::<u64>());
    for i in 0..N / 8 {
        // SAFETY: i * 8 + 8 <= N <= M bytes, inside both arrays; 8-byte aligned (above).
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}
