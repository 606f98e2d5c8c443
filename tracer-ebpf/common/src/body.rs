//! What a request's captured bytes say beyond its header: a Produce's `acks`, whether a Fetch
//! comes from a follower (a replica) or a consumer, and the first topic-partition of either.
//! Run in user space on a RequestEvent's `head` (its first HEADER_CAPTURE body bytes, the
//! request header first) and `tail` (its last REQUEST_TAIL body bytes), never in the kernel.
//!
//! The layouts, from Kafka's message schemas (clients/src/main/resources/common/message):
//! - Produce: v0-2 `acks int16, timeout_ms int32, topics`; v3+ a nullable `transactional_id`
//!   first; v9+ flexible (request header v2: a tagged-field section after client_id; compact
//!   strings and arrays, lengths as unsigned varints + 1); v13+ a topic id (uuid) for the name.
//!   Then each topic's `partitions`, whose first field is the partition index (int32).
//! - Fetch: v0-14 `replica_id int32` first (>= 0 a follower broker, -1 a consumer, -2 a
//!   debugging consumer); then `max_wait_ms int32, min_bytes int32`, v3+ `max_bytes int32`, v4+
//!   `isolation_level int8`, v7+ `session_id int32, session_epoch int32`, then `topics` (a name,
//!   v13+ a topic id) and their `partitions` (the index first). v12+ flexible. v15+ dropped
//!   replica_id: a follower sends ReplicaState instead, tagged field 1 of the top-level struct
//!   (`replica_id int32, replica_epoch int64`, its own empty tagged-field section: 13 bytes),
//!   and a top-level struct's tagged fields come at the end of the body, after rack_id. So a
//!   follower's v15+ body ends `[tag 1][size 13][replica_id][replica_epoch][0]`, a consumer's
//!   with its rack_id and a tagged-field section of 0 fields.
//!
//! Every read is bounds-checked; bytes that do not hold what the version says give None or
//! Unknown, never a panic. No allocation: the types are Copy and fixed-size.

use crate::framing::REQUEST_TAIL;

/// api_key of Produce and Fetch.
pub mod api {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
}

/// Bytes of a topic name kept. A name in the head starts at least 20 bytes in (request header
/// and the fields before it), so a HEADER_CAPTURE (64) head never holds more than 44 of them.
pub const TOPIC_NAME_CAP: usize = 48;

/// Who sent a Fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetcher {
    /// Not a Fetch, or the bytes that would tell were not captured or did not parse.
    Unknown,
    /// A consumer (replica_id -1, or -2 for a debugging consumer; v15+: no ReplicaState).
    Consumer,
    /// A follower replica (or a KRaft voter fetching the metadata log): its broker (node) id.
    Follower { broker_id: i32 },
}

/// A topic name as far as it was captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicName {
    /// The first `len` bytes of the name.
    pub bytes: [u8; TOPIC_NAME_CAP],
    pub len: u8,
    /// The name is longer than `len`: the capture ended inside it.
    pub cut: bool,
}

impl TopicName {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(TOPIC_NAME_CAP)]
    }
}

/// A request's first topic: by name (Produce and Fetch before v13) or by id (v13+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Name(TopicName),
    /// The topic's uuid, as its 16 bytes on the wire.
    Id([u8; 16]),
}

/// The first topic of a Produce or Fetch, and its first partition's index when captured too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstPartition {
    pub topic: Topic,
    /// None when the head ends before it (or the topic name was cut).
    pub partition: Option<i32>,
}

/// What the body bytes say. Fields the request does not have, or whose bytes were not
/// captured or did not parse, are None or Unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyFacts {
    /// Produce: the acks the producer asked for (-1 all in-sync replicas, 0 none, 1 the leader).
    pub acks: Option<i16>,
    /// Fetch: who fetches.
    pub fetcher: Fetcher,
    /// Produce and Fetch: the first topic (and partition) the request names, if it names one.
    pub first: Option<FirstPartition>,
}

impl BodyFacts {
    pub const UNKNOWN: BodyFacts = BodyFacts { acks: None, fetcher: Fetcher::Unknown, first: None };
}

