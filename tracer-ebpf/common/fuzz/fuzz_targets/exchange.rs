//! Fuzzes one connection's request/response exchange (`kstall_common::exchange`), the code the
//! probes run on every network-thread read, write and sendfile: arbitrary sequences of those
//! calls, closes and socket changes, as the probe makes them (a write's first 8 bytes read
//! only when no response is in progress; every call moved at least one byte).
//!
//! Input: a sequence of ops, each a kind byte then its operands (missing bytes read as 0):
//! - 0 `c` `a` `s`: a request read whole (correlation_id `c`, api_key `a % 70`), `s % 4`: in
//!   one read, split after its size, split after `s` bytes, or then answered at once by its
//!   response in one write (checked: answered, when the connection was between frames);
//! - 1 `n` bytes...: a read of the next `n % 64 + 1` input bytes;
//! - 2 `c` `b` `k`: a response's start (correlation_id `c`, `b * 97` body bytes) written,
//!   `k`: how many of its bytes the write sent (a short write);
//! - 3 8 bytes `k`: a write whose first 8 bytes are these, sending `k + 1` bytes;
//! - 4 `k` `m`: a sendfile of `k * 256 + m + 1` bytes;
//! - 5: the fd closed, and its next read claims the slot afresh (6: for another fd);
//! - 7 `s`: a read of another socket (`s`, 0 unknown) behind the fd;
//! - 8 `n` `r`: a readv whose first iovec held `n % 64 + 1` of the next input bytes of the
//!   `n % 64 + 1 + r` it read;
//! - anything else: time passes (`kind` ticks).
//!
//! Checked after every call: it never panics (overflow checks on: built with `-a`); the state
//! stays in range: at most one pending request and one response in progress, a response in
//! progress exactly when bytes of it are left, never more than its size (at least its 8-byte
//! start); a response is answered only for the pending request of its correlation_id, which it
//! then leaves answered (at most as many answers as requests read), with times in call order
//! (arrival <= read start <= read done <= response start <= now); the request being answered
//! is named only while its response is written; a closed fd's slot is no longer its.
#![no_main]

use kstall_common::{
    events::Connection,
    exchange::{ReadOutcome, Sent},
    framing::{Feed, state},
};
use kstall_testbed::kafka_protocol::request_frame;
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

struct Run {
    c: Box<Connection>,
    fd: u32,
    now: u64,
    requests: u64,
    answered: u64,
}

impl Run {
    /// A call that starts after the last one ended; it ends at the returned `now`.
    fn call(&mut self) -> (u64, u64) {
        let start = self.now + 3;
        self.now = start + 2;
        (start, self.now)
    }

    fn read(&mut self, bytes: &[u8], len: usize, arrival_known: bool) -> ReadOutcome {
        if self.c.is_fd(self.fd) {
            assert!(!self.c.claim(self.fd));
        } else {
            self.c.claim(self.fd);
            assert!(self.c.is_fd(self.fd));
        }
        let (start, now) = self.call();
        let arrival = if arrival_known { start - 1 } else { 0 };
        let mut n = 0;
        let out = self.c.read(&bytes, len as u64, bytes.len() as u64, 9, start, arrival, now, || n += 1);
        assert!(n <= 2, "{n} requests from one read: more than MAX_STEPS_PER_READ allows");
        self.requests += n;
        if len < bytes.len() {
            assert_eq!(self.c.requests.state, state::HUNTING, "a readv cut short keeps sync");
        }
        if n > 0 {
            let p = &self.c.pending;
            assert_eq!((self.c.has_pending, p.id.known, p.tid, p.read_done_ns, p.response_start_ns), (1, 1, 9, now, 0));
            assert!(p.read_start_ns <= start && p.read_start_ns > 0);
            assert!(p.arrival_ns == 0 || p.arrival_ns < p.read_start_ns);
        }
        out
    }

    /// A write of `sent` bytes (the probe's: ignored unless the connection's fd holds its slot).
    fn write(&mut self, first: [u8; 8], sent: u64) -> Sent {
        let (start, now) = self.call();
        if !self.c.is_fd(self.fd) {
            return Sent::Ignored;
        }
        let has_start = !self.c.is_responding() && sent >= 8;
        let before = *self.c;
        let out = self.c.sent(has_start, if has_start { first } else { [0; 8] }, sent, start);
        match out {
            Sent::Ignored => assert_eq!(*self.c, before, "an ignored write changed the state"),
            Sent::InProgress => assert!(self.c.is_responding()),
            Sent::Answered => {
                self.answered += 1;
                let p = &self.c.pending;
                assert_eq!(p.id.correlation_id, self.c.response_correlation_id);
                assert_eq!((before.has_pending, self.c.has_pending, p.id.known), (1, 0, 1));
                assert!(p.arrival_ns == 0 || p.arrival_ns < p.read_start_ns);
                assert!(p.read_start_ns <= p.read_done_ns && p.read_done_ns <= now);
                if p.response_start_ns != 0 {
                    assert!(p.read_done_ns <= p.response_start_ns && p.response_start_ns <= start, "response times");
                }
            }
            Sent::Unmatched => {
                let p = &self.c.pending;
                assert!(self.c.has_pending == 0 || p.id.correlation_id != self.c.response_correlation_id);
            }
        }
        if matches!(out, Sent::Answered | Sent::Unmatched) {
            assert!(!self.c.is_responding());
        }
        out
    }

