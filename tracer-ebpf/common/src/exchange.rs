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

#[cfg(test)]
mod tests {
    // Requests as Kafka clients frame them (the encoder the test clients send to real brokers).
    use kstall_testbed::kafka_protocol::request_frame as request;

    use super::*;

    /// A response as the broker frames it: int32 size, int32 correlation_id, `body` bytes.
    fn response(correlation_id: i32, body: usize) -> Vec<u8> {
        let mut r = ((4 + body) as u32).to_be_bytes().to_vec();
        r.extend(correlation_id.to_be_bytes());
        r.extend(std::iter::repeat_n(0x5a, body));
        r
    }

    /// One connection driven as the probe drives it, each call at the next tick of a clock
    /// (a call starts at `t` and ends at `t + 1`).
    struct Exchange {
        c: Box<Connection>,
        t: u64,
        requests: u32,
    }

    impl Exchange {
        fn new() -> Exchange {
            let mut c = Box::new(Connection::NEW);
            assert!(!c.claim(7));
            Exchange { c, t: 100, requests: 0 }
        }

        fn tick(&mut self) -> (u64, u64) {
            self.t += 10;
            (self.t, self.t + 1)
        }

        /// A read() that returned `bytes`, its data arrived just before the call.
        fn read(&mut self, bytes: &[u8]) -> ReadOutcome {
            let (start, end) = self.tick();
            let mut requests = 0;
            let n = bytes.len() as u64;
            let out = self.c.read(&bytes, n, n, 3, start, start - 1, end, || requests += 1);
            self.requests += requests;
            out
        }

        /// A write() or writev() that sent `sent` of `bytes` (a short write sends fewer):
        /// its first 8 bytes are read only when no response is in progress, as the probe does.
        fn write(&mut self, bytes: &[u8], sent: usize) -> Sent {
            let (start, _) = self.tick();
            let first = (!self.c.is_responding() && sent >= 8).then(|| <[u8; 8]>::try_from(&bytes[..8]).unwrap());
            self.c.sent(first.is_some(), first.unwrap_or([0; 8]), sent as u64, start)
        }

        /// A sendfile() that sent `sent` bytes of a response's records.
        fn sendfile(&mut self, sent: u64) -> Sent {
            let (start, _) = self.tick();
            self.c.sent(false, [0; 8], sent, start)
        }

        fn pending_correlation_id(&self) -> Option<i32> {
            (self.c.has_pending != 0).then_some(self.c.pending.id.correlation_id)
        }
    }

    #[test]
    fn a_request_then_its_response_in_one_write_is_answered_with_its_times() {
        let mut x = Exchange::new();
        let req = request(3, 12, 41, "adminclient-1", &[0; 20]);
        assert_eq!(x.read(&req[..4]), ReadOutcome { feed: Feed::Ok, first_tls: false });
        assert_eq!(x.pending_correlation_id(), None);
        x.read(&req[4..]);
        assert_eq!((x.requests, x.pending_correlation_id()), (1, Some(41)));
        let resp = response(41, 100);
        assert_eq!(x.write(&resp, resp.len()), Sent::Answered);
        let p = &x.c.pending;
        assert_eq!((p.id.api_key, p.id.api_version, p.id.known, p.tid), (3, 12, 1, 3));
        assert_eq!(&p.id.client_id[..p.id.client_id_len as usize], b"adminclient-1");
        assert_eq!(p.request_bytes as usize, req.len());
        assert_eq!(x.c.response_total as usize, resp.len());
        // The clock of the read of its first byte, the end of the read of its last, the write.
        assert_eq!((p.arrival_ns, p.read_start_ns, p.read_done_ns, p.response_start_ns), (109, 110, 121, 130));
        assert_eq!(&p.head[..p.head_len as usize], &req[4..]);
        // Answered once: nothing pending, nothing in progress.
        assert_eq!((x.pending_correlation_id(), x.c.is_responding()), (None, false));
    }

