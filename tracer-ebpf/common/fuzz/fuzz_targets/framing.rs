//! Fuzzes the Kafka request framing parser (`kstall_common::framing`) the way the probes drive
//! it: one connection's bytes, cut into socket reads, each fed through `feed_request_bytes`
//! with the state kept between reads, every request found read back with `client_id`.
//!
//! Input: `stream ++ ops ++ [n]`. The last byte is the number of 2-byte ops before it (as many
//! as the input holds); each op `(a, b)` is one socket read of the next stream bytes:
//! - length `b`, times 16 when `a & 0x08`, cut short at the end of the stream;
//! - `a & 3`: 0 a read; 1 a readv whose first iovec holds only `cut` bytes (the probe feeds
//!   those, then drops sync when the read was longer); 2 the fd was closed (or another socket
//!   took it) before this read, so the connection starts over; 3 a read whose bytes from `cut`
//!   on cannot be copied (`bpf_probe_read_user` failing);
//! - `a & 0x04`: the data's arrival time is unknown (0);
//! - `cut = length * (a >> 4) / 16`.
//!
//! Stream bytes left after the ops go in one last read. A raw byte stream is thus a valid
//! input (fed as one read, or as the reads its trailing bytes happen to describe).
//!
//! Checked, after every read and at every request: the parser's own promises. It never panics
//! (overflow checks on: build with `-a`), never copies more than HEADER_CAPTURE bytes or past
//! the read, and the state stays one of HUNTING, IN_SIZE, IN_BODY with its counters in range.
//! Every byte is accounted for while in sync: the requests found, plus the partial frame in the
//! state, are exactly the bytes fed since the read that resynced. A request is reported only
//! when its last body byte was fed, with the size, header and client_id bytes that are in the
//! stream at its place, a plausible header, and the start (and arrival) time of the read that
//! brought its first byte, and its last REQUEST_TAIL body bytes exactly when the read that
//! brought its last byte held and could copy that many of them. Any outcome but Ok leaves the
//! state HUNTING, and says why truly.
//!
//! Seeds: when started on a corpus directory, the target adds the unit tests' captured
//! requests to it (`seed-*` files, written once).
#![no_main]

use kstall_common::framing::{
    ByteSource, CLIENT_ID_CAP, FIXED_HEADER, Feed, HEADER_CAPTURE, MAX_API_KEY, MAX_API_VERSION, MAX_REQUEST_SIZE,
    MAX_STEPS_PER_READ, REQUEST_TAIL, RequestFraming, RequestHeader, client_id, feed_request_bytes, looks_like_tls,
    parse_request_header, state,
};
use kstall_testbed::kafka_protocol::request_frame;
use libfuzzer_sys::fuzz_target;

const READ: u8 = 0;
const READV: u8 = 1;
const CLOSED: u8 = 2;
const FAULT: u8 = 3;

/// One read's bytes; those from `readable` on fail to copy.
struct Bytes<'a> {
    bytes: &'a [u8],
    readable: usize,
}

impl ByteSource for Bytes<'_> {
    fn copy(&self, offset: u32, dst: &mut [u8], len: u32) -> bool {
        let (offset, len) = (offset as usize, len as usize);
        assert!(len <= HEADER_CAPTURE, "copy of {len} bytes, more than HEADER_CAPTURE");
        // The probe's copy fails when it does not fit: the parser must not ask for that.
        assert!(len <= dst.len(), "copy of {len} bytes into {} bytes of state", dst.len());
        assert!(offset + len <= self.bytes.len(), "copy of {offset}+{len} past a {}-byte read", self.bytes.len());
        if offset + len > self.readable {
            return false;
        }
        dst[..len].copy_from_slice(&self.bytes[offset..offset + len]);
        true
    }

    fn copy_tail(&self, offset: u32, dst: &mut [u8; REQUEST_TAIL]) -> bool {
        let offset = offset as usize;
        assert!(offset + REQUEST_TAIL <= self.bytes.len(), "tail copy at {offset} past a {}-byte read", self.bytes.len());
        if offset + REQUEST_TAIL > self.readable {
            return false;
        }
        dst.copy_from_slice(&self.bytes[offset..offset + REQUEST_TAIL]);
        true
    }
}

