//! Kafka names for what the kernel side parsed: API keys, client ids, and log segment paths
//! as topic-partitions.
use std::{collections::HashMap, fmt, path::Path};

pub use kstall_common::body::api::{FETCH, PRODUCE};
use kstall_common::{
    body::{self, Fetcher},
    events::{RequestEvent, RequestId},
};

/// What a request's body says that attribution needs, read from the bytes the probe captured
/// past its header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// A Produce's acks (-1: all in-sync replicas, 0, 1); None when not a Produce or not read.
    pub acks: Option<i16>,
    /// A Fetch from a follower replica: its broker id (ReplicaId, or ReplicaState from v15).
    pub follower: Option<i32>,
    /// The first topic-partition a Produce writes (or a Fetch reads), when the captured bytes
    /// reach it.
    pub partition: Option<(Topic, i32)>,
}

impl RequestFacts {
    /// From the head and tail bytes the probe captured (kstall_common::body, the parser the
    /// fuzzer runs too).
    pub fn of(e: &RequestEvent) -> RequestFacts {
        let facts = body::parse_request_body(e.id.api_key, e.id.api_version, e.head(), e.tail());
        RequestFacts {
            acks: facts.acks,
            follower: match facts.fetcher {
                Fetcher::Follower { broker_id } => Some(broker_id),
                Fetcher::Consumer | Fetcher::Unknown => None,
            },
            partition: facts.first.and_then(|first| {
                let topic = match first.topic {
                    // A cut name would count as a topic of its own: left out.
                    body::Topic::Name(name) if name.cut => return None,
                    body::Topic::Name(name) => Topic::Name(String::from_utf8_lossy(name.as_bytes()).into_owned()),
                    body::Topic::Id(id) => Topic::Id(TopicId(id)),
                };
                Some((topic, first.partition?))
            }),
        }
    }
}

/// Name of a Kafka API key (the names of `org.apache.kafka.common.protocol.ApiKeys` in
/// kafka-clients 4.4.0; key 74 was ListClientMetricsResources in earlier releases).
pub fn api_name(api_key: i16) -> &'static str {
    const NAMES: [&str; 95] = [
        "Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr", "StopReplica",
        "UpdateMetadata", "ControlledShutdown", "OffsetCommit", "OffsetFetch", "FindCoordinator",
        "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup", "DescribeGroups", "ListGroups",
        "SaslHandshake", "ApiVersions", "CreateTopics", "DeleteTopics", "DeleteRecords",
        "InitProducerId", "OffsetForLeaderEpoch", "AddPartitionsToTxn", "AddOffsetsToTxn",
        "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit", "DescribeAcls", "CreateAcls",
        "DeleteAcls", "DescribeConfigs", "AlterConfigs", "AlterReplicaLogDirs",
        "DescribeLogDirs", "SaslAuthenticate", "CreatePartitions", "CreateDelegationToken",
        "RenewDelegationToken", "ExpireDelegationToken", "DescribeDelegationToken",
        "DeleteGroups", "ElectLeaders", "IncrementalAlterConfigs", "AlterPartitionReassignments",
        "ListPartitionReassignments", "OffsetDelete", "DescribeClientQuotas",
        "AlterClientQuotas", "DescribeUserScramCredentials", "AlterUserScramCredentials",
        "Vote", "BeginQuorumEpoch", "EndQuorumEpoch", "DescribeQuorum", "AlterPartition",
        "UpdateFeatures", "Envelope", "FetchSnapshot", "DescribeCluster", "DescribeProducers",
        "BrokerRegistration", "BrokerHeartbeat", "UnregisterBroker", "DescribeTransactions",
        "ListTransactions", "AllocateProducerIds", "ConsumerGroupHeartbeat",
        "ConsumerGroupDescribe", "ControllerRegistration", "GetTelemetrySubscriptions",
        "PushTelemetry", "AssignReplicasToDirs", "ListConfigResources", "DescribeTopicPartitions",
        "ShareGroupHeartbeat", "ShareGroupDescribe", "ShareFetch", "ShareAcknowledge",
        "AddRaftVoter", "RemoveRaftVoter", "UpdateRaftVoter", "InitializeShareGroupState",
        "ReadShareGroupState", "WriteShareGroupState", "DeleteShareGroupState",
        "ReadShareGroupStateSummary", "StreamsGroupHeartbeat", "StreamsGroupDescribe",
        "DescribeShareGroupOffsets", "AlterShareGroupOffsets", "DeleteShareGroupOffsets",
        "StreamsGroupTopologyDescriptionUpdate", "UnregisterController",
    ];
    usize::try_from(api_key).ok().and_then(|k| NAMES.get(k)).copied().unwrap_or("Unknown")
}

/// The client.id a request carried, printable; "" when null or empty.
pub fn client_id(id: &RequestId) -> String {
    let len = (id.client_id_len as usize).min(id.client_id.len());
    let mut s: String = String::from_utf8_lossy(&id.client_id[..len])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if id.client_id_cut != 0 {
        s.push('…');
    }
    s
}

