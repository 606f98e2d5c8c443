//! Fuzzes the request body parser (`kstall_common::body`) as user space runs it on a
//! RequestEvent: the api_key and version of the header, the captured head (at most
//! HEADER_CAPTURE bytes) and, maybe, the last REQUEST_TAIL body bytes.
//!
//! Input: `[mode, a, b, rest...]`.
//! - mode even: raw. api_key `a & 1` (Produce or Fetch; `a & 2` another api), version `b % 20`;
//!   `rest` is the head (cut to HEADER_CAPTURE), then a tail when 16 more bytes remain. With
//!   `mode & 2` the head's first 4 bytes are overwritten with the api_key and version, so the
//!   body parsers see the garbage too.
//! - mode odd: a Produce built with the testbed's encoders from the input (version `b % 14`,
//!   acks, client_id and transactional_id and topic lengths from `rest`), its head and tail
//!   cut as the kernel captures them.
//!
//! Checked: it never panics (overflow checks on: build with `-a`); facts only for the APIs
//! that have them (acks for Produce, in -1..=1; a fetcher for Fetch; a v15+ Fetch's fetcher
//! only from a tail); a topic name is bytes of the head; the same head cut shorter never says
//! anything the whole head contradicts; a Produce built from the input parses back to its acks
//! and its first topic-partition, exactly as far as the head holds them.
#![no_main]

use kstall_common::{
    body::{BodyFacts, Fetcher, FirstPartition, TOPIC_NAME_CAP, Topic, api, parse_request_body},
    framing::{HEADER_CAPTURE, REQUEST_TAIL},
};
use kstall_testbed::kafka_protocol::{
    put_compact_array_len, put_compact_nullable_string, put_compact_string, put_empty_tagged_fields, put_string,
    request_frame, request_frame_v2,
};
use libfuzzer_sys::fuzz_target;

fn check_facts(api_key: i16, version: i16, head: &[u8], tail: Option<&[u8; REQUEST_TAIL]>, facts: &BodyFacts) {
    if api_key != api::PRODUCE {
        assert_eq!(facts.acks, None, "acks of api {api_key}");
    }
    if let Some(acks) = facts.acks {
        assert!((-1..=1).contains(&acks), "acks {acks}");
    }
    if api_key != api::FETCH || (version >= 15 && tail.is_none()) {
        assert_eq!(facts.fetcher, Fetcher::Unknown, "fetcher of api {api_key} v{version}, tail {tail:?}");
    }
    if api_key != api::PRODUCE && api_key != api::FETCH {
        assert_eq!(facts.first, None);
    }
    match facts.first {
        Some(FirstPartition { topic: Topic::Name(n), partition }) => {
            assert!(n.len as usize <= TOPIC_NAME_CAP);
            assert!(n.len == 0 || head.windows(n.len as usize).any(|w| w == n.as_bytes()), "a name not in the head");
            assert!(!n.cut || partition.is_none(), "a partition after a cut name");
            assert!(version < 13, "a name in v{version}");
        }
        Some(FirstPartition { topic: Topic::Id(id), .. }) => {
            assert!(head.windows(16).any(|w| w == id), "an id not in the head");
            assert!(version >= 13, "an id in v{version}");
        }
        None => {}
    }
    if let Some(FirstPartition { partition: Some(p), .. }) = facts.first {
        assert!(p >= 0);
    }
}

/// What a shorter head says, the whole one says too (a cut name grows, a partition may appear).
fn check_prefix(short: &BodyFacts, whole: &BodyFacts) {
    if short.acks.is_some() {
        assert_eq!(short.acks, whole.acks, "acks changed with more head");
    }
    if short.fetcher != Fetcher::Unknown {
        assert_eq!(short.fetcher, whole.fetcher, "fetcher changed with more head");
    }
    if let Some(s) = short.first {
        let w = whole.first.expect("a first partition lost with more head");
        match (s.topic, w.topic) {
            (Topic::Name(s), Topic::Name(w)) if s.cut => assert!(w.as_bytes().starts_with(s.as_bytes())),
            (s, w) => assert_eq!(s, w),
        }
        if s.partition.is_some() {
            assert_eq!(s.partition, w.partition);
        }
    }
}

fn parse_checked(api_key: i16, version: i16, head: &[u8], tail: Option<&[u8; REQUEST_TAIL]>) -> BodyFacts {
    let facts = parse_request_body(api_key, version, head, tail);
    check_facts(api_key, version, head, tail, &facts);
    assert_eq!(facts, parse_request_body(api_key, version, head, tail), "not deterministic");
    for cut in [0, head.len() / 2, head.len().saturating_sub(1)] {
        let short = parse_request_body(api_key, version, &head[..cut], tail);
        check_facts(api_key, version, &head[..cut], tail, &short);
        check_prefix(&short, &facts);
    }
    facts
}

