//! Kafka request framing, as the broker's network thread reads it: an int32 size, then a body
//! that starts with the request header (api_key, api_version, correlation_id, client_id).
//!
//! The kernel feeds every socket read of a network thread through [`feed_request_bytes`], which
//! keeps per-connection state across reads: a JVM reads the 4-byte size and the body in
//! separate calls, but a read may also hold several requests or part of one. Only the size, the
//! first [`HEADER_CAPTURE`] body bytes and the last [`REQUEST_TAIL`] (when the read that brings
//! a request's last byte holds that many of its body) are copied; the rest of a body is skipped
//! by count.
//! The same code runs on the host in unit tests, over byte slices.

/// Bytes of a request body kept: the fixed header (10 bytes) and the client_id.
pub const HEADER_CAPTURE: usize = 64;
/// Room for a copy that starts below HEADER_CAPTURE: the verifier checks the offset and the
/// length bounds separately, and the length bound it can see is a mask (127, see the probes'
/// `bounded_len`), so the buffer covers their sum.
pub const HEADER_BUFFER: usize = 3 * HEADER_CAPTURE;
/// Bytes at the end of a request body kept: a Fetch v15+'s top-level tagged fields, where a
/// follower writes its ReplicaState (see `body`).
pub const REQUEST_TAIL: usize = 16;
/// Fixed part of a request header: api_key i16, api_version i16, correlation_id i32,
/// client_id length i16.
pub const FIXED_HEADER: usize = 10;
/// Bytes of client_id carried in events; longer ids are cut (and flagged).
pub const CLIENT_ID_CAP: usize = 48;
/// Larger sizes are not Kafka requests (the broker's socket.request.max.bytes defaults to 100 MiB).
pub const MAX_REQUEST_SIZE: u32 = 100 << 20;
/// Frame pieces (a size or a body) handled per read; more lose sync until the next read. A
/// JVM reads one piece per call; 4 (two whole requests) keeps the verifier's work per read
/// program near 35 ms (8 took 125-200 ms).
pub const MAX_STEPS_PER_READ: usize = 4;
/// Highest api_key and api_version accepted; a guard against reading garbage as a header.
pub const MAX_API_KEY: i16 = 127;
pub const MAX_API_VERSION: i16 = 63;

/// Where the parser stands on one connection.
pub mod state {
    /// Not in sync: the next read is taken to start a frame.
    pub const HUNTING: u8 = 0;
    pub const IN_SIZE: u8 = 1;
    pub const IN_BODY: u8 = 2;
}

/// Per-connection request framing state, kept in a kernel map between reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFraming {
    pub state: u8,
    /// Bytes of the size field read so far (0..=4).
    pub size_have: u8,
    /// Bytes of `header` captured so far (0..=HEADER_CAPTURE).
    pub header_have: u8,
    /// The connection's bytes looked like TLS records.
    pub tls: u8,
    pub body_left: u32,
    pub body_len: u32,
    /// Bytes of `tail` captured for the request just completed: REQUEST_TAIL or 0.
    pub tail_len: u8,
    pub _pad: [u8; 3],
    /// Start time of the read that brought the request's first byte.
    pub started_ns: u64,
    /// When the request's first bytes reached the socket, 0 when unknown.
    pub arrival_ns: u64,
    pub size_bytes: [u8; 8],
    pub header: [u8; HEADER_BUFFER],
    /// The last REQUEST_TAIL body bytes of the request just completed, when `tail_len` says so.
    pub tail: [u8; REQUEST_TAIL],
}

impl RequestFraming {
    pub const NEW: RequestFraming = RequestFraming {
        state: state::HUNTING,
        size_have: 0,
        header_have: 0,
        tls: 0,
        body_left: 0,
        body_len: 0,
        tail_len: 0,
        _pad: [0; 3],
        started_ns: 0,
        arrival_ns: 0,
        size_bytes: [0; 8],
        header: [0; HEADER_BUFFER],
        tail: [0; REQUEST_TAIL],
    };
}

/// A request header as parsed from the first body bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// -1 for a null client_id.
    pub client_id_len: i16,
}