/// A read fed so far: its stream range and times.
struct Read {
    start: usize,
    end: usize,
    /// Stream offset where this read's bytes stop being copyable.
    readable_end: usize,
    now_ns: u64,
    arrival_ns: u64,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

/// The frame that starts at `frame` in `stream`, as far as `f` has it: its size field and the
/// header bytes captured match the stream, and its clock is the read that brought its first byte.
fn check_frame_so_far(f: &RequestFraming, stream: &[u8], reads: &[Read], frame: usize) {
    let have = if f.state == state::IN_SIZE { f.size_have as usize } else { 4 };
    assert_eq!(&f.size_bytes[..have], &stream[frame..frame + have], "size bytes");
    let first = reads.iter().rev().find(|r| r.start <= frame && frame < r.end);
    if let Some(r) = first {
        assert_eq!(f.started_ns, r.now_ns, "started_ns of the frame at {frame}");
        let arrival = if frame == r.start { r.arrival_ns } else { 0 };
        assert_eq!(f.arrival_ns, arrival, "arrival_ns of the frame at {frame}");
    } else {
        assert_eq!(have, 0, "a frame with bytes but no read");
    }
    if f.state == state::IN_BODY {
        assert_eq!(be_u32(&f.size_bytes), f.body_len);
        assert!((FIXED_HEADER as u32..=MAX_REQUEST_SIZE).contains(&f.body_len), "body_len {}", f.body_len);
        assert!(f.body_left <= f.body_len);
        let read = (f.body_len - f.body_left) as usize;
        let captured = f.header_have as usize;
        assert_eq!(captured, read.min(HEADER_CAPTURE), "header_have after {read} body bytes");
        assert_eq!(&f.header[..captured], &stream[frame + 4..frame + 4 + captured], "header bytes");
        if captured >= FIXED_HEADER {
            assert!(parse_request_header(f).is_some(), "an implausible header kept");
        }
    }
}

/// A request reported while `*next` was the stream offset of the next frame and `fed_end` the
/// end of what was fed.
fn check_request(
    f: &RequestFraming,
    h: &RequestHeader,
    stream: &[u8],
    reads: &[Read],
    next: &mut usize,
    fed_end: usize,
) {
    assert_eq!((f.state, f.size_have, f.body_left), (state::IN_SIZE, 0, 0), "state at a request");
    let frame = *next;
    let end = frame + 4 + f.body_len as usize;
    assert!(end <= fed_end, "a request of {} bytes at {frame} with only {fed_end} fed", f.body_len);
    // As it was when its last byte came in.
    let body = RequestFraming { state: state::IN_BODY, size_have: 4, ..*f };
    check_frame_so_far(&body, stream, reads, frame);
    assert_eq!(Some(*h), parse_request_header(f), "the header passed is not the state's");
    let b = &stream[frame + 4..];
    assert_eq!(
        (h.api_key, h.api_version, h.correlation_id, h.client_id_len),
        (be_i16(b), be_i16(&b[2..]), i32::from_be_bytes([b[4], b[5], b[6], b[7]]), be_i16(&b[8..])),
    );
    assert!((0..=MAX_API_KEY).contains(&h.api_key) && (0..=MAX_API_VERSION).contains(&h.api_version));
    assert!(h.client_id_len >= -1 && h.client_id_len as i64 <= f.body_len as i64 - FIXED_HEADER as i64);

    let mut id = [0xa5u8; CLIENT_ID_CAP];
    let (stored, cut) = client_id(f, h, &mut id);
    let len = h.client_id_len.max(0) as usize;
    let captured = f.header_have as usize - FIXED_HEADER;
    assert_eq!(stored as usize, len.min(captured).min(CLIENT_ID_CAP), "client_id stored length");
    assert_eq!(cut, (stored as usize) < len, "client_id cut flag");
    let at = frame + 4 + FIXED_HEADER;
    assert_eq!(&id[..stored as usize], &stream[at..at + stored as usize], "client_id bytes");

    // The tail: the body's last REQUEST_TAIL bytes, when the read that brought its last byte
    // held that many of the body and could copy them.
    let read = reads.last().expect("a request without a read");
    let in_read = end - read.start.max(frame + 4);
    let want = in_read >= REQUEST_TAIL && end <= read.readable_end;
    assert_eq!(f.tail_len as usize, if want { REQUEST_TAIL } else { 0 }, "tail_len with {in_read} body bytes in the read");
    if want {
        assert_eq!(&f.tail, &stream[end - REQUEST_TAIL..end], "tail bytes");
    }
    *next = end;
}

/// The connection as the probe keeps it, and what the harness knows of its stream.
struct Connection<'a> {
    stream: &'a [u8],
    f: RequestFraming,
    reads: Vec<Read>,
    /// Stream offset of the next frame's first byte (meaningful while the state is not HUNTING).
    next: usize,
    tls_seen: bool,
}

