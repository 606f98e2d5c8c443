//! The parts of Kafka's wire protocol the project's own test clients speak, written out by
//! hand so that what they measure has no client library in it: request framing (header v1 and
//! the flexible header v2), ApiVersions (v3, and v0 for a broker that refuses v3), Produce v0
//! (a v0 message set, for Kafka 0.9) and v9 (a v2 record batch, for brokers since 2.4), and
//! Metadata requests for all topics.
//!
//! Kafka 4.x refuses the protocol versions older than Kafka 2.1 (KIP-896) by closing the
//! connection: Produce v0-v2 (which its ApiVersions still lists, for librdkafka's sake,
//! KAFKA-18659) and Fetch v0-v3 among them. It still answers Metadata v0-v3 (4.4.0 does).
//!
//! [`SyncProducer`] asks ApiVersions and speaks Produce v9 ([`Handshake::ApiVersions`]), or
//! speaks Produce v0 without asking to Kafka 0.9, which predates ApiVersions
//! ([`Handshake::Kafka0_9`]).
use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::TcpStream,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};

pub const API_PRODUCE: i16 = 0;
pub const API_METADATA: i16 = 3;
pub const API_API_VERSIONS: i16 = 18;
pub const API_FETCH: i16 = 1;
pub const API_CREATE_TOPICS: i16 = 19;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// What the ApiVersions v3 request says this client is (the broker checks both against
/// `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`).
const CLIENT_SOFTWARE_NAME: &str = "kstall-testbed";
const CLIENT_SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Responses larger than this are taken for a broken stream rather than allocated.
const MAX_RESPONSE: usize = 100 << 20;

// ---------------------------------------------------------------------------------------------
// Primitives

/// Unsigned varint (LEB128, 7 bits a byte, low group first), as Kafka's flexible versions
/// encode lengths and tagged fields.
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Signed varint (zigzag, then [`put_uvarint`]), as record fields use it.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, value as i64);
}

/// Signed varlong (zigzag, then [`put_uvarint`]); for values in i32 range the bytes are the
/// same as [`put_varint`]'s.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// INT16-length string (header v1's client_id, non-flexible bodies).
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// COMPACT_STRING: unsigned varint length+1, then the bytes.
pub fn put_compact_string(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64 + 1);
    out.extend(s.as_bytes());
}

/// COMPACT_NULLABLE_STRING: as [`put_compact_string`], null as a 0 length byte.
pub fn put_compact_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_compact_string(out, s),
        None => out.push(0),
    }
}

/// A COMPACT_ARRAY's length: unsigned varint count+1 (0 would be a null array).
pub fn put_compact_array_len(out: &mut Vec<u8>, count: usize) {
    put_uvarint(out, count as u64 + 1);
}

/// An empty tagged-field section (count 0), which ends every flexible structure.
pub fn put_empty_tagged_fields(out: &mut Vec<u8>) {
    out.push(0);
}

const fn crc_table(reflected_polynomial: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ reflected_polynomial } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

const CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
const CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

fn crc_with(table: &[u32; 256], bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// CRC-32 (IEEE), as Kafka's v0/v1 messages carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc_with(&CRC32_TABLE, bytes)
}

/// CRC-32C (Castagnoli), as Kafka's v2 record batches carry it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_with(&CRC32C_TABLE, bytes)
}

/// Reads Kafka's primitive types from a response, failing (not panicking) when it runs short.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// What has not been read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(n <= self.remaining(), "response ends at byte {} of {}, {n} more wanted", self.pos, self.buf.len());
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    pub fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn uvarint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.array::<1>()?[0];
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint longer than 10 bytes at byte {}", self.pos)
    }

    /// A zigzag varint or varlong.
    pub fn varlong(&mut self) -> Result<i64> {
        let raw = self.uvarint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// INT16-length nullable string.
    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(len as usize)?).into_owned()))
    }

    /// INT16-length string.
    pub fn string(&mut self) -> Result<String> {
        self.nullable_string()?.context("null where a string was expected")
    }

    pub fn compact_nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.uvarint()?;
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(len as usize - 1)?).into_owned()))
    }

    pub fn compact_string(&mut self) -> Result<String> {
        self.compact_nullable_string()?.context("null where a compact string was expected")
    }

    /// INT32-length array's count; None for a null array.
    pub fn array_len(&mut self) -> Result<Option<usize>> {
        let len = self.i32()?;
        Ok((len >= 0).then_some(len as usize))
    }

    /// COMPACT_ARRAY's count; None for a null array.
    pub fn compact_array_len(&mut self) -> Result<Option<usize>> {
        let len = self.uvarint()?;
        Ok(len.checked_sub(1).map(|n| n as usize))
    }

    /// Skips a tagged-field section (count, then tag, size and data for each).
    pub fn skip_tagged_fields(&mut self) -> Result<()> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()?;
            self.bytes(size as usize)?;
        }
        Ok(())
    }
}

/// A short name for the Kafka error codes these clients are likely to meet.
pub fn error_name(code: i16) -> &'static str {
    match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        42 => "INVALID_REQUEST",
        43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        87 => "INVALID_RECORD",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// A request as a Kafka client frames it: int32 size, then the header v1 (api_key, api_version,
/// correlation_id, client_id as an int16-length string), then `body`.
pub fn request_frame(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    framed(api_key, api_version, correlation_id, client_id, false, body)
}

/// A request with the flexible header v2 (what flexible request versions use): header v1's
/// fields, client_id still an int16-length string, then an empty tagged-field section.
pub fn request_frame_v2(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    framed(api_key, api_version, correlation_id, client_id, true, body)
}

fn framed(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, tagged_fields: bool, body: &[u8]) -> Vec<u8> {
    let header = 10 + client_id.len() + tagged_fields as usize;
    let mut frame = Vec::with_capacity(4 + header + body.len());
    frame.extend(((header + body.len()) as i32).to_be_bytes());
    frame.extend(api_key.to_be_bytes());
    frame.extend(api_version.to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend((client_id.len() as i16).to_be_bytes());
    frame.extend(client_id.as_bytes());
    if tagged_fields {
        put_empty_tagged_fields(&mut frame);
    }
    frame.extend(body);
    frame
}

/// Reads one size-prefixed response; returns it without the size.
pub fn read_frame(stream: &mut impl Read) -> Result<Vec<u8>> {
    read_frame_or_closed(stream)?.context("the broker closed the connection")
}

/// As [`read_frame`], with None when the peer closed (or reset) the connection before sending
/// the first byte.
fn read_frame_or_closed(stream: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if closed(&e) => return Ok(None),
        Err(e) => return Err(e).context("reading a response's size"),
    }
    let size = i32::from_be_bytes(size);
    ensure!((0..=MAX_RESPONSE as i32).contains(&size), "response size {size}: not a Kafka response");
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).context("reading a response")?;
    Ok(Some(body))
}

fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
    )
}

// ---------------------------------------------------------------------------------------------
// ApiVersions

/// An ApiVersions request: v3 and up flexible (header v2, client software name and version),
/// v0-v2 an empty body behind header v1.
pub fn api_versions_request(version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    if version >= 3 {
        let mut body = Vec::new();
        put_compact_string(&mut body, CLIENT_SOFTWARE_NAME);
        put_compact_string(&mut body, CLIENT_SOFTWARE_VERSION);
        put_empty_tagged_fields(&mut body);
        request_frame_v2(API_API_VERSIONS, version, correlation_id, client_id, &body)
    } else {
        request_frame(API_API_VERSIONS, version, correlation_id, client_id, &[])
    }
}

/// A decoded ApiVersions response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub error_code: i16,
    /// api_key -> (min_version, max_version).
    pub versions: BTreeMap<i16, (i16, i16)>,
    pub throttle_time_ms: i32,
}

/// Decodes an ApiVersions response body of `version` (the bytes after the response header,
/// which for ApiVersions is always v0: the correlation id alone, even for v3). A broker that
/// does not speak `version` answers UNSUPPORTED_VERSION with a v0 body (listing the ApiVersions
/// versions it does speak); that is decoded as v0.
pub fn decode_api_versions_response(version: i16, body: &[u8]) -> Result<ApiVersionsResponse> {
    let mut r = Reader::new(body);
    let error_code = r.i16()?;
    let flexible = version >= 3 && error_code != UNSUPPORTED_VERSION;
    let count = if flexible { r.compact_array_len()? } else { r.array_len()? };
    let mut versions = BTreeMap::new();
    for _ in 0..count.unwrap_or(0) {
        let api_key = r.i16()?;
        let min = r.i16()?;
        let max = r.i16()?;
        if flexible {
            r.skip_tagged_fields()?;
        }
        versions.insert(api_key, (min, max));
    }
    let mut throttle_time_ms = 0;
    if version >= 1 && error_code != UNSUPPORTED_VERSION {
        throttle_time_ms = r.i32()?;
    }
    if flexible {
        r.skip_tagged_fields()?; // supported and finalized features, among others
    }
    Ok(ApiVersionsResponse { error_code, versions, throttle_time_ms })
}

// ---------------------------------------------------------------------------------------------
// Produce

/// A Produce v0 request: header, acks=1, one topic, partition 0, a one-message v0 message set.
pub fn produce_v0(correlation_id: i32, client_id: &str, topic: &str, value: &[u8]) -> Vec<u8> {
    // Message v0: crc, magic 0, attributes 0, null key, value.
    let mut message = vec![0u8, 0u8];
    message.extend((-1i32).to_be_bytes());
    message.extend((value.len() as i32).to_be_bytes());
    message.extend(value);
    let mut crc_and_message = crc32(&message).to_be_bytes().to_vec();
    crc_and_message.extend(message);
    let mut message_set = 0i64.to_be_bytes().to_vec();
    message_set.extend((crc_and_message.len() as i32).to_be_bytes());
    message_set.extend(crc_and_message);

    let mut body = Vec::new();
    body.extend(1i16.to_be_bytes()); // acks
    body.extend(10_000i32.to_be_bytes()); // timeout ms
    body.extend(1i32.to_be_bytes());
    put_string(&mut body, topic);
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend((message_set.len() as i32).to_be_bytes());
    body.extend(message_set);
    request_frame(API_PRODUCE, 0, correlation_id, client_id, &body)
}

/// Where in a v2 record batch its fields are (byte offsets from the batch's start).
pub mod batch_layout {
    /// batchLength: the bytes after this field.
    pub const LENGTH: usize = 8;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    /// The CRC-32C covers from attributes to the end.
    pub const ATTRIBUTES: usize = 21;
    pub const RECORDS_COUNT: usize = 57;
    pub const RECORDS: usize = 61;
}