    #[test]
    fn a_response_split_over_writes_and_sendfile_is_answered_at_its_last_byte() {
        let mut x = Exchange::new();
        x.read(&request(1, 16, 9, "consumer-1", &[0; 40]));
        // A Fetch response: the header by writev, then the records by sendfile, in pieces.
        let resp = response(9, 3 * 4096 + 60);
        assert_eq!(x.write(&resp[..68], 68), Sent::InProgress);
        assert_eq!(x.c.answering().map(|id| id.correlation_id), Some(9));
        assert_eq!(x.sendfile(4096), Sent::InProgress);
        assert_eq!(x.sendfile(4096), Sent::InProgress);
        // The response started at its first write, not its last.
        assert_eq!(x.c.pending.response_start_ns, 120);
        assert_eq!(x.sendfile(4096), Sent::Answered);
        assert_eq!((x.c.response_total as usize, x.c.answering()), (resp.len(), None));
        // A sendfile with no response in progress (a file copy, not Kafka) is not followed.
        assert_eq!(x.sendfile(4096), Sent::Ignored);
    }

    #[test]
    fn a_short_write_keeps_the_response_going_until_the_rest_is_sent() {
        let mut x = Exchange::new();
        x.read(&request(0, 9, 5, "producer-1", &[0; 100]));
        let resp = response(5, 200);
        // The socket buffer took 50 bytes; the rest goes out when it drains, in writes whose
        // first bytes are the response's middle (not parsed as a new response).
        assert_eq!(x.write(&resp, 50), Sent::InProgress);
        assert_eq!(x.write(&resp[50..], 100), Sent::InProgress);
        assert_eq!(x.c.response_left as usize, resp.len() - 150);
        assert_eq!(x.write(&resp[150..], resp.len() - 150), Sent::Answered);
        assert_eq!(x.c.pending.response_start_ns, 120);
        // A write too short to hold a response's size and correlation_id starts nothing.
        x.read(&request(0, 9, 6, "producer-1", &[0; 100]));
        assert_eq!(x.write(&response(6, 0), 7), Sent::Ignored);
        assert_eq!(x.pending_correlation_id(), Some(6));
    }

    #[test]
    fn requests_answered_in_turn_on_one_connection_are_each_paired() {
        // Kafka mutes a connection from a request's read until its response is sent, so a
        // client's pipelined requests are read and answered one after the other.
        let mut x = Exchange::new();
        let mut answered = Vec::new();
        for corr in 100..110 {
            let req = request(0, 11, corr, "pipelined", &[1; 30]);
            x.read(&req[..4]);
            x.read(&req[4..]);
            let resp = response(corr, 20);
            assert_eq!(x.write(&resp, resp.len()), Sent::Answered);
            answered.push((x.c.pending.id.correlation_id, x.c.pending.read_start_ns <= x.c.pending.response_start_ns));
        }
        assert_eq!(answered, (100..110).map(|c| (c, true)).collect::<Vec<_>>());
        assert_eq!(x.requests, 10);
    }

    #[test]
    fn requests_read_together_leave_the_later_pending_and_the_earlier_response_unmatched() {
        // One pending request per connection (see the module doc): two read before either is
        // answered (a client that pipelines to a broker reading both at once) keep the second.
        let mut x = Exchange::new();
        let mut both = request(18, 3, 1, "c", &[]);
        both.extend(request(3, 12, 2, "c", &[]));
        x.read(&both);
        assert_eq!((x.requests, x.pending_correlation_id()), (2, Some(2)));
        let first = response(1, 10);
        assert_eq!(x.write(&first, first.len()), Sent::Unmatched);
        let second = response(2, 10);
        assert_eq!(x.write(&second, second.len()), Sent::Answered);
        // A Produce with acks=0 has no response: the next request takes its place.
        x.read(&request(0, 9, 3, "acks0", &[0; 16]));
        x.read(&request(0, 9, 4, "acks0", &[0; 16]));
        let resp = response(4, 10);
        assert_eq!(x.write(&resp, resp.len()), Sent::Answered);
        assert_eq!(x.c.pending.id.correlation_id, 4);
    }