/// The request header v2 (a tagged-field section after client_id) and compact encodings in the
/// body: Produce v9+, Fetch v12+.
pub const fn is_flexible(api_key: i16, api_version: i16) -> bool {
    match api_key {
        api::PRODUCE => api_version >= 9,
        api::FETCH => api_version >= 12,
        _ => false,
    }
}

/// Facts of a request with header `api_key`/`api_version` from its first body bytes `head`
/// (starting with the request header, as RequestEvent's `head[..head_len]`) and its last
/// REQUEST_TAIL body bytes, when captured. A head whose header names another api_key or
/// version gives BodyFacts::UNKNOWN.
pub fn parse_request_body(api_key: i16, api_version: i16, head: &[u8], tail: Option<&[u8; REQUEST_TAIL]>) -> BodyFacts {
    let mut facts = BodyFacts::UNKNOWN;
    if api_key == api::FETCH && api_version >= 15 {
        facts.fetcher = tail.map_or(Fetcher::Unknown, fetcher_from_tail);
    }
    if api_key != api::PRODUCE && api_key != api::FETCH {
        return facts;
    }
    let flexible = is_flexible(api_key, api_version);
    let mut r = Reader { bytes: head, at: 0 };
    let header_ok = r.i16() == Some(api_key) && r.i16() == Some(api_version) && r.i32().is_some() && r.skip_nullable_string().is_some();
    if !header_ok || (flexible && r.skip_tagged_fields().is_none()) {
        return facts;
    }
    if api_key == api::PRODUCE {
        produce(&mut r, api_version, flexible, &mut facts);
    } else {
        fetch(&mut r, api_version, flexible, &mut facts);
    }
    facts
}

/// A v15+ Fetch's sender, from the end of its body.
fn fetcher_from_tail(tail: &[u8; REQUEST_TAIL]) -> Fetcher {
    // [tag 1][size 13][replica_id int32][replica_epoch int64][0 tagged fields], at the end; the
    // byte before is the top-level count of tagged fields (or the end of a ClusterId, tag 0).
    let t = tail;
    let replica_id = i32::from_be_bytes([t[3], t[4], t[5], t[6]]);
    let epoch = i64::from_be_bytes([t[7], t[8], t[9], t[10], t[11], t[12], t[13], t[14]]);
    if t[1] == 1 && t[2] == 13 && t[15] == 0 && replica_id >= 0 && epoch >= -1 {
        return Fetcher::Follower { broker_id: replica_id };
    }
    // Without a ReplicaState the body ends with a tagged-field section of 0 fields (after
    // rack_id). Anything else is a tagged field this parser does not know.
    if t[15] == 0 { Fetcher::Consumer } else { Fetcher::Unknown }
}

fn produce(r: &mut Reader, version: i16, flexible: bool, facts: &mut BodyFacts) {
    if version >= 3 {
        let skipped = if flexible { r.skip_compact_nullable_string() } else { r.skip_nullable_string() };
        if skipped.is_none() {
            return;
        }
    }
    let Some(acks) = r.i16() else { return };
    if !(-1..=1).contains(&acks) {
        // The broker refuses any other value: these bytes are not what the version says.
        return;
    }
    facts.acks = Some(acks);
    if r.i32().is_none() {
        return; // timeout_ms
    }
    facts.first = first_partition(r, version >= 13, flexible);
}

fn fetch(r: &mut Reader, version: i16, flexible: bool, facts: &mut BodyFacts) {
    if version <= 14 {
        let Some(replica_id) = r.i32() else { return };
        facts.fetcher = match replica_id {
            0.. => Fetcher::Follower { broker_id: replica_id },
            -1 | -2 => Fetcher::Consumer,
            _ => return,
        };
    }
    // max_wait_ms, min_bytes; v3+ max_bytes; v4+ isolation_level; v7+ session id and epoch.
    let fixed = 8 + if version >= 3 { 4 } else { 0 } + if version >= 4 { 1 } else { 0 } + if version >= 7 { 8 } else { 0 };
    if r.skip(fixed).is_none() {
        return;
    }
    facts.first = first_partition(r, version >= 13, flexible);
}