impl Connection<'_> {
    fn read(&mut self, start: usize, len: usize, a: u8) {
        let (how, cut) = (a & 3, len * (a >> 4) as usize / 16);
        if how == CLOSED {
            self.f = RequestFraming::NEW;
            self.tls_seen = false;
        }
        let now_ns = (self.reads.len() as u64 + 1) * 1000;
        let arrival_ns = if a & 0x04 != 0 { 0 } else { now_ns - 500 };
        let fed = if how == READV { cut } else { len };
        let readable = if how == FAULT { cut } else { fed };
        let fed_end = start + fed;
        self.reads.push(Read { start, end: fed_end, readable_end: start + readable, now_ns, arrival_ns });
        if self.f.state == state::HUNTING {
            self.next = start;
        }
        let src = Bytes { bytes: &self.stream[start..fed_end], readable };
        let (stream, reads, next) = (self.stream, &self.reads, &mut self.next);
        let mut requests = 0;
        let outcome = feed_request_bytes(&mut self.f, &src, fed as u32, now_ns, arrival_ns, |f, h| {
            check_request(f, h, stream, reads, next, fed_end);
            requests += 1;
        });
        let f = &self.f;
        assert!(matches!(f.state, state::HUNTING | state::IN_SIZE | state::IN_BODY), "state {}", f.state);
        assert!(f.size_have <= 4 && f.header_have as usize <= HEADER_CAPTURE && f.tls <= 1, "{f:?}");
        assert!(requests <= MAX_STEPS_PER_READ / 2, "{requests} requests in one read");
        if outcome != Feed::Ok {
            assert_eq!(f.state, state::HUNTING, "{outcome:?} left the state in sync");
        }
        let frame = self.next;
        match outcome {
            Feed::Ok => {
                // Every byte fed is in a request reported or in the frame the state holds.
                let partial = match f.state {
                    state::IN_SIZE => f.size_have as usize,
                    _ => 4 + (f.body_len - f.body_left) as usize,
                };
                assert!(f.state != state::HUNTING);
                assert!(f.state != state::IN_SIZE || f.size_have < 4);
                assert!(f.state != state::IN_BODY || f.body_left > 0);
                assert_eq!(frame + partial, fed_end, "bytes fed but neither in a request nor in the state");
                check_frame_so_far(f, stream, reads, frame);
            }
            Feed::Tls => {
                assert_eq!(f.tls, 1);
                assert_eq!(&f.size_bytes[..4], &stream[frame..frame + 4]);
                assert!(looks_like_tls([f.size_bytes[0], f.size_bytes[1]]));
                self.tls_seen = true;
            }
            Feed::Garbage => {
                assert_eq!(&f.size_bytes[..4], &stream[frame..frame + 4]);
                assert!(!looks_like_tls([f.size_bytes[0], f.size_bytes[1]]));
                let size = be_u32(&f.size_bytes);
                let bad_size = !(FIXED_HEADER as u32..=MAX_REQUEST_SIZE).contains(&size);
                let bad_header = f.body_len == size
                    && f.header_have as usize >= FIXED_HEADER
                    && f.header[..FIXED_HEADER] == stream[frame + 4..frame + 4 + FIXED_HEADER]
                    && parse_request_header(f).is_none();
                assert!(bad_size || bad_header, "Garbage for a plausible frame at {frame}: {f:?}");
            }
            Feed::Unreadable => assert_eq!(how, FAULT, "Unreadable with every byte readable"),
            Feed::TooManyFrames => assert_eq!(requests, MAX_STEPS_PER_READ / 2),
        }
        assert_eq!(f.tls, self.tls_seen as u8, "tls flag");
        if how == READV && fed < len {
            self.f.state = state::HUNTING;
        }
    }
}