/// A v2 record batch (magic 2) holding one record: no key, `value`, no headers, timestamp
/// `timestamp_ms`; no producer id (not idempotent), not compressed.
pub fn record_batch(value: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut record = Vec::with_capacity(value.len() + 8);
    record.push(0); // attributes
    put_varlong(&mut record, 0); // timestampDelta
    put_varint(&mut record, 0); // offsetDelta
    put_varint(&mut record, -1); // key length: null
    put_varint(&mut record, value.len() as i32);
    record.extend(value);
    put_varint(&mut record, 0); // headers

    let mut batch = Vec::with_capacity(batch_layout::RECORDS + record.len() + 5);
    batch.extend(0i64.to_be_bytes()); // baseOffset
    batch.extend(0i32.to_be_bytes()); // batchLength, set below
    batch.extend((-1i32).to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend(0u32.to_be_bytes()); // crc, set below
    batch.extend(0i16.to_be_bytes()); // attributes
    batch.extend(0i32.to_be_bytes()); // lastOffsetDelta
    batch.extend(timestamp_ms.to_be_bytes()); // baseTimestamp
    batch.extend(timestamp_ms.to_be_bytes()); // maxTimestamp
    batch.extend((-1i64).to_be_bytes()); // producerId
    batch.extend((-1i16).to_be_bytes()); // producerEpoch
    batch.extend((-1i32).to_be_bytes()); // baseSequence
    batch.extend(1i32.to_be_bytes()); // records count
    debug_assert_eq!(batch.len(), batch_layout::RECORDS);
    put_varint(&mut batch, record.len() as i32);
    batch.extend(record);

    let length = (batch.len() - batch_layout::LENGTH - 4) as i32;
    batch[batch_layout::LENGTH..batch_layout::LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c(&batch[batch_layout::ATTRIBUTES..]);
    batch[batch_layout::CRC..batch_layout::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A Produce v9 request (flexible, header v2): no transactional id, acks=1, one topic,
/// partition 0, one v2 record batch with one record stamped now.
pub fn produce_v9(correlation_id: i32, client_id: &str, topic: &str, value: &[u8]) -> Vec<u8> {
    produce_v9_at(correlation_id, client_id, topic, value, now_ms())
}

fn produce_v9_at(correlation_id: i32, client_id: &str, topic: &str, value: &[u8], timestamp_ms: i64) -> Vec<u8> {
    produce_v9_acks_at(correlation_id, client_id, topic, value, 1, timestamp_ms)
}

/// As [`produce_v9`] with the given `acks` (1: the leader's write; -1: every in-sync replica's).
pub fn produce_v9_acks(correlation_id: i32, client_id: &str, topic: &str, value: &[u8], acks: i16) -> Vec<u8> {
    produce_v9_acks_at(correlation_id, client_id, topic, value, acks, now_ms())
}

fn produce_v9_acks_at(correlation_id: i32, client_id: &str, topic: &str, value: &[u8], acks: i16, timestamp_ms: i64) -> Vec<u8> {
    let batch = record_batch(value, timestamp_ms);
    let mut body = Vec::with_capacity(batch.len() + topic.len() + 32);
    put_compact_nullable_string(&mut body, None); // transactional_id
    body.extend(acks.to_be_bytes()); // acks
    body.extend(10_000i32.to_be_bytes()); // timeout ms
    put_compact_array_len(&mut body, 1); // topics
    put_compact_string(&mut body, topic);
    put_compact_array_len(&mut body, 1); // partitions
    body.extend(0i32.to_be_bytes()); // partition index
    put_uvarint(&mut body, batch.len() as u64 + 1); // COMPACT_RECORDS
    body.extend(batch);
    put_empty_tagged_fields(&mut body); // partition
    put_empty_tagged_fields(&mut body); // topic
    put_empty_tagged_fields(&mut body); // request
    request_frame_v2(API_PRODUCE, 9, correlation_id, client_id, &body)
}

/// One partition's answer to a Produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub base_offset: i64,
    pub error_message: Option<String>,
}

/// Decodes a Produce response body (after the response header: the correlation id for v0,
/// the correlation id and a tagged-field section for v9) of version 0 or 9.
pub fn decode_produce_response(version: i16, body: &[u8]) -> Result<Vec<ProducePartitionResponse>> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    match version {
        0 => {
            for _ in 0..r.array_len()?.unwrap_or(0) {
                let topic = r.string()?;
                for _ in 0..r.array_len()?.unwrap_or(0) {
                    let partition = r.i32()?;
                    let error_code = r.i16()?;
                    let base_offset = r.i64()?;
                    out.push(ProducePartitionResponse { topic: topic.clone(), partition, error_code, base_offset, error_message: None });
                }
            }
        }
        9 => {
            for _ in 0..r.compact_array_len()?.unwrap_or(0) {
                let topic = r.compact_string()?;
                for _ in 0..r.compact_array_len()?.unwrap_or(0) {
                    let partition = r.i32()?;
                    let error_code = r.i16()?;
                    let base_offset = r.i64()?;
                    let _log_append_time_ms = r.i64()?;
                    let _log_start_offset = r.i64()?;
                    for _ in 0..r.compact_array_len()?.unwrap_or(0) {
                        let _batch_index = r.i32()?;
                        let _message = r.compact_nullable_string()?;
                        r.skip_tagged_fields()?;
                    }
                    let error_message = r.compact_nullable_string()?;
                    r.skip_tagged_fields()?;
                    out.push(ProducePartitionResponse { topic: topic.clone(), partition, error_code, base_offset, error_message });
                }
                r.skip_tagged_fields()?;
            }
            let _throttle_time_ms = r.i32()?;
            r.skip_tagged_fields()?;
        }
        _ => bail!("Produce v{version} responses are not implemented (v0 and v9 are)"),
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Fetch (a consumer's, v4: the oldest Kafka 4.x accepts, non-flexible, header v1)

/// A Fetch v4 request from a consumer (replica id -1) for partition 0 of `topic` from `offset`,
/// at most `max_bytes` (for the partition and for the response), answering at once
/// (min_bytes 1, max_wait_ms `max_wait_ms`), isolation READ_UNCOMMITTED.
pub fn fetch_v4(correlation_id: i32, client_id: &str, topic: &str, offset: i64, max_bytes: i32, max_wait_ms: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend((-1i32).to_be_bytes()); // replica id
    body.extend(max_wait_ms.to_be_bytes());
    body.extend(1i32.to_be_bytes()); // min bytes
    body.extend(max_bytes.to_be_bytes()); // max bytes (v3+)
    body.push(0); // isolation level (v4+)
    body.extend(1i32.to_be_bytes()); // topics
    put_string(&mut body, topic);
    body.extend(1i32.to_be_bytes()); // partitions
    body.extend(0i32.to_be_bytes()); // partition
    body.extend(offset.to_be_bytes()); // fetch offset
    body.extend(max_bytes.to_be_bytes()); // partition max bytes
    request_frame(API_FETCH, 4, correlation_id, client_id, &body)
}

/// Partition 0's answer in a Fetch v4 response body (after the correlation id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    pub error_code: i16,
    pub high_watermark: i64,
    /// Bytes of record batches received (the last one may be partial).
    pub bytes: usize,
    /// The offset after the last complete record batch, if any batch was complete.
    pub next_offset: Option<i64>,
}

/// Decodes a Fetch v4 response body (after the correlation id): the first partition.
pub fn decode_fetch_v4_response(body: &[u8]) -> Result<FetchPartitionResponse> {
    let mut r = Reader::new(body);
    let _throttle_time_ms = r.i32()?;
    let topics = r.array_len()?.unwrap_or(0);
    ensure!(topics >= 1, "a Fetch response without topics");
    let _topic = r.string()?;
    let partitions = r.array_len()?.unwrap_or(0);
    ensure!(partitions >= 1, "a Fetch response without partitions");
    let _partition = r.i32()?;
    let error_code = r.i16()?;
    let high_watermark = r.i64()?;
    let _last_stable_offset = r.i64()?;
    for _ in 0..r.array_len()?.unwrap_or(0) {
        let _producer_id = r.i64()?;
        let _first_offset = r.i64()?;
    }
    let size = r.i32()?;
    let records = if size > 0 { r.bytes(size as usize)? } else { &[][..] };
    // Record batches: baseOffset (8), batchLength (4), partitionLeaderEpoch (4), magic (1),
    // crc (4), attributes (2), lastOffsetDelta (4), ...
    let mut next_offset = None;
    let mut at = 0;
    while records.len() >= at + 27 {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let length = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        if records.len() < at + 12 + length {
            break;
        }
        let last_delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap()) as i64;
        next_offset = Some(base + last_delta + 1);
        at += 12 + length;
    }
    Ok(FetchPartitionResponse { error_code, high_watermark, bytes: records.len(), next_offset })
}

// ---------------------------------------------------------------------------------------------
// CreateTopics (v2: the oldest Kafka 4.x accepts, non-flexible, header v1)

/// A CreateTopics v2 request for one topic with an explicit replica assignment (`assignment[p]`
/// lists partition p's replicas, the preferred leader first) and topic configs.
pub fn create_topics_v2(correlation_id: i32, client_id: &str, topic: &str, assignment: &[Vec<i32>], configs: &[(&str, &str)], timeout_ms: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(1i32.to_be_bytes()); // topics
    put_string(&mut body, topic);
    body.extend((-1i32).to_be_bytes()); // num partitions: from the assignment
    body.extend((-1i16).to_be_bytes()); // replication factor: from the assignment
    body.extend((assignment.len() as i32).to_be_bytes());
    for (partition, replicas) in assignment.iter().enumerate() {
        body.extend((partition as i32).to_be_bytes());
        body.extend((replicas.len() as i32).to_be_bytes());
        for id in replicas {
            body.extend(id.to_be_bytes());
        }
    }
    body.extend((configs.len() as i32).to_be_bytes());
    for (name, value) in configs {
        put_string(&mut body, name);
        put_string(&mut body, value);
    }
    body.extend(timeout_ms.to_be_bytes());
    body.push(0); // validate only
    request_frame(API_CREATE_TOPICS, 2, correlation_id, client_id, &body)
}

/// The CreateTopics v2 response body (after the correlation id): (topic, error code, message).
pub fn decode_create_topics_v2_response(body: &[u8]) -> Result<Vec<(String, i16, Option<String>)>> {
    let mut r = Reader::new(body);
    let _throttle_time_ms = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..r.array_len()?.unwrap_or(0) {
        let name = r.string()?;
        let error_code = r.i16()?;
        let message = r.nullable_string()?;
        out.push((name, error_code, message));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Metadata

/// A Metadata request for all topics, non-flexible (header v1), versions 0 to 8: in v0 an
/// empty topic array means all topics, from v1 a null one does; v4 adds
/// allow_auto_topic_creation (false here), v8 the two include-authorized-operations flags.
/// Kafka 4.x refuses v0-v3; 0.9 speaks only v0.
pub fn metadata_request(version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    assert!((0..=8).contains(&version), "Metadata v{version} is not implemented (v0 to v8 are)");
    let mut body = Vec::new();
    body.extend(if version == 0 { 0i32 } else { -1i32 }.to_be_bytes());
    if version >= 4 {
        body.push(0); // allow_auto_topic_creation
    }
    if version >= 8 {
        body.push(0); // include_cluster_authorized_operations
        body.push(0); // include_topic_authorized_operations
    }
    request_frame(API_METADATA, version, correlation_id, client_id, &body)
}

// ---------------------------------------------------------------------------------------------
// The producer

/// A producer that speaks Kafka's wire protocol itself (acks=1, one message per request, one
/// request at a time, partition 0) and times each request around its own socket calls, so its
/// measurement has no client library in it: the reference kstall's Produce latency is checked
/// against. It speaks Produce v9 to brokers that refuse the pre-2.1 protocol versions (4.x,
/// KIP-896) and Produce v0 to the others (0.9 to 3.x).
///
/// Which is which, [`SyncProducer::connect`] finds out on a probe connection of its own before
/// the producer's connection, so that connection carries the same requests as it always did on
/// 0.9: Produces only, correlation ids from 1. On 4.x the producer's connection starts with
/// ApiVersions (correlation id 1) and the first Produce is 2.
pub struct SyncProducer {
    stream: TcpStream,
    client_id: String,
    correlation_id: i32,
    produce_version: i16,
    api_versions: Option<BTreeMap<i16, (i16, i16)>>,
    acks: i16,
}

/// How long to wait for the answer to ApiVersions before giving up on the broker.
const API_VERSIONS_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn open(bootstrap: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(bootstrap).with_context(|| format!("cannot connect to {bootstrap}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
}

/// How a client learns which versions a broker speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// ApiVersions first (KIP-35, every broker since 0.10; 4.x refuses Produce before v3).
    ApiVersions,
    /// None: Produce v0 and Metadata v0, as clients configured for a 0.9 broker do
    /// (librdkafka's `api.version.request=false`). Kafka 0.9.0.1 does not close a connection
    /// on an API it does not know: its network thread throws ArrayIndexOutOfBoundsException
    /// out of the loop over that poll's completed receives, so the ApiVersions is never
    /// answered, and whatever else that poll completed (other connections' requests, and the
    /// sends after which their connections are unmuted) is dropped.
    Kafka0_9,
}

impl SyncProducer {
    /// Connects and, with [`Handshake::ApiVersions`], asks ApiVersions v3 (v0 when the broker
    /// answers UNSUPPORTED_VERSION) on the producer's own connection, then speaks Produce v9
    /// when the broker lists it (else v0 when it lists v0).
    pub fn connect(bootstrap: &str, client_id: &str, handshake: Handshake) -> Result<SyncProducer> {
        let mut stream = open(bootstrap)?;
        if handshake == Handshake::Kafka0_9 {
            return Ok(SyncProducer { stream, client_id: client_id.to_string(), correlation_id: 0, produce_version: 0, api_versions: None, acks: 1 });
        }
        let mut correlation_id = 0;
        let Some(versions) = ask_api_versions(&mut stream, client_id, &mut correlation_id).with_context(|| format!("ApiVersions to {bootstrap}"))?
        else {
            bail!("{bootstrap} closed the connection on ApiVersions without answering (a Kafka 0.9 broker? it predates ApiVersions)");
        };
        let produce_version = match versions.get(&API_PRODUCE) {
            Some(&(min, max)) if min <= 9 && 9 <= max => 9,
            Some(&(min, _)) if min <= 0 => 0,
            Some(&(min, max)) => bail!("{bootstrap} speaks Produce v{min} to v{max}; this producer speaks v0 and v9"),
            None => bail!("{bootstrap} lists no Produce versions in its ApiVersions answer"),
        };
        Ok(SyncProducer { stream, client_id: client_id.to_string(), correlation_id, produce_version, api_versions: Some(versions), acks: 1 })
    }

    /// Sets the acks of the Produce requests that follow: 1 (the default, the leader's write)
    /// or -1 (acks=all: every in-sync replica has it). Produce v9 only; v0 stays acks=1.
    pub fn with_acks(mut self, acks: i16) -> SyncProducer {
        self.acks = acks;
        self
    }

    /// The client side of the producer's connection (its local port names it in /proc/net/tcp).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.local_addr()
    }

    /// The broker's ApiVersions table (api_key -> (min, max)); None for a 0.9 broker (not asked).
    pub fn api_versions(&self) -> Option<&BTreeMap<i16, (i16, i16)>> {
        self.api_versions.as_ref()
    }

    /// The Produce version this producer speaks to the broker: 9 or 0.
    pub fn produce_version(&self) -> i16 {
        self.produce_version
    }

    /// A Metadata version for [`metadata_request`] the broker accepts: 4 when it speaks v4
    /// (every broker since 1.0, and 4.x, which refuses v0-v3), else 0.
    pub fn metadata_version(&self) -> i16 {
        match self.api_versions.as_ref().and_then(|v| v.get(&API_METADATA)) {
            Some(&(min, max)) if min <= 4 && 4 <= max => 4,
            _ => 0,
        }
    }

    /// Sends one message to partition 0 of `topic` (which must exist) and waits for the
    /// broker's acknowledgement; returns the time from the first byte sent to the last read.
    pub fn produce(&mut self, topic: &str, value: &[u8]) -> Result<Duration> {
        self.correlation_id += 1;
        let request = match self.produce_version {
            9 => produce_v9_acks(self.correlation_id, &self.client_id, topic, value, self.acks),
            _ => produce_v0(self.correlation_id, &self.client_id, topic, value),
        };
        let started = Instant::now();
        self.stream.write_all(&request)?;
        let response = read_frame(&mut self.stream)?;
        let took = started.elapsed();
        let mut r = Reader::new(&response);
        let correlation_id = r.i32()?;
        if correlation_id != self.correlation_id {
            bail!("response for correlation id {correlation_id}, expected {}", self.correlation_id);
        }
        if self.produce_version >= 9 {
            r.skip_tagged_fields()?; // response header v1
        }
        let partitions = decode_produce_response(self.produce_version, r.rest())
            .with_context(|| format!("decoding the Produce v{} response", self.produce_version))?;
        let Some(answer) = partitions.iter().find(|p| p.topic == topic && p.partition == 0) else {
            bail!("the Produce v{} response has no partition 0 of {topic}: {partitions:?}", self.produce_version);
        };
        if answer.error_code != 0 {
            bail!(
                "Produce v{} to {topic} failed with Kafka error code {} ({}){}",
                self.produce_version,
                answer.error_code,
                error_name(answer.error_code),
                answer.error_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        Ok(took)
    }
}

/// ApiVersions v3 (then v0 if the broker answers UNSUPPORTED_VERSION) on a new connection.
/// None when the broker closed the connection without answering.
fn ask_api_versions(stream: &mut TcpStream, client_id: &str, correlation_id: &mut i32) -> Result<Option<BTreeMap<i16, (i16, i16)>>> {
    stream.set_read_timeout(Some(API_VERSIONS_TIMEOUT))?;
    let mut version = 3;
    let answer = loop {
        *correlation_id += 1;
        match stream.write_all(&api_versions_request(version, *correlation_id, client_id)) {
            Ok(()) => {}
            Err(e) if closed(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let response = match read_frame_or_closed(stream) {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(None),
            Err(e) => {
                if let Some(io) = e.downcast_ref::<io::Error>()
                    && matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                {
                    bail!("no answer to ApiVersions v{version} in {API_VERSIONS_TIMEOUT:?}");
                }
                return Err(e);
            }
        };
        // The ApiVersions response header is v0 for every version: the correlation id alone.
        let mut r = Reader::new(&response);
        let answered = r.i32()?;
        ensure!(answered == *correlation_id, "ApiVersions answered for correlation id {answered}, expected {correlation_id}");
        let answer = decode_api_versions_response(version, r.rest())?;
        if answer.error_code == UNSUPPORTED_VERSION && version > 0 {
            version = 0;
            continue;
        }
        break answer;
    };
    ensure!(
        answer.error_code == 0,
        "ApiVersions v{version} failed with Kafka error code {} ({})",
        answer.error_code,
        error_name(answer.error_code)
    );
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(Some(answer.versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvarint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uvarint(&mut out, v);
        out
    }

    fn varint(v: i32) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    fn varlong(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varlong(&mut out, v);
        out
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn unsigned_varints() {
        assert_eq!(uvarint(0), [0x00]);
        assert_eq!(uvarint(1), [0x01]);
        assert_eq!(uvarint(127), [0x7f]);
        assert_eq!(uvarint(128), [0x80, 0x01]);
        assert_eq!(uvarint(300), [0xac, 0x02]);
        assert_eq!(uvarint(16_383), [0xff, 0x7f]);
        assert_eq!(uvarint(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(uvarint(u32::MAX as u64), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn zigzag_varints() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(-1), [0x01]);
        assert_eq!(varint(1), [0x02]);
        assert_eq!(varint(-2), [0x03]);
        assert_eq!(varint(63), [0x7e]);
        assert_eq!(varint(-64), [0x7f]);
        assert_eq!(varint(64), [0x80, 0x01]);
        assert_eq!(varint(300), [0xd8, 0x04]);
        assert_eq!(varint(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varint(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varlong(-1), [0x01]);
        assert_eq!(varlong(i64::MIN), [0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>());
        for v in [0i64, 1, -1, 127, 128, 300, -300, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN] {
            assert_eq!(Reader::new(&varlong(v)).varlong().unwrap(), v, "{v}");
        }
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(Reader::new(&uvarint(v)).uvarint().unwrap(), v, "{v}");
        }
    }

    #[test]
    fn compact_types() {
        let mut out = Vec::new();
        put_compact_string(&mut out, "abc");
        put_compact_nullable_string(&mut out, None);
        put_compact_nullable_string(&mut out, Some(""));
        put_compact_array_len(&mut out, 2);
        put_empty_tagged_fields(&mut out);
        assert_eq!(out, [4, b'a', b'b', b'c', 0, 1, 3, 0]);
        let mut r = Reader::new(&out);
        assert_eq!(r.compact_string().unwrap(), "abc");
        assert_eq!(r.compact_nullable_string().unwrap(), None);
        assert_eq!(r.compact_nullable_string().unwrap().as_deref(), Some(""));
        assert_eq!(r.compact_array_len().unwrap(), Some(2));
        r.skip_tagged_fields().unwrap();
        assert_eq!(r.remaining(), 0);
        assert!(r.i8().is_err(), "reading past the end fails");
    }

    #[test]
    fn header_v1_and_v2() {
        let v1 = request_frame(3, 4, 7, "cid", b"BODY");
        assert_eq!(i32::from_be_bytes(v1[..4].try_into().unwrap()) as usize, v1.len() - 4);
        assert_eq!(&v1[4..], [0, 3, 0, 4, 0, 0, 0, 7, 0, 3, b'c', b'i', b'd', b'B', b'O', b'D', b'Y']);
        let v2 = request_frame_v2(3, 9, 7, "cid", b"BODY");
        assert_eq!(i32::from_be_bytes(v2[..4].try_into().unwrap()) as usize, v2.len() - 4);
        assert_eq!(&v2[4..], [0, 3, 0, 9, 0, 0, 0, 7, 0, 3, b'c', b'i', b'd', 0, b'B', b'O', b'D', b'Y']);
    }

    #[test]
    fn api_versions_requests() {
        let v3 = api_versions_request(3, 1, "me");
        let mut r = Reader::new(&v3);
        assert_eq!(r.i32().unwrap() as usize, v3.len() - 4);
        assert_eq!((r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap()), (API_API_VERSIONS, 3, 1));
        assert_eq!(r.string().unwrap(), "me");
        r.skip_tagged_fields().unwrap();
        assert_eq!(r.compact_string().unwrap(), CLIENT_SOFTWARE_NAME);
        assert_eq!(r.compact_string().unwrap(), CLIENT_SOFTWARE_VERSION);
        r.skip_tagged_fields().unwrap();
        assert_eq!(r.remaining(), 0);
        assert_eq!(api_versions_request(0, 2, "me"), request_frame(API_API_VERSIONS, 0, 2, "me", &[]));
    }

    #[test]
    fn api_versions_v3_response() {
        let mut body = Vec::new();
        body.extend(0i16.to_be_bytes());
        put_compact_array_len(&mut body, 3);
        for (key, min, max) in [(0i16, 3i16, 12i16), (3, 4, 13), (18, 0, 4)] {
            body.extend(key.to_be_bytes());
            body.extend(min.to_be_bytes());
            body.extend(max.to_be_bytes());
            put_empty_tagged_fields(&mut body);
        }
        body.extend(5i32.to_be_bytes()); // throttle
        // Tagged fields as a 4.x broker sends them: a supported-features tag with data, and
        // the finalized-features epoch.
        body.push(2);
        body.push(0);
        put_uvarint(&mut body, 3);
        body.extend([1, 2, 3]);
        body.push(1);
        body.push(8);
        body.extend(42i64.to_be_bytes());
        let answer = decode_api_versions_response(3, &body).unwrap();
        assert_eq!(answer.error_code, 0);
        assert_eq!(answer.throttle_time_ms, 5);
        assert_eq!(answer.versions, BTreeMap::from([(0, (3, 12)), (3, (4, 13)), (18, (0, 4))]));
        assert!(decode_api_versions_response(3, &body[..body.len() - 1]).is_err(), "truncated");
    }

    #[test]
    fn api_versions_unsupported_version_answer_is_v0() {
        let mut body = Vec::new();
        body.extend(UNSUPPORTED_VERSION.to_be_bytes());
        body.extend(1i32.to_be_bytes());
        body.extend([0, 18, 0, 0, 0, 2]);
        let answer = decode_api_versions_response(3, &body).unwrap();
        assert_eq!(answer.error_code, UNSUPPORTED_VERSION);
        assert_eq!(answer.versions, BTreeMap::from([(18, (0, 2))]));
        let v0 = decode_api_versions_response(0, &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2]).unwrap();
        assert_eq!(v0.versions, BTreeMap::from([(0, (0, 2))]));
    }

    #[test]
    fn produce_v9_frame() {
        let value = b"hello, kafka";
        let frame = produce_v9_at(42, "prod", "topic-a", value, 1_700_000_000_123);
        let mut r = Reader::new(&frame);
        assert_eq!(r.i32().unwrap() as usize, frame.len() - 4, "size prefix");
        // Header v2.
        assert_eq!(r.i16().unwrap(), API_PRODUCE);
        assert_eq!(r.i16().unwrap(), 9);
        assert_eq!(r.i32().unwrap(), 42);
        assert_eq!(r.string().unwrap(), "prod");
        assert_eq!(r.uvarint().unwrap(), 0, "header tagged fields");
        // Body.
        assert_eq!(r.compact_nullable_string().unwrap(), None, "transactional_id");
        assert_eq!(r.i16().unwrap(), 1, "acks");
        assert_eq!(r.i32().unwrap(), 10_000, "timeout");
        assert_eq!(r.compact_array_len().unwrap(), Some(1));
        assert_eq!(r.compact_string().unwrap(), "topic-a");
        assert_eq!(r.compact_array_len().unwrap(), Some(1));
        assert_eq!(r.i32().unwrap(), 0, "partition");
        let records_len = r.uvarint().unwrap() as usize - 1;
        let batch = r.bytes(records_len).unwrap();
        assert_eq!([r.uvarint().unwrap(), r.uvarint().unwrap(), r.uvarint().unwrap()], [0, 0, 0], "tagged fields");
        assert_eq!(r.remaining(), 0);

        // The batch.
        let mut b = Reader::new(batch);
        assert_eq!(b.i64().unwrap(), 0, "baseOffset");
        assert_eq!(b.i32().unwrap() as usize, batch.len() - 12, "batchLength");
        assert_eq!(b.i32().unwrap(), -1, "partitionLeaderEpoch");
        assert_eq!(b.i8().unwrap(), 2, "magic");
        let crc = b.i32().unwrap() as u32;
        assert_eq!(b.position(), batch_layout::ATTRIBUTES);
        assert_eq!(crc, crc32c(&batch[batch_layout::ATTRIBUTES..]), "CRC-32C from attributes to the end");
        assert_ne!(crc, crc32c(&batch[batch_layout::MAGIC..]));
        assert_eq!(b.i16().unwrap(), 0, "attributes");
        assert_eq!(b.i32().unwrap(), 0, "lastOffsetDelta");
        assert_eq!(b.i64().unwrap(), 1_700_000_000_123, "baseTimestamp");
        assert_eq!(b.i64().unwrap(), 1_700_000_000_123, "maxTimestamp");
        assert_eq!(b.i64().unwrap(), -1, "producerId");
        assert_eq!(b.i16().unwrap(), -1, "producerEpoch");
        assert_eq!(b.i32().unwrap(), -1, "baseSequence");
        assert_eq!(b.i32().unwrap(), 1, "records");
        assert_eq!(b.position(), batch_layout::RECORDS);
        let record_len = b.varlong().unwrap() as usize;
        assert_eq!(record_len, b.remaining());
        assert_eq!(b.i8().unwrap(), 0, "record attributes");
        assert_eq!(b.varlong().unwrap(), 0, "timestampDelta");
        assert_eq!(b.varlong().unwrap(), 0, "offsetDelta");
        assert_eq!(b.varlong().unwrap(), -1, "key: null");
        assert_eq!(b.varlong().unwrap() as usize, value.len());
        assert_eq!(b.bytes(value.len()).unwrap(), value);
        assert_eq!(b.varlong().unwrap(), 0, "headers");
        assert_eq!(b.remaining(), 0);

        // A flipped bit in the value changes the CRC it must carry.
        let mut other = batch.to_vec();
        *other.last_mut().unwrap() ^= 1;
        assert_ne!(crc32c(&other[batch_layout::ATTRIBUTES..]), crc);
    }

    #[test]
    fn produce_v0_frame() {
        let frame = produce_v0(1, "prod", "t", b"v");
        assert_eq!(i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        // The message's CRC-32 covers magic to the end of the value.
        let message = &frame[frame.len() - 15..];
        let crc = u32::from_be_bytes(message[..4].try_into().unwrap());
        assert_eq!(crc, crc32(&message[4..]));
        assert_eq!(&message[4..], [0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, b'v']);
    }

    #[test]
    fn fetch_v4_request_and_response() {
        let frame = fetch_v4(7, "cold-reader", "cold", 42, 1 << 20, 100);
        let mut r = Reader::new(&frame[4..]);
        assert_eq!((r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap()), (API_FETCH, 4, 7));
        assert_eq!(r.string().unwrap(), "cold-reader");
        assert_eq!((r.i32().unwrap(), r.i32().unwrap(), r.i32().unwrap(), r.i32().unwrap(), r.i8().unwrap()), (-1, 100, 1, 1 << 20, 0));
        assert_eq!((r.i32().unwrap(), r.string().unwrap().as_str(), r.i32().unwrap(), r.i32().unwrap()), (1, "cold", 1, 0));
        assert_eq!((r.i64().unwrap(), r.i32().unwrap(), r.remaining()), (42, 1 << 20, 0));

        // Two whole batches (offsets 10 and 11), then the first bytes of a third.
        let mut records = Vec::new();
        for base in [10i64, 11] {
            let mut batch = record_batch(b"v", 0);
            batch[..8].copy_from_slice(&base.to_be_bytes());
            records.extend(batch);
        }
        records.extend(&record_batch(b"v", 0)[..20]);
        let mut body = 0i32.to_be_bytes().to_vec(); // throttle
        body.extend(1i32.to_be_bytes());
        put_string(&mut body, "cold");
        body.extend(1i32.to_be_bytes());
        body.extend(0i32.to_be_bytes()); // partition
        body.extend(0i16.to_be_bytes()); // error
        body.extend(99i64.to_be_bytes()); // high watermark
        body.extend(99i64.to_be_bytes()); // last stable offset
        body.extend(0i32.to_be_bytes()); // aborted transactions
        body.extend((records.len() as i32).to_be_bytes());
        body.extend(&records);
        let answer = decode_fetch_v4_response(&body).unwrap();
        assert_eq!(answer, FetchPartitionResponse { error_code: 0, high_watermark: 99, bytes: records.len(), next_offset: Some(12) });
    }

    #[test]
    fn create_topics_v2_request_and_response() {
        let frame = create_topics_v2(1, "t", "cold", &[vec![1, 2, 3]], &[("min.insync.replicas", "2")], 30_000);
        let mut r = Reader::new(&frame[4..]);
        assert_eq!((r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap(), r.string().unwrap().as_str()), (API_CREATE_TOPICS, 2, 1, "t"));
        assert_eq!((r.i32().unwrap(), r.string().unwrap().as_str(), r.i32().unwrap(), r.i16().unwrap()), (1, "cold", -1, -1));
        assert_eq!((r.i32().unwrap(), r.i32().unwrap(), r.i32().unwrap()), (1, 0, 3));
        assert_eq!((r.i32().unwrap(), r.i32().unwrap(), r.i32().unwrap()), (1, 2, 3));
        assert_eq!((r.i32().unwrap(), r.string().unwrap().as_str(), r.string().unwrap().as_str()), (1, "min.insync.replicas", "2"));
        assert_eq!((r.i32().unwrap(), r.i8().unwrap(), r.remaining()), (30_000, 0, 0));

        let mut body = 0i32.to_be_bytes().to_vec();
        body.extend(1i32.to_be_bytes());
        put_string(&mut body, "cold");
        body.extend(36i16.to_be_bytes());
        put_string(&mut body, "exists");
        assert_eq!(decode_create_topics_v2_response(&body).unwrap(), [("cold".to_string(), 36, Some("exists".to_string()))]);
    }

    #[test]
    fn produce_v9_acks_all() {
        let frame = produce_v9_acks(2, "sync-producer", "hot", b"x", -1);
        // size, header v2 (key, version, correlation id, client id, tagged fields), then a null
        // compact transactional id and acks.
        let acks_at = 4 + 2 + 2 + 4 + 2 + "sync-producer".len() + 1 + 1;
        assert_eq!(&frame[acks_at..acks_at + 2], &(-1i16).to_be_bytes());
        assert_eq!(produce_v9(2, "sync-producer", "hot", b"x")[acks_at..acks_at + 2], 1i16.to_be_bytes());
    }

    #[test]
    fn produce_v9_response() {
        let mut body = Vec::new();
        put_compact_array_len(&mut body, 1);
        put_compact_string(&mut body, "t1");
        put_compact_array_len(&mut body, 1);
        body.extend(0i32.to_be_bytes());
        body.extend(87i16.to_be_bytes());
        body.extend(17i64.to_be_bytes());
        body.extend((-1i64).to_be_bytes());
        body.extend(0i64.to_be_bytes());
        put_compact_array_len(&mut body, 1);
        body.extend(0i32.to_be_bytes());
        put_compact_nullable_string(&mut body, Some("bad record"));
        put_empty_tagged_fields(&mut body);
        put_compact_nullable_string(&mut body, Some("one bad record"));
        put_empty_tagged_fields(&mut body);
        put_empty_tagged_fields(&mut body);
        body.extend(0i32.to_be_bytes());
        put_empty_tagged_fields(&mut body);
        let answer = decode_produce_response(9, &body).unwrap();
        assert_eq!(
            answer,
            [ProducePartitionResponse {
                topic: "t1".into(),
                partition: 0,
                error_code: 87,
                base_offset: 17,
                error_message: Some("one bad record".into())
            }]
        );
    }

    #[test]
    fn metadata_requests() {
        let v0 = metadata_request(0, 5, "m");
        assert_eq!(v0, request_frame(API_METADATA, 0, 5, "m", &0i32.to_be_bytes()));
        let v4 = metadata_request(4, 5, "m");
        assert_eq!(v4, request_frame(API_METADATA, 4, 5, "m", &[0xff, 0xff, 0xff, 0xff, 0]));
        assert_eq!(metadata_request(8, 5, "m").len(), v4.len() + 2);
    }

    /// A stand-in broker on loopback: each connection gets the next script, which sees each
    /// request (api key, version, correlation id) and answers a body (None: close).
    type Script = Box<dyn Fn(i16, i16, i32) -> Option<Vec<u8>> + Send>;
    type Seen = Vec<(i16, i16, i32)>;

    fn fake_broker(scripts: Vec<Script>) -> (String, std::thread::JoinHandle<Seen>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for script in scripts {
                let (mut stream, _) = listener.accept().unwrap();
                while let Ok(Some(request)) = read_frame_or_closed(&mut stream) {
                    let mut r = Reader::new(&request);
                    let (key, version, correlation_id) = (r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap());
                    seen.push((key, version, correlation_id));
                    let Some(body) = script(key, version, correlation_id) else { break };
                    let mut response = ((body.len() + 4) as i32).to_be_bytes().to_vec();
                    response.extend(correlation_id.to_be_bytes());
                    response.extend(body);
                    stream.write_all(&response).unwrap();
                }
            }
            seen
        });
        (address, handle)
    }

    #[test]
    fn negotiates_v9_by_api_versions() {
        let (address, broker) = fake_broker(vec![
            Box::new(|key, version, _| match (key, version) {
                (API_API_VERSIONS, 3) => Some([&UNSUPPORTED_VERSION.to_be_bytes()[..], &1i32.to_be_bytes(), &[0, 18, 0, 0, 0, 2]].concat()),
                (API_API_VERSIONS, 0) => {
                    let mut body = 0i16.to_be_bytes().to_vec();
                    body.extend(2i32.to_be_bytes());
                    body.extend([0, 0, 0, 3, 0, 12, 0, 3, 0, 0, 0, 13]);
                    Some(body)
                }
                (API_PRODUCE, 9) => {
                    let mut body = vec![0]; // response header v1's tagged fields
                    put_compact_array_len(&mut body, 1);
                    put_compact_string(&mut body, "t");
                    put_compact_array_len(&mut body, 1);
                    body.extend([0, 0, 0, 0, 0, 0]); // partition 0, no error
                    body.extend([0u8; 24]);
                    body.extend([1, 0, 0]); // no record errors, no message, tagged fields
                    body.extend([0, 0, 0, 0, 0, 0]); // topic tagged fields, throttle, tagged fields
                    Some(body)
                }
                _ => None,
            }),
        ]);
        let mut producer = SyncProducer::connect(&address, "c", Handshake::ApiVersions).unwrap();
        assert_eq!(producer.produce_version(), 9);
        assert_eq!(producer.metadata_version(), 4);
        assert_eq!(producer.api_versions().unwrap().get(&API_PRODUCE), Some(&(3, 12)));
        producer.produce("t", b"v").unwrap();
        drop(producer);
        assert_eq!(broker.join().unwrap(), [(API_API_VERSIONS, 3, 1), (API_API_VERSIONS, 0, 2), (API_PRODUCE, 9, 3)]);
    }

    #[test]
    fn speaks_v0_to_kafka_0_9_without_asking() {
        let produce_v0_answer = |_, _, _| {
            let mut body = 1i32.to_be_bytes().to_vec();
            put_string(&mut body, "t");
            body.extend(1i32.to_be_bytes());
            body.extend([0u8; 14]);
            Some(body)
        };
        let (address, broker) = fake_broker(vec![Box::new(produce_v0_answer)]);
        let mut producer = SyncProducer::connect(&address, "c", Handshake::Kafka0_9).unwrap();
        assert_eq!((producer.produce_version(), producer.metadata_version()), (0, 0));
        assert!(producer.api_versions().is_none());
        producer.produce("t", b"v").unwrap();
        producer.produce("t", b"v").unwrap();
        drop(producer);
        assert_eq!(broker.join().unwrap(), [(API_PRODUCE, 0, 1), (API_PRODUCE, 0, 2)]);
    }
}