/// From the topics array on: the first topic, then its first partition's index.
fn first_partition(r: &mut Reader, by_id: bool, flexible: bool) -> Option<FirstPartition> {
    if r.array_len(flexible)? == 0 {
        return None;
    }
    let topic = if by_id {
        Topic::Id(r.array::<16>()?)
    } else {
        let len = if flexible { r.uvarint()?.checked_sub(1)? as usize } else { usize::try_from(r.i16()?).ok()? };
        let captured = r.rest().len().min(len).min(TOPIC_NAME_CAP);
        let mut bytes = [0u8; TOPIC_NAME_CAP];
        bytes[..captured].copy_from_slice(&r.rest()[..captured]);
        let name = TopicName { bytes, len: captured as u8, cut: captured < len };
        if name.cut {
            return Some(FirstPartition { topic: Topic::Name(name), partition: None });
        }
        r.skip(len)?;
        Topic::Name(name)
    };
    let partition = match r.array_len(flexible) {
        Some(n) if n > 0 => r.i32().filter(|p| *p >= 0),
        _ => None,
    };
    Some(FirstPartition { topic, partition })
}

/// Big-endian reads over the captured bytes, each one checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or(&[])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = *self.rest().first_chunk::<N>()?;
        self.at += N;
        Some(bytes)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if n > self.rest().len() {
            return None;
        }
        self.at += n;
        Some(())
    }

    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    /// An unsigned varint of at most 5 bytes (a u32).
    fn uvarint(&mut self) -> Option<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let [b] = self.array::<1>()?;
            let bits = (b & 0x7f) as u32;
            if i == 4 && bits > 0x0f {
                return None;
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// int16 length (-1: null) and the bytes.
    fn skip_nullable_string(&mut self) -> Option<()> {
        match self.i16()? {
            -1 => Some(()),
            len => self.skip(usize::try_from(len).ok()?),
        }
    }

    /// Unsigned varint length + 1 (0: null) and the bytes.
    fn skip_compact_nullable_string(&mut self) -> Option<()> {
        match self.uvarint()? {
            0 => Some(()),
            n => self.skip(n as usize - 1),
        }
    }

    /// An array's element count: int32, or (flexible) an unsigned varint count + 1; null (-1,
    /// or 0 compact) counts as empty.
    fn array_len(&mut self, flexible: bool) -> Option<u32> {
        if flexible {
            Some(self.uvarint()?.saturating_sub(1))
        } else {
            match self.i32()? {
                -1 => Some(0),
                n => u32::try_from(n).ok(),
            }
        }
    }

    /// A tagged-field section: a count, then each field's tag, size and bytes.
    fn skip_tagged_fields(&mut self) -> Option<()> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use kstall_testbed::kafka_protocol::{
        produce_v0, produce_v9, put_compact_array_len, put_compact_nullable_string, put_compact_string, put_empty_tagged_fields,
        put_string, put_uvarint, request_frame, request_frame_v2,
    };

    use super::*;
    use crate::framing::HEADER_CAPTURE;

    const TOPIC_ID: [u8; 16] = *b"\x8a\x1c\x03\xf1\x5e\x27\x4b\x10\x9d\x42\x11\x22\x33\x44\x55\x66";

    /// A request as the kernel reports it: `frame` (size first) cut to its head and tail.
    fn facts_of(frame: &[u8]) -> BodyFacts {
        let body = &frame[4..];
        let head = &body[..body.len().min(HEADER_CAPTURE)];
        let tail = body.last_chunk::<REQUEST_TAIL>();
        let (api_key, api_version) = (i16::from_be_bytes([body[0], body[1]]), i16::from_be_bytes([body[2], body[3]]));
        parse_request_body(api_key, api_version, head, tail)
    }

    fn name(topic: &str) -> Topic {
        let mut bytes = [0; TOPIC_NAME_CAP];
        bytes[..topic.len()].copy_from_slice(topic.as_bytes());
        Topic::Name(TopicName { bytes, len: topic.len() as u8, cut: false })
    }

    fn first(topic: Topic, partition: i32) -> Option<FirstPartition> {
        Some(FirstPartition { topic, partition: Some(partition) })
    }

    /// A Produce body: `transactional_id` (v3+), acks, timeout, one topic (by id from v13), one
    /// partition, a 60-byte record batch (as bytes, not parsed).
    fn produce(version: i16, txn: Option<&str>, acks: i16, topic: &str, partition: i32) -> Vec<u8> {
        let flexible = version >= 9;
        let mut b = Vec::new();
        if version >= 3 {
            if flexible {
                put_compact_nullable_string(&mut b, txn);
            } else {
                match txn {
                    Some(t) => put_string(&mut b, t),
                    None => b.extend((-1i16).to_be_bytes()),
                }
            }
        }
        b.extend(acks.to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        let records = [0x5au8; 60];
        if flexible {
            put_compact_array_len(&mut b, 1);
            if version >= 13 { b.extend(TOPIC_ID) } else { put_compact_string(&mut b, topic) }
            put_compact_array_len(&mut b, 1);
            b.extend(partition.to_be_bytes());
            put_uvarint(&mut b, records.len() as u64 + 1);
            b.extend(records);
            put_empty_tagged_fields(&mut b);
            put_empty_tagged_fields(&mut b);
            put_empty_tagged_fields(&mut b);
        } else {
            b.extend(1i32.to_be_bytes());
            put_string(&mut b, topic);
            b.extend(1i32.to_be_bytes());
            b.extend(partition.to_be_bytes());
            b.extend((records.len() as i32).to_be_bytes());
            b.extend(records);
        }
        let (key, corr) = (api::PRODUCE, 17);
        if flexible { request_frame_v2(key, version, corr, "p1", &b) } else { request_frame(key, version, corr, "p1", &b) }
    }

    /// Who sends a Fetch: a follower's broker id (its epoch 7) or a consumer, with its rack.
    #[derive(Clone, Copy)]
    enum From {
        Follower(i32),
        Consumer(&'static str),
    }

    /// A Fetch body of `version` with one topic and one partition (as the Java clients write
    /// them), and forgotten topics empty.
    fn fetch(version: i16, client: &str, from: From, topic: &str, partition: i32) -> Vec<u8> {
        let flexible = version >= 12;
        let mut b = Vec::new();
        if version <= 14 {
            b.extend(match from { From::Follower(id) => id, From::Consumer(_) => -1 }.to_be_bytes());
        }
        b.extend(500i32.to_be_bytes()); // max_wait_ms
        b.extend(1i32.to_be_bytes()); // min_bytes
        if version >= 3 {
            b.extend(52_428_800i32.to_be_bytes());
        }
        if version >= 4 {
            b.push(0); // isolation_level
        }
        if version >= 7 {
            b.extend(0i32.to_be_bytes()); // session_id
            b.extend((-1i32).to_be_bytes()); // session_epoch
        }
        let array = |b: &mut Vec<u8>, n: usize| if flexible { put_compact_array_len(b, n) } else { b.extend((n as i32).to_be_bytes()) };
        array(&mut b, 1);
        if version >= 13 {
            b.extend(TOPIC_ID);
        } else if flexible {
            put_compact_string(&mut b, topic);
        } else {
            put_string(&mut b, topic);
        }
        array(&mut b, 1);
        b.extend(partition.to_be_bytes());
        if version >= 9 {
            b.extend(5i32.to_be_bytes()); // current_leader_epoch
        }
        b.extend(1234i64.to_be_bytes()); // fetch_offset
        if version >= 12 {
            b.extend((-1i32).to_be_bytes()); // last_fetched_epoch
        }
        if version >= 5 {
            b.extend((-1i64).to_be_bytes()); // log_start_offset
        }
        b.extend(1_048_576i32.to_be_bytes()); // partition_max_bytes
        if flexible {
            put_empty_tagged_fields(&mut b); // partition
            put_empty_tagged_fields(&mut b); // topic
        }
        if version >= 7 {
            array(&mut b, 0); // forgotten_topics_data
        }
        if version >= 11 {
            let rack = if let From::Consumer(rack) = from { rack } else { "" };
            if flexible { put_compact_string(&mut b, rack) } else { put_string(&mut b, rack) }
        }
        if flexible {
            match from {
                From::Follower(id) if version >= 15 => {
                    // One top-level tagged field: ReplicaState (tag 1, 13 bytes).
                    put_uvarint(&mut b, 1);
                    put_uvarint(&mut b, 1);
                    put_uvarint(&mut b, 13);
                    b.extend(id.to_be_bytes());
                    b.extend(7i64.to_be_bytes());
                    put_empty_tagged_fields(&mut b);
                }
                _ => put_empty_tagged_fields(&mut b),
            }
        }
        let key = api::FETCH;
        if flexible { request_frame_v2(key, version, 9, client, &b) } else { request_frame(key, version, 9, client, &b) }
    }

    #[test]
    fn produce_acks_and_first_partition_in_every_version_family() {
        for version in 0..=13 {
            for (acks, txn) in [(-1, None), (1, None), (0, Some("tx-1"))] {
                if version < 3 && txn.is_some() {
                    continue;
                }
                let topic = if version >= 13 { Topic::Id(TOPIC_ID) } else { name("orders") };
                let facts = facts_of(&produce(version, txn, acks, "orders", 3));
                let want = BodyFacts { acks: Some(acks), fetcher: Fetcher::Unknown, first: first(topic, 3) };
                assert_eq!(facts, want, "Produce v{version} acks {acks} txn {txn:?}");
            }
        }
    }

    #[test]
    fn the_testbed_producers_frames() {
        // What SyncProducer sends: acks=1 (v0 to Kafka 0.9, v9 to KRaft brokers).
        let v0 = facts_of(&produce_v0(1, "kstall-sync-producer", "stall-test", b"value"));
        assert_eq!((v0.acks, v0.first), (Some(1), first(name("stall-test"), 0)));
        let v9 = facts_of(&produce_v9(2, "kstall-sync-producer", "stall-test", b"value"));
        assert_eq!((v9.acks, v9.first), (Some(1), first(name("stall-test"), 0)));
    }

    #[test]
    fn fetch_follower_or_consumer_in_every_version_family() {
        for version in 0..=18 {
            for from in [From::Follower(2), From::Consumer(""), From::Consumer("rack-a")] {
                let facts = facts_of(&fetch(version, "c", from, "orders", 4));
                let fetcher = match from {
                    From::Follower(id) => Fetcher::Follower { broker_id: id },
                    From::Consumer(_) => Fetcher::Consumer,
                };
                let topic = if version >= 13 { Topic::Id(TOPIC_ID) } else { name("orders") };
                assert_eq!(facts, BodyFacts { acks: None, fetcher, first: first(topic, 4) }, "Fetch v{version}");
            }
        }
    }

    #[test]
    fn a_follower_v17_fetch_ends_with_its_replica_state() {
        // Broker 3, epoch 7: [1 tagged field][tag 1][13 bytes][id][epoch][0].
        let frame = fetch(17, "broker-3-fetcher-0", From::Follower(3), "orders", 0);
        let tail = frame.last_chunk::<REQUEST_TAIL>().unwrap();
        assert_eq!(tail, b"\x01\x01\x0d\0\0\0\x03\0\0\0\0\0\0\0\x07\0");
        assert_eq!(facts_of(&frame).fetcher, Fetcher::Follower { broker_id: 3 });
        // A KRaft voter's Fetch also sends ClusterId (tag 0) before it, and epoch -1.
        let mut voter = *tail;
        voter[0] = b'Q';
        voter[7..15].copy_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(fetcher_from_tail(&voter), Fetcher::Follower { broker_id: 3 });
        // Without the tail (the last read held fewer than 16 body bytes), v15+ cannot tell.
        let body = &frame[4..];
        assert_eq!(parse_request_body(1, 17, &body[..HEADER_CAPTURE], None).fetcher, Fetcher::Unknown);
        // An unknown trailing tagged field: Unknown, not Consumer.
        let mut other = *tail;
        other[15] = 0x33;
        assert_eq!(fetcher_from_tail(&other), Fetcher::Unknown);
    }

    #[test]
    fn a_long_client_id_leaves_only_what_the_head_holds() {
        // The head ends inside the first topic's name: a cut name, no partition.
        let client = "consumer-1";
        let facts = facts_of(&fetch(11, client, From::Consumer(""), "a-topic-with-a-rather-long-name", 0));
        assert_eq!(facts.fetcher, Fetcher::Consumer);
        let Some(FirstPartition { topic: Topic::Name(n), partition: None }) = facts.first else { panic!("{facts:?}") };
        assert!(n.cut && n.len > 0 && b"a-topic-with-a-rather-long-name".starts_with(n.as_bytes()), "{n:?}");
        // Past the head entirely: v17's topic id and partition are 43 body bytes in.
        let facts = facts_of(&fetch(17, &"c".repeat(40), From::Consumer(""), "t", 0));
        assert_eq!(facts, BodyFacts { acks: None, fetcher: Fetcher::Consumer, first: None });
        // A client_id longer than the head: nothing.
        let facts = facts_of(&request_frame_v2(0, 9, 1, &"x".repeat(80), &[0; 40]));
        assert_eq!(facts, BodyFacts::UNKNOWN);
    }

    #[test]
    fn header_tagged_fields_are_skipped() {
        // Request header v2 with one tagged field (tag 5, 3 bytes) before the body.
        let frame = produce(9, None, -1, "t", 1);
        let mut body = frame[4..].to_vec();
        let after_client = 10 + 2;
        assert_eq!(body[after_client], 0);
        body.splice(after_client..after_client + 1, [1, 5, 3, 0xaa, 0xbb, 0xcc]);
        let facts = parse_request_body(0, 9, &body[..HEADER_CAPTURE.min(body.len())], None);
        assert_eq!((facts.acks, facts.first), (Some(-1), first(name("t"), 1)));
    }

    #[test]
    fn other_apis_and_mismatched_heads_give_nothing() {
        let frame = produce(9, None, -1, "t", 1);
        let body = &frame[4..];
        // The head's header must be the request's.
        assert_eq!(parse_request_body(0, 8, body, None), BodyFacts::UNKNOWN);
        assert_eq!(parse_request_body(1, 9, body, None), BodyFacts::UNKNOWN);
        assert_eq!(parse_request_body(3, 9, body, body.last_chunk()), BodyFacts::UNKNOWN);
        assert_eq!(parse_request_body(0, 9, &[], None), BodyFacts::UNKNOWN);
        // acks out of what the broker accepts: not believed.
        let facts = facts_of(&produce(3, None, 7, "t", 1));
        assert_eq!(facts, BodyFacts::UNKNOWN);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x243f_6a88_85a3_08d3;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut bytes = [0u8; HEADER_CAPTURE + REQUEST_TAIL];
            for b in bytes.iter_mut() {
                *b = next() as u8;
            }
            let r = next();
            let (key, version) = ((r & 1) as i16, ((r >> 8) % 20) as i16);
            // The header matches half of the time, so the body parsers see garbage too.
            if r & 2 != 0 {
                bytes[..2].copy_from_slice(&key.to_be_bytes());
                bytes[2..4].copy_from_slice(&version.to_be_bytes());
                bytes[8..10].copy_from_slice(&((r >> 16) as i16 % 8).to_be_bytes());
            }
            let len = (r >> 32) as usize % (HEADER_CAPTURE + 1);
            let facts = parse_request_body(key, version, &bytes[..len], bytes.last_chunk());
            if let Some(acks) = facts.acks {
                assert!((-1..=1).contains(&acks));
            }
            if let Some(FirstPartition { topic: Topic::Name(n), .. }) = facts.first {
                assert!(n.len as usize <= TOPIC_NAME_CAP);
            }
        }
    }
}