fn run(data: &[u8]) {
    let Some((&n, rest)) = data.split_last() else { return };
    let n = (n as usize).min(rest.len() / 2);
    let (stream, ops) = rest.split_at(rest.len() - 2 * n);
    let mut conn = Connection { stream, f: RequestFraming::NEW, reads: Vec::new(), next: 0, tls_seen: false };
    let mut at = 0;
    for op in ops.chunks_exact(2) {
        let (a, b) = (op[0], op[1] as usize);
        let len = (if a & 0x08 != 0 { b * 16 } else { b }).min(stream.len() - at);
        conn.read(at, len, a);
        at += len;
    }
    if at < stream.len() {
        conn.read(at, stream.len() - at, READ);
    }
}

/// Requests as the unit tests frame them (the testbed's `request_frame`, as framing.rs does),
/// `rest` zero bytes after the header, captured from real clients.
fn request(api_key: i16, version: i16, corr: i32, client: &str, rest: usize) -> Vec<u8> {
    request_frame(api_key, version, corr, client, &vec![0u8; rest])
}

/// `stream` cut into reads of `lens` (plain reads), then the rest.
fn input(stream: Vec<u8>, lens: &[u8]) -> Vec<u8> {
    let mut data = stream;
    for &len in lens {
        data.extend([READ, len]);
    }
    data.push(lens.len() as u8);
    data
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let produce = request(0, 1, 1, "kafka-python-producer-1", 186 - 33);
    let mut two = request(1, 1, 13, "rdkafka", 6);
    two.extend(request(3, 0, 14, "rdkafka", 0));
    let mut three = Vec::new();
    for corr in 1..=3 {
        three.extend(request(0, 1, corr, "p", 20));
    }
    let mut straddling = request(0, 3, 7, "producer-1", 300);
    straddling.extend(request(1, 4, 8, "consumer-1", 20));
    let mut late = request(0, 1, 1, "late", 50).split_off(4);
    late.extend(request(0, 1, 2, "late", 50));
    vec![
        ("jvm-split-produce", input(produce.clone(), &[4, 186])),
        ("byte-at-a-time", input(produce[..40].to_vec(), &[1; 40])),
        ("two-in-one-read", input(two, &[])),
        ("three-in-one-read", input(three, &[])),
        ("straddling-reads", input(straddling, &[1, 2, 3, 5, 6, 183, 126, 7])),
        ("long-client-id", input(request(0, 1, 5, &"c".repeat(200), 10), &[])),
        ("joined-mid-body", input(late, &[64, 4, 64])),
        ("tls-client-hello", input(vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xfc, 0x03, 0x03], &[])),
        // A readv cut at its middle, a close, a whole request, a read failing mid-body.
        ("readv-close-fault", {
            let mut d = [produce.as_slice(); 3].concat();
            d.extend([READV | 0x80, 190, CLOSED, 4, READ, 186, FAULT | 0x80, 190, 4]);
            d
        }),
    ]
}

/// Adds the seeds to the corpus directories libFuzzer was started on.
fn write_seeds() {
    for arg in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        let dir = std::path::Path::new(&arg);
        if !dir.is_dir() {
            continue;
        }
        for (name, bytes) in seeds() {
            let path = dir.join(format!("seed-{name}"));
            if !path.exists() {
                let _ = std::fs::write(path, bytes);
            }
        }
    }
}

fuzz_target!(init: write_seeds(), |data: &[u8]| run(data));