    fn check(&self) {
        let c = &*self.c;
        assert!(c.has_pending <= 1 && c.responding <= 1, "flags {} {}", c.has_pending, c.responding);
        assert_eq!(c.responding != 0, c.response_left != 0, "responding with {} left", c.response_left);
        if c.responding != 0 {
            assert!(c.response_left <= c.response_total && c.response_total >= 8);
            assert!(c.response_total <= i32::MAX as u64);
        }
        assert!(self.answered <= self.requests, "{} answers to {} requests", self.answered, self.requests);
        let answering = c.answering();
        assert_eq!(
            answering.is_some(),
            c.responding != 0 && c.has_pending != 0 && c.pending.id.correlation_id == c.response_correlation_id
        );
        if let Some(id) = answering {
            assert_eq!(id.known, 1);
        }
        assert!(c.requests.state <= state::IN_BODY);
    }
}

fn response_start(corr: i32, body: u32) -> [u8; 8] {
    let size = (4 + body).to_be_bytes();
    let c = corr.to_be_bytes();
    [size[0], size[1], size[2], size[3], c[0], c[1], c[2], c[3]]
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut run = Run { c: Box::new(Connection::NEW), fd: 40, now: 1000, requests: 0, answered: 0 };
    while !input.0.is_empty() {
        let kind = input.byte();
        match kind {
            0 => {
                let (corr, api_key, s) = (input.byte() as i32, (input.byte() % 70) as i16, input.byte());
                let req = request_frame(api_key, 1, corr, "fuzz", &[0; 24]);
                // A slot not this fd's is claimed afresh by the read.
                let between_frames = !run.c.is_fd(run.fd)
                    || !run.c.is_responding()
                        && (run.c.requests.state == state::HUNTING
                            || (run.c.requests.state == state::IN_SIZE && run.c.requests.size_have == 0));
                match s % 4 {
                    0 => drop(run.read(&req, req.len(), true)),
                    1 => {
                        run.read(&req[..4], 4, true);
                        run.read(&req[4..], req.len() - 4, false);
                    }
                    2 => {
                        let cut = (s as usize).clamp(1, req.len() - 1);
                        run.read(&req[..cut], cut, true);
                        run.read(&req[cut..], req.len() - cut, false);
                    }
                    _ => {
                        let requests = run.requests;
                        let read = run.read(&req, req.len(), true);
                        let sent = run.write(response_start(corr, 30), 38);
                        if between_frames {
                            assert_eq!((read.feed, run.requests), (Feed::Ok, requests + 1));
                            assert_eq!(sent, Sent::Answered, "a request and its response, one after the other");
                            assert_eq!(run.c.response_total, 38);
                        }
                    }
                }
            }
            1 | 8 => {
                let n = (input.byte() % 64) as usize + 1;
                let more = if kind == 8 { input.byte() as usize } else { 0 };
                let mut bytes = input.take(n).to_vec();
                let fed = bytes.len();
                bytes.resize(fed + more, 0);
                if fed > 0 {
                    run.read(&bytes, fed, false);
                }
            }
            2 => {
                let (corr, body, k) = (input.byte() as i32, input.byte() as u32 * 97, input.byte() as u64);
                let total = 8 + body as u64;
                run.write(response_start(corr, body), if k == 0 { total } else { k.min(total) });
            }
            3 => {
                let mut first = [0u8; 8];
                first.copy_from_slice(&{
                    let mut b = input.take(8).to_vec();
                    b.resize(8, 0);
                    b
                });
                let sent = input.byte() as u64 + 1;
                run.write(first, sent);
            }
            4 => {
                let sent = input.byte() as u64 * 256 + input.byte() as u64 + 1;
                let (start, _) = run.call();
                if run.c.is_fd(run.fd) {
                    let before = run.c.is_responding();
                    let out = run.c.sent(false, [0; 8], sent, start);
                    assert!(before || out == Sent::Ignored, "a sendfile started a response");
                    if out == Sent::Answered {
                        run.answered += 1;
                    }
                }
            }
            5 | 6 => {
                if run.c.is_fd(run.fd) {
                    run.c.close();
                    assert!(!run.c.is_fd(run.fd));
                }
                if kind == 6 {
                    run.fd += kstall_common::events::CONNECTION_SLOTS;
                }
            }
            7 => {
                let sk = input.byte() as u64 * 0x1000;
                if run.c.is_fd(run.fd) {
                    let before = *run.c;
                    run.c.socket_read(sk);
                    if sk != 0 && before.sk != 0 && before.sk != sk {
                        assert_eq!((run.c.has_pending, run.c.responding, run.c.requests.state), (0, 0, state::HUNTING));
                    }
                    if sk == 0 || before.sk == sk {
                        assert_eq!(*run.c, before);
                    }
                }
            }
            _ => run.now += kind as u64,
        }
        run.check();
    }
});