/// Reads bytes of one read's buffer: user memory in the kernel, a slice in tests.
pub trait ByteSource {
    /// Copies `len` bytes at `offset` of the buffer to the start of `dst`; false when they
    /// cannot be read or do not fit. `len` is at most HEADER_CAPTURE.
    fn copy(&self, offset: u32, dst: &mut [u8], len: u32) -> bool;
    /// Copies the REQUEST_TAIL bytes at `offset` (the caller checked they are in the buffer);
    /// false when they cannot be read. A constant size: one bounded copy in the kernel.
    fn copy_tail(&self, offset: u32, dst: &mut [u8; REQUEST_TAIL]) -> bool;
}

impl ByteSource for &[u8] {
    fn copy(&self, offset: u32, dst: &mut [u8], len: u32) -> bool {
        let (offset, len) = (offset as usize, len as usize);
        match (self.get(offset..offset + len), dst.get_mut(..len)) {
            (Some(src), Some(dst)) => {
                dst.copy_from_slice(src);
                true
            }
            _ => false,
        }
    }

    fn copy_tail(&self, offset: u32, dst: &mut [u8; REQUEST_TAIL]) -> bool {
        let offset = offset as usize;
        match self.get(offset..offset + REQUEST_TAIL) {
            Some(src) => {
                dst.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// Why a read did not parse cleanly; the state is then HUNTING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Ok,
    /// The bytes look like TLS records: this listener cannot be parsed.
    Tls,
    /// A size or header out of range: not a Kafka request boundary.
    Garbage,
    /// The buffer could not be read.
    Unreadable,
    /// More frame pieces than MAX_STEPS_PER_READ in one read.
    TooManyFrames,
}

/// Header of a request whose `header_have` bytes are in `header`, if they hold a plausible one.
#[inline(always)]
pub fn parse_request_header(f: &RequestFraming) -> Option<RequestHeader> {
    if (f.header_have as usize) < FIXED_HEADER {
        return None;
    }
    let h = &f.header;
    let header = RequestHeader {
        api_key: i16::from_be_bytes([h[0], h[1]]),
        api_version: i16::from_be_bytes([h[2], h[3]]),
        correlation_id: i32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        client_id_len: i16::from_be_bytes([h[8], h[9]]),
    };
    let room = f.body_len as i64 - FIXED_HEADER as i64;
    let plausible = header.api_key >= 0
        && header.api_key <= MAX_API_KEY
        && header.api_version >= 0
        && header.api_version <= MAX_API_VERSION
        && header.client_id_len >= -1
        && header.client_id_len as i64 <= room;
    if plausible { Some(header) } else { None }
}

/// TLS record types handshake (0x16), alert (0x15) and application data (0x17), version 3.x.
#[inline(always)]
pub const fn looks_like_tls(first: [u8; 2]) -> bool {
    (first[0] == 0x15 || first[0] == 0x16 || first[0] == 0x17) && first[1] == 0x03
}

#[inline(always)]
fn min_u32(a: u32, b: u32) -> u32 {
    if a < b { a } else { b }
}

/// Feeds the `len` bytes of one socket read (started at `now_ns`, its first byte having reached
/// the socket at `arrival_ns`, 0 if unknown) through the framing state. Calls `on_request` with
/// the state as each request's last body byte is read; its header is then in the state, and its
/// last REQUEST_TAIL body bytes when this read held that many of them (`tail_len`; a tail that
/// cannot be copied is left out, the request is not).
#[inline(always)]
pub fn feed_request_bytes<S: ByteSource, F: FnMut(&RequestFraming, &RequestHeader)>(
    f: &mut RequestFraming,
    src: &S,
    len: u32,
    now_ns: u64,
    arrival_ns: u64,
    mut on_request: F,
) -> Feed {
    if f.state == state::HUNTING {
        f.state = state::IN_SIZE;
        f.size_have = 0;
    }
    let mut pos: u32 = 0;
    for _ in 0..MAX_STEPS_PER_READ {
        if pos >= len {
            return Feed::Ok;
        }
        let avail = len - pos;
        if f.state == state::IN_SIZE {
            if f.size_have == 0 {
                f.started_ns = now_ns;
                // Only the first request of a read is known to have arrived then.
                f.arrival_ns = if pos == 0 { arrival_ns } else { 0 };
            }
            let have = (f.size_have & 3) as usize;
            let mut take = min_u32(4 - have as u32, avail);
            if take > 4 {
                take = 4;
            }
            if !src.copy(pos, &mut f.size_bytes[have..], take) {
                f.state = state::HUNTING;
                return Feed::Unreadable;
            }
            f.size_have += take as u8;
            pos += take;
            if f.size_have < 4 {
                continue;
            }
            let b = f.size_bytes;
            if looks_like_tls([b[0], b[1]]) {
                f.tls = 1;
                f.state = state::HUNTING;
                return Feed::Tls;
            }
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            if size < FIXED_HEADER as u32 || size > MAX_REQUEST_SIZE {
                f.state = state::HUNTING;
                return Feed::Garbage;
            }
            f.state = state::IN_BODY;
            f.body_len = size;
            f.body_left = size;
            f.header_have = 0;
        } else {
            let take = min_u32(f.body_left, avail);
            let have = f.header_have as usize;
            if have < HEADER_CAPTURE {
                let mut want = min_u32((HEADER_CAPTURE - have) as u32, take);
                if want > HEADER_CAPTURE as u32 {
                    want = HEADER_CAPTURE as u32;
                }
                let at = have & (HEADER_CAPTURE - 1);
                if !src.copy(pos, &mut f.header[at..], want) {
                    f.state = state::HUNTING;
                    return Feed::Unreadable;
                }
                let before = f.header_have as usize;
                f.header_have += want as u8;
                // Check the fixed header as soon as it is complete.
                if before < FIXED_HEADER
                    && f.header_have as usize >= FIXED_HEADER
                    && parse_request_header(f).is_none()
                {
                    f.state = state::HUNTING;
                    return Feed::Garbage;
                }
            }
            if take == f.body_left {
                // The request ends in this read: its last bytes, if this read holds them all.
                f.tail_len = 0;
                if take >= REQUEST_TAIL as u32 && src.copy_tail(pos + take - REQUEST_TAIL as u32, &mut f.tail) {
                    f.tail_len = REQUEST_TAIL as u8;
                }
            }
            f.body_left -= take;
            pos += take;
            if f.body_left == 0 {
                f.state = state::IN_SIZE;
                f.size_have = 0;
                if let Some(header) = parse_request_header(f) {
                    on_request(f, &header);
                }
            }
        }
    }
    if pos < len {
        f.state = state::HUNTING;
        return Feed::TooManyFrames;
    }
    Feed::Ok
}

/// Response header from the first 8 bytes the broker writes for a response: int32 size (of
/// what follows) and int32 correlation_id. Returns (total bytes of the response, correlation_id).
#[inline(always)]
pub const fn parse_response_start(b: [u8; 8]) -> Option<(u32, i32)> {
    let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    // int32 correlation_id at least; a Kafka response is never larger than about 2 GiB.
    if size < 4 || size > i32::MAX as u32 - 4 {
        return None;
    }
    Some((size + 4, i32::from_be_bytes([b[4], b[5], b[6], b[7]])))
}

/// Copies the client_id out of a parsed header into a fixed array; returns its stored length
/// and whether it was cut. A null client_id (-1) is stored as empty.
#[inline(always)]
pub fn client_id(f: &RequestFraming, header: &RequestHeader, out: &mut [u8; CLIENT_ID_CAP]) -> (u16, bool) {
    let len = if header.client_id_len > 0 { header.client_id_len as usize } else { 0 };
    let captured = (f.header_have as usize).saturating_sub(FIXED_HEADER);
    let mut stored = len;
    if stored > captured {
        stored = captured;
    }
    if stored > CLIENT_ID_CAP {
        stored = CLIENT_ID_CAP;
    }
    let src = &f.header[FIXED_HEADER..FIXED_HEADER + CLIENT_ID_CAP];
    out.copy_from_slice(src);
    (stored as u16, stored < len)
}

#[cfg(test)]
mod tests {
    // A request as a Kafka client frames it (size, api_key, api_version, correlation_id,
    // client_id, then the rest): the encoder the project's test clients send to real brokers.
    use kstall_testbed::kafka_protocol::request_frame as request;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Seen {
        api_key: i16,
        corr: i32,
        client: String,
        started_ns: u64,
        arrival_ns: u64,
        body_len: u32,
    }

    /// Feeds `reads` (each one read's bytes, at time = its index) and returns the requests seen
    /// and each read's outcome.
    fn feed(f: &mut RequestFraming, reads: &[&[u8]]) -> (Vec<Seen>, Vec<Feed>) {
        let mut seen = Vec::new();
        let mut outcomes = Vec::new();
        for (i, bytes) in reads.iter().enumerate() {
            let t = i as u64 + 1;
            let outcome = feed_request_bytes(f, bytes, bytes.len() as u32, t * 10, t * 10 - 5, |f, h| {
                let mut id = [0u8; CLIENT_ID_CAP];
                let (len, _) = client_id(f, h, &mut id);
                seen.push(Seen {
                    api_key: h.api_key,
                    corr: h.correlation_id,
                    client: String::from_utf8_lossy(&id[..len as usize]).into_owned(),
                    started_ns: f.started_ns,
                    arrival_ns: f.arrival_ns,
                    body_len: f.body_len,
                });
            });
            outcomes.push(outcome);
        }
        (seen, outcomes)
    }

    /// Bytes captured from the real broker (kafka-syscall-shapes.md): kafka-python's Produce,
    /// read as the JVM reads it, 4 bytes then the 186-byte body.
    #[test]
    fn jvm_split_read_of_a_captured_produce() {
        let framed = request(0, 1, 1, "kafka-python-producer-1", &[0u8; 186 - 33]);
        assert_eq!(&framed[..4], b"\0\0\0\xba");
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &[&framed[..4], &framed[4..]]);
        assert_eq!(outcomes, [Feed::Ok, Feed::Ok]);
        assert_eq!(
            seen,
            [Seen {
                api_key: 0,
                corr: 1,
                client: "kafka-python-producer-1".into(),
                started_ns: 10,
                arrival_ns: 5,
                body_len: 186
            }]
        );
        assert_eq!(f.state, state::IN_SIZE);
    }

    #[test]
    fn several_requests_in_one_read() {
        let mut bytes = request(1, 1, 13, "rdkafka", &[0xff, 0xff, 0xff, 0xff, 0, 0]);
        bytes.extend(request(3, 0, 14, "rdkafka", &[]));
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &[&bytes]);
        assert_eq!(outcomes, [Feed::Ok]);
        let corrs: Vec<(i16, i32, &str)> = seen.iter().map(|s| (s.api_key, s.corr, s.client.as_str())).collect();
        assert_eq!(corrs, [(1, 13, "rdkafka"), (3, 14, "rdkafka")]);
        // Only the first request of the read is known to have arrived when the read's data did.
        assert_eq!(seen[0].arrival_ns, 5);
        assert_eq!(seen[1].arrival_ns, 0);
    }

    #[test]
    fn more_frames_than_the_verifier_budget_resyncs_at_the_next_read() {
        // Three requests in one read: two are parsed, the third is given up, and the parser
        // picks up again at the next read that starts a frame (as every JVM read does).
        let mut bytes = Vec::new();
        for corr in 1..=3 {
            bytes.extend(request(0, 1, corr, "p", &[0; 20]));
        }
        let next = request(0, 1, 4, "p", &[0; 20]);
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &[&bytes, &next[..4], &next[4..]]);
        assert_eq!(outcomes[0], Feed::TooManyFrames);
        assert_eq!(seen.iter().map(|s| s.corr).collect::<Vec<_>>(), [1, 2, 4]);
    }