fn raw(a: u8, b: u8, mode: u8, rest: &[u8]) {
    let api_key = if a & 2 != 0 { (a >> 2) as i16 } else { (a & 1) as i16 };
    let version = (b % 20) as i16;
    let mut head = rest[..rest.len().min(HEADER_CAPTURE)].to_vec();
    if mode & 2 != 0 && head.len() >= 4 {
        head[..2].copy_from_slice(&api_key.to_be_bytes());
        head[2..4].copy_from_slice(&version.to_be_bytes());
    }
    let tail = rest.get(HEADER_CAPTURE..).and_then(|t| t.first_chunk::<REQUEST_TAIL>());
    parse_checked(api_key, version, &head, tail);
}

fn byte(rest: &[u8], i: usize) -> u8 {
    rest.get(i).copied().unwrap_or(0)
}

/// A Produce from the input, parsed back from its head as the kernel captures it.
fn produce(b: u8, rest: &[u8]) {
    let version = (b % 14) as i16;
    let flexible = version >= 9;
    let acks = (byte(rest, 0) % 3) as i16 - 1;
    let client = "c".repeat(byte(rest, 1) as usize % 40);
    let txn = match byte(rest, 2) % 4 {
        0 => None,
        n => Some("t".repeat(n as usize * 3)),
    };
    let topic: String = "x".repeat(1 + byte(rest, 3) as usize % 60);
    let topic_id: [u8; 16] = core::array::from_fn(|i| byte(rest, 4 + i) | 1);
    let partition = i32::from_be_bytes([byte(rest, 20) & 0x7f, byte(rest, 21), byte(rest, 22), byte(rest, 23)]);

    let mut body = Vec::new();
    if version >= 3 {
        match (&txn, flexible) {
            (t, true) => put_compact_nullable_string(&mut body, t.as_deref()),
            (Some(t), false) => put_string(&mut body, t),
            (None, false) => body.extend((-1i16).to_be_bytes()),
        }
    }
    let acks_end = body.len() + 2;
    body.extend(acks.to_be_bytes());
    body.extend(1000i32.to_be_bytes());
    if flexible { put_compact_array_len(&mut body, 1) } else { body.extend(1i32.to_be_bytes()) }
    let topic_start = body.len();
    if version >= 13 {
        body.extend(topic_id);
    } else if flexible {
        put_compact_string(&mut body, &topic);
    } else {
        put_string(&mut body, &topic);
    }
    let topic_end = body.len();
    if flexible { put_compact_array_len(&mut body, 1) } else { body.extend(1i32.to_be_bytes()) }
    body.extend(partition.to_be_bytes());
    let partition_end = body.len();
    body.extend(&rest[rest.len().min(24)..]); // the records, as bytes
    if flexible {
        put_empty_tagged_fields(&mut body);
    }
    let frame = if flexible {
        request_frame_v2(api::PRODUCE, version, 1, &client, &body)
    } else {
        request_frame(api::PRODUCE, version, 1, &client, &body)
    };
    let header = frame.len() - 4 - body.len();
    let whole = &frame[4..];
    let head = &whole[..whole.len().min(HEADER_CAPTURE)];
    let facts = parse_checked(api::PRODUCE, version, head, whole.last_chunk());
    let held = |end: usize| header + end <= HEADER_CAPTURE;
    assert_eq!(facts.acks, held(acks_end).then_some(acks), "acks of {frame:?}");
    let topic_start = topic_start + if version >= 13 { 0 } else if flexible { 1 } else { 2 };
    match facts.first {
        None => {
            let known = if version >= 13 { held(topic_end) } else { held(topic_start) };
            assert!(!known, "no first topic though the head holds it: {frame:?}");
        }
        Some(FirstPartition { topic: Topic::Id(id), partition: p }) => {
            assert!(version >= 13 && held(topic_end));
            assert_eq!(id, topic_id);
            assert_eq!(p, held(partition_end).then_some(partition));
        }
        Some(FirstPartition { topic: Topic::Name(n), partition: p }) => {
            assert!(version < 13 && held(topic_start));
            assert!(topic.as_bytes().starts_with(n.as_bytes()));
            assert_eq!(n.cut, !held(topic_end), "{n:?}");
            assert_eq!(p, held(partition_end).then_some(partition));
        }
    }
}

fn run(data: &[u8]) {
    let [mode, a, b, rest @ ..] = data else { return };
    if mode & 1 == 0 { raw(*a, *b, *mode, rest) } else { produce(*b, rest) }
}

fuzz_target!(|data: &[u8]| run(data));
