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
//!
//! The modules: `wire` (Kafka's primitive types written and read, CRCs, and request framing:
//! what every message is made of), `messages` (each request's body and its response decoded,
//! one API at a time), `client` ([`SyncProducer`]: connections, the version handshake, timing).
//! Everything is re-exported here, as one protocol: callers name `kafka_protocol::request_frame`.
mod client;
mod messages;
mod wire;

pub use client::*;
pub use messages::*;
pub use wire::*;