    #[test]
    fn byte_at_a_time_and_a_request_straddling_reads() {
        let a = request(0, 3, 7, "producer-1", &[9; 300]);
        let b = request(1, 4, 8, "consumer-1", &[7; 20]);
        let mut all = a.clone();
        all.extend(&b);
        // Split inside the size, inside the header, inside the client_id, and across frames.
        let cuts = [1, 3, 6, 11, 17, 200, a.len() + 2, a.len() + 9, all.len()];
        let mut reads: Vec<&[u8]> = Vec::new();
        let mut from = 0;
        for &to in &cuts {
            reads.push(&all[from..to]);
            from = to;
        }
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &reads);
        assert!(outcomes.iter().all(|o| *o == Feed::Ok), "{outcomes:?}");
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].corr, seen[0].client.as_str()), (7, "producer-1"));
        assert_eq!((seen[1].corr, seen[1].client.as_str()), (8, "consumer-1"));
        // Each request's clock starts at the read that brought its first size byte.
        assert_eq!(seen[0].started_ns, 10);
        assert_eq!(seen[1].started_ns, 70);

        let mut f = RequestFraming::NEW;
        let singles: Vec<&[u8]> = all.chunks(1).collect();
        let (seen, _) = feed(&mut f, &singles);
        assert_eq!(seen.iter().map(|s| s.corr).collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn truncated_header_waits_for_the_rest() {
        let framed = request(0, 1, 42, "a-client-id", &[]);
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &[&framed[..9]]);
        assert!(seen.is_empty());
        assert_eq!(outcomes, [Feed::Ok]);
        assert_eq!(f.state, state::IN_BODY);
        let (seen, _) = feed(&mut f, &[&framed[9..]]);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].client, "a-client-id");
    }

    #[test]
    fn long_client_id_is_cut_not_overrun() {
        let long = "c".repeat(200);
        let framed = request(0, 1, 5, &long, &[1; 10]);
        let mut f = RequestFraming::NEW;
        let mut cut = None;
        feed_request_bytes(&mut f, &framed.as_slice(), framed.len() as u32, 1, 0, |f, h| {
            let mut id = [0u8; CLIENT_ID_CAP];
            cut = Some(client_id(f, h, &mut id));
        });
        assert_eq!(cut, Some((CLIENT_ID_CAP as u16, true)));
    }

    #[test]
    fn garbage_never_matches_and_never_panics() {
        // TLS ClientHello record header.
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &[&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xfc, 0x03, 0x03]]);
        assert!(seen.is_empty());
        assert_eq!((outcomes[0], f.tls), (Feed::Tls, 1));
        // Eventfd wakeups (fed only when the kernel lacks the sock tracepoints) read as the start
        // of a 16 MiB request that never completes: no request comes out of them.
        let wakeup = &b"\x01\0\0\0\0\0\0\0"[..];
        let mut f = RequestFraming::NEW;
        let (seen, _) = feed(&mut f, &[wakeup; 64]);
        assert!(seen.is_empty());
        // HTTP, a size too small, an api_key out of range.
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\0\0\0\x03abc",
            b"\0\0\0\x20\x7f\xff\0\0\0\0\0\0\0\0",
        ] {
            let mut f = RequestFraming::NEW;
            let (seen, outcomes) = feed(&mut f, &[junk]);
            assert!(seen.is_empty(), "{junk:?}");
            assert_ne!(outcomes[0], Feed::Ok, "{junk:?}");
            assert_eq!(f.state, state::HUNTING);
        }
        // Pseudo-random bytes: whatever is found must have a plausible header.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut bytes = [0u8; 97];
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let mut f = RequestFraming::NEW;
            let (seen, _) = feed(&mut f, &[&bytes[..40], &bytes[40..]]);
            for s in seen {
                assert!((0..=MAX_API_KEY).contains(&s.api_key));
                assert!(s.body_len as usize <= bytes.len());
            }
        }
    }

    #[test]
    fn resyncs_at_the_next_read_after_joining_mid_body() {
        // kstall attached while the broker was between the size read and the body read.
        let first = request(0, 1, 1, "late", &[0; 50]);
        let second = request(0, 1, 2, "late", &[0; 50]);
        let mut f = RequestFraming::NEW;
        let (seen, outcomes) = feed(&mut f, &[&first[4..], &second[..4], &second[4..]]);
        assert_eq!(outcomes[0], Feed::Garbage);
        assert_eq!(seen.iter().map(|s| s.corr).collect::<Vec<_>>(), [2]);
    }

    /// Each request's (correlation_id, tail) as `on_request` sees it, from `reads` of one stream.
    fn tails(reads: &[&[u8]]) -> Vec<(i32, Option<[u8; REQUEST_TAIL]>)> {
        let mut f = RequestFraming::NEW;
        let mut seen = Vec::new();
        for bytes in reads {
            let outcome = feed_request_bytes(&mut f, bytes, bytes.len() as u32, 1, 0, |f, h| {
                assert!(f.tail_len == 0 || f.tail_len as usize == REQUEST_TAIL);
                seen.push((h.correlation_id, (f.tail_len != 0).then_some(f.tail)));
            });
            assert_eq!(outcome, Feed::Ok);
        }
        seen
    }

    fn last_16(frame: &[u8]) -> Option<[u8; REQUEST_TAIL]> {
        frame.last_chunk().copied()
    }

    #[test]
    fn tail_of_a_request_whose_last_16_bytes_come_in_its_last_read() {
        let body: Vec<u8> = (0..200u8).collect();
        let framed = request(1, 17, 3, "consumer-1", &body);
        // As the JVM reads: the size, then the body.
        assert_eq!(tails(&[&framed[..4], &framed[4..]]), [(3, last_16(&framed))]);
        // The body in pieces, the last one exactly 16 bytes.
        let end = framed.len() - REQUEST_TAIL;
        assert_eq!(tails(&[&framed[..4], &framed[4..100], &framed[100..end], &framed[end..]]), [(3, last_16(&framed))]);
        // A body of exactly 16 bytes: its tail is the whole body, header included.
        let short = request(18, 3, 4, "abcd", &[0xee; 2]);
        assert_eq!(short.len(), 4 + REQUEST_TAIL);
        assert_eq!(tails(&[&short]), [(4, last_16(&short))]);
    }

    #[test]
    fn no_tail_when_the_last_read_holds_fewer_than_16_body_bytes() {
        let framed = request(1, 17, 5, "consumer-1", &[7; 150]);
        let end = framed.len() - (REQUEST_TAIL - 1);
        assert_eq!(tails(&[&framed[..4], &framed[4..end], &framed[end..]]), [(5, None)]);
        let end = framed.len() - 1;
        assert_eq!(tails(&[&framed[..end], &framed[end..]]), [(5, None)]);
        // A body shorter than 16 bytes never has one.
        let tiny = request(18, 0, 6, "", &[]);
        assert_eq!(tails(&[&tiny]), [(6, None)]);
        // A tail that cannot be copied is left out, the request is not.
        struct NoTail<'a>(&'a [u8]);
        impl ByteSource for NoTail<'_> {
            fn copy(&self, offset: u32, dst: &mut [u8], len: u32) -> bool {
                self.0.copy(offset, dst, len)
            }
            fn copy_tail(&self, _: u32, _: &mut [u8; REQUEST_TAIL]) -> bool {
                false
            }
        }
        let mut f = RequestFraming::NEW;
        let mut seen = Vec::new();
        let outcome = feed_request_bytes(&mut f, &NoTail(&framed), framed.len() as u32, 1, 0, |f, h| {
            seen.push((h.correlation_id, f.tail_len))
        });
        assert_eq!((outcome, seen), (Feed::Ok, vec![(5, 0)]));
    }

    #[test]
    fn several_requests_in_one_read_each_get_their_own_tail() {
        let a = request(0, 9, 1, "p", &(0..40u8).collect::<Vec<_>>());
        let b = request(1, 17, 2, "c", &(100..140u8).collect::<Vec<_>>());
        let c = request(1, 17, 3, "c", &(200..230u8).collect::<Vec<_>>());
        let mut first_read = a.clone();
        first_read.extend(&b);
        // Two whole requests, then one whose last 10 body bytes come in a read of their own.
        let split = c.len() - 10;
        let seen = tails(&[&first_read, &c[..split], &c[split..]]);
        assert_eq!(seen, [(1, last_16(&a)), (2, last_16(&b)), (3, None)]);
        // A tail-less request after one with a tail does not report the old tail.
        let seen = tails(&[&a, &c[..split], &c[split..]]);
        assert_eq!(seen, [(1, last_16(&a)), (3, None)]);
    }

    #[test]
    fn response_start_from_captured_writes() {
        // writev(93, [{"\0\0\0D", 4}, {"\0\0\0\1...", 68}]): size 68, correlation_id 1.
        assert_eq!(parse_response_start(*b"\0\0\0D\0\0\0\x01"), Some((72, 1)));
        // write(93, "\0\20\0(\0\0\0B..."): a 1 MiB Fetch response, correlation_id 0x42.
        assert_eq!(parse_response_start(*b"\0\x10\0(\0\0\0B"), Some((0x100028 + 4, 0x42)));
        assert_eq!(parse_response_start(*b"\0\0\0\x02\0\0\0\x01"), None);
        assert_eq!(parse_response_start(*b"\xff\xff\xff\xff\0\0\0\x01"), None);
    }
}