/// A topic id (Kafka's Uuid), as Fetch and Produce carry it from v13 instead of the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl TopicId {
    /// Kafka's spelling of a Uuid (`Uuid.toString`): 22 characters of unpadded base64url.
    pub fn parse(s: &str) -> Option<TopicId> {
        let s = s.trim().as_bytes();
        if s.len() != 22 {
            return None;
        }
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut out = [0u8; 16];
        let mut n = 0;
        for &c in s {
            let v = BASE64URL.iter().position(|&b| b == c)? as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                if n < 16 {
                    out[n] = (bits >> nbits) as u8;
                    n += 1;
                }
                bits &= (1 << nbits) - 1;
            }
        }
        (n == 16 && bits == 0).then_some(TopicId(out))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut bits: u32 = 0;
        let mut nbits = 0;
        for &b in &self.0 {
            bits = (bits << 8) | b as u32;
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                write!(f, "{}", BASE64URL[((bits >> nbits) & 63) as usize] as char)?;
            }
        }
        write!(f, "{}", BASE64URL[((bits << (6 - nbits)) & 63) as usize] as char)
    }
}

/// A topic as a request names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Name(String),
    Id(TopicId),
}

/// Topic ids to names, from the broker's own log directories (`partition.metadata`): every
/// topic it hosts, whenever the trace started (its clients' Metadata may come hours apart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicNames(pub HashMap<TopicId, String>);

impl TopicNames {
    /// "hot-0", or "topic id tJ2...-0" when the id's name is not known.
    pub fn partition(&self, topic: &Topic, partition: i32) -> String {
        match topic {
            Topic::Name(name) => format!("{name}-{partition}"),
            Topic::Id(id) => match self.0.get(id) {
                Some(name) => format!("{name}-{partition}"),
                None => format!("topic id {id} partition {partition}"),
            },
        }
    }
}

/// The topic id a partition directory's `partition.metadata` holds (`topic_id: <uuid>`).
pub fn partition_metadata_topic_id(text: &str) -> Option<TopicId> {
    text.lines().find_map(|l| l.strip_prefix("topic_id:")).and_then(TopicId::parse)
}

/// A log segment file named as Kafka lays it out: `<log.dir>/<topic>-<partition>/<base>.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub topic: String,
    pub partition: u32,
    /// The file name: base offset and kind (.log, .index, .timeindex).
    pub file: String,
}

impl Segment {
    pub fn topic_partition(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

pub fn segment(path: &Path) -> Option<Segment> {
    let file = path.file_name()?.to_str()?;
    let dir = path.parent()?.file_name()?.to_str()?;
    let (topic, partition) = dir.rsplit_once('-')?;
    // Deleted segments keep their name with a .deleted suffix until removed.
    let base = file.split('.').next()?;
    if topic.is_empty() || base.len() != 20 || !base.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Segment { topic: topic.to_string(), partition: partition.parse().ok()?, file: file.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstall_common::framing::CLIENT_ID_CAP;

    #[test]
    fn api_names_follow_the_protocol_guide() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(1), "Fetch");
        assert_eq!(api_name(3), "Metadata");
        assert_eq!(api_name(8), "OffsetCommit");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(63), "BrokerHeartbeat");
        assert_eq!(api_name(74), "ListConfigResources");
        assert_eq!(api_name(94), "UnregisterController");
        assert_eq!(api_name(95), "Unknown");
        assert_eq!(api_name(-1), "Unknown");
    }

    #[test]
    fn segment_paths_name_their_partition() {
        let s = segment(Path::new("/var/lib/kafka/cold-topic-12/00000000000001234567.log")).unwrap();
        assert_eq!((s.topic.as_str(), s.partition, s.topic_partition()), ("cold-topic", 12, "cold-topic-12".into()));
        assert!(segment(Path::new("/data/cold-0/00000000000000000000.log.deleted")).is_some());
        assert_eq!(segment(Path::new("/usr/lib/jvm/lib/modules")), None);
        assert_eq!(segment(Path::new("/data/nopartition/00000000000000000000.log")), None);
    }

    #[test]
    fn topic_ids_read_and_print_as_kafka_spells_them() {
        // A topic id as kafka-topics --describe prints it, and its bytes.
        let id = TopicId::parse("tJ2xQbTwSFKgLpJbV3HQMw").unwrap();
        assert_eq!(id.0[..3], [0xb4, 0x9d, 0xb1]);
        assert_eq!(id.to_string(), "tJ2xQbTwSFKgLpJbV3HQMw");
        assert_eq!(TopicId::parse("tJ2xQbTwSFKgLpJbV3HQM"), None, "21 characters");
        assert_eq!(TopicId::parse("tJ2xQbTwSFKgLpJbV3HQM+"), None, "not base64url");
        let text = "version: 0\ntopic_id: tJ2xQbTwSFKgLpJbV3HQMw\n";
        assert_eq!(partition_metadata_topic_id(text), Some(id));
        let mut names = TopicNames::default();
        assert_eq!(names.partition(&Topic::Id(id), 3), "topic id tJ2xQbTwSFKgLpJbV3HQMw partition 3");
        names.0.insert(id, "hot".into());
        assert_eq!(names.partition(&Topic::Id(id), 3), "hot-3");
        assert_eq!(names.partition(&Topic::Name("cold".into()), 0), "cold-0");
    }

    #[test]
    fn client_ids_are_printable_and_cut_visibly() {
        let mut id = kstall_common::events::RequestId::NONE;
        id.client_id[..8].copy_from_slice(b"rdk\x01afka");
        id.client_id_len = 8;
        assert_eq!(client_id(&id), "rdk?afka");
        id.client_id = [b'x'; CLIENT_ID_CAP];
        id.client_id_len = CLIENT_ID_CAP as u16;
        id.client_id_cut = 1;
        assert!(client_id(&id).ends_with('…'));
    }
}