    #[test]
    fn a_connection_reused_after_close_starts_clean() {
        let mut x = Exchange::new();
        let req = request(0, 9, 77, "gone", &[0; 64]);
        // The client left mid-request and mid-response.
        x.read(&req);
        x.write(&response(77, 500), 100);
        x.c.close();
        assert!(!x.c.is_fd(7));
        // A new connection gets fd 7: nothing of the old one is left.
        assert!(!x.c.claim(7));
        assert_eq!(*x.c, Connection { fd_plus_1: 8, ..Connection::NEW });
        let resp = response(77, 10);
        assert_eq!(x.write(&resp, resp.len()), Sent::Unmatched);
        x.read(&request(0, 9, 1, "new", &[0; 8]));
        let resp = response(1, 10);
        assert_eq!(x.write(&resp, resp.len()), Sent::Answered);
        // Another fd in the same slot while this one is open takes it over, and says so.
        assert!(x.c.claim(7 + crate::events::CONNECTION_SLOTS));
        assert!(x.c.is_fd(7 + crate::events::CONNECTION_SLOTS) && !x.c.is_fd(7));
        assert_eq!(x.pending_correlation_id(), None);
    }

    #[test]
    fn another_socket_behind_the_fd_starts_over() {
        // A close kstall did not see: the fd now reads another socket.
        let mut x = Exchange::new();
        x.c.socket_read(0xffff_1000);
        let req = request(0, 9, 8, "old", &[0; 64]);
        x.read(&req[..20]);
        x.c.socket_read(0xffff_1000);
        assert_eq!(x.c.requests.state, framing::state::IN_BODY);
        x.c.socket_read(0xffff_2000);
        assert_eq!((x.c.requests, x.c.sk), (RequestFraming::NEW, 0xffff_2000));
        // An unknown socket (no socket-read evidence) changes nothing.
        x.read(&req);
        x.c.socket_read(0);
        assert_eq!(x.pending_correlation_id(), Some(8));
    }

    #[test]
    fn unexpected_bytes_pair_nothing() {
        let mut x = Exchange::new();
        // Writes before any request: a size too small, then a response nobody asked for.
        assert_eq!(x.write(b"\0\0\0\x02\0\0\0\x01", 8), Sent::Ignored);
        let stray = response(5, 4);
        assert_eq!(x.write(&stray, stray.len()), Sent::Unmatched);
        // A response whose correlation_id is not the pending request's.
        x.read(&request(0, 9, 6, "p", &[0; 8]));
        let wrong = response(60, 4);
        assert_eq!(x.write(&wrong, wrong.len()), Sent::Unmatched);
        assert_eq!(x.pending_correlation_id(), Some(6));
        // Garbage read: the framing says so, no request comes out.
        let out = x.read(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!((out.feed, x.requests), (Feed::Garbage, 1));
        // TLS: counted once per connection.
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xfc, 0x03, 0x03];
        assert_eq!(x.read(&hello), ReadOutcome { feed: Feed::Tls, first_tls: true });
        assert_eq!(x.read(&hello), ReadOutcome { feed: Feed::Tls, first_tls: false });
    }

    #[test]
    fn a_readv_whose_first_iovec_holds_less_than_it_read_drops_sync() {
        // The probe feeds a readv's first iovec only.
        let mut x = Exchange::new();
        let req = request(0, 9, 4, "p", &[0; 40]);
        let (start, end) = x.tick();
        x.c.read(&req.as_slice(), 10, req.len() as u64, 3, start, 0, end, || ());
        assert_eq!(x.c.requests.state, framing::state::HUNTING);
        // The next read that starts a frame is followed again.
        let next = request(0, 9, 5, "p", &[0; 40]);
        x.read(&next);
        assert_eq!(x.pending_correlation_id(), Some(5));
    }
}
