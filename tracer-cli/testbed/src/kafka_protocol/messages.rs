//! The requests the test clients send and the responses they read, one API at a time: API keys,
//! error codes, ApiVersions, Produce (v0 message set and v9 record batch), Fetch v4,
//! CreateTopics v2, Metadata. Each request comes out as a whole frame, ready to write.
use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail, ensure};

use super::wire::*;

// The test clients spell the protocol on their own, from Kafka's message definitions, not
// from kstall_common::body::api: a constant wrong in the parser must not be wrong here too.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
