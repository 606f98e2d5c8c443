//! Thread roles of a Kafka broker: which threads are network threads (they serve sockets, and
//! a slow call there stalls every connection of the thread), which are request handlers.
//! Decided from the full JVM thread name when known, else the 15-byte comm, else behaviour.
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Network,
    RequestHandler,
    Other,
}

impl Role {
    /// The one machine spelling: JSON, metric labels, CSS classes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Network => "network",
            Role::RequestHandler => "request_handler",
            Role::Other => "other",
        }
    }

    /// For people: tables and sentences.
    pub const fn label(self) -> &'static str {
        match self {
            Role::Network => "network",
            Role::RequestHandler => "request-handler",
            Role::Other => "other",
        }
    }
}

/// Where a thread's role came from, most to least reliable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    JvmName,
    Comm,
    Behaviour,
}

/// Longest comm the kernel keeps (TASK_COMM_LEN - 1); a name this long may be truncated.
const COMM_MAX: usize = 15;

/// Role named by a thread name, full (`kafka-network-thread-0-PLAINTEXT-0`,
/// `data-plane-kafka-request-handler-3`) or truncated to a comm (`kafka-network-t`). None when
/// the name cannot tell: modern Kafka's threads all truncate to `data-plane-kafk`.
pub fn role_from_name(name: &str) -> Option<Role> {
    const NETWORK: &str = "kafka-network-thread";
    const HANDLER: &str = "kafka-request-handler";
    if name.contains(NETWORK) {
        return Some(Role::Network);
    }
    if name.contains(HANDLER) {
        return Some(Role::RequestHandler);
    }
    if name.len() == COMM_MAX {
        if NETWORK.starts_with(name) {
            return Some(Role::Network);
        }
        if HANDLER.starts_with(name) {
            return Some(Role::RequestHandler);
        }
        // `data-plane-kafka-...`, `control-plane-kafka-...` truncated: could be either.
        let cut = |full: &str| full.starts_with(name) || name.starts_with(full);
        if ["data-plane-kafka-", "control-plane-kafka-"].iter().any(|p| cut(p)) {
            return None;
        }
    }
    Some(Role::Other)
}

/// What a thread was seen doing, from its in-kernel histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub sendfile_calls: u64,
    /// read/readv/write/writev calls that read no file data: sockets (and eventfds).
    pub socket_io_calls: u64,
    pub epoll_wait_calls: u64,
}

/// Role of a thread whose name is ambiguous: network threads sendfile, or read and write
/// sockets between epoll_waits; threads that only epoll_wait (acceptors) are other; the rest
/// of the broker's ambiguous threads are request handlers.
pub fn role_from_behaviour(a: &Activity) -> Role {
    if a.sendfile_calls > 0 || (a.epoll_wait_calls > 0 && a.socket_io_calls > 0) {
        Role::Network
    } else if a.epoll_wait_calls > 0 {
        Role::Other
    } else {
        Role::RequestHandler
    }
}

/// The role of one thread and why.
pub fn classify(jvm_name: Option<&str>, comm: &str, activity: &Activity) -> (Role, RoleSource) {
    if let Some(role) = jvm_name.and_then(role_from_name) {
        return (role, RoleSource::JvmName);
    }
    if let Some(role) = role_from_name(comm) {
        return (role, RoleSource::Comm);
    }
    (role_from_behaviour(activity), RoleSource::Behaviour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_0_9_names_and_comms() {
        assert_eq!(role_from_name("kafka-network-thread-0-PLAINTEXT-0"), Some(Role::Network));
        assert_eq!(role_from_name("kafka-network-t"), Some(Role::Network));
        assert_eq!(role_from_name("kafka-request-handler-7"), Some(Role::RequestHandler));
        assert_eq!(role_from_name("kafka-request-h"), Some(Role::RequestHandler));
        assert_eq!(role_from_name("kafka-scheduler-0"), Some(Role::Other));
        assert_eq!(role_from_name("java"), Some(Role::Other));
        assert_eq!(role_from_name("ReplicaFetcherTh"), Some(Role::Other));
    }

    #[test]
    fn modern_names_resolve_only_in_full() {
        let net = "data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-0";
        assert_eq!(role_from_name(net), Some(Role::Network));
        assert_eq!(role_from_name("data-plane-kafka-request-handler-3"), Some(Role::RequestHandler));
        assert_eq!(role_from_name("data-plane-kafk"), None);
        assert_eq!(role_from_name("control-plane-k"), None);
    }

    #[test]
    fn behaviour_decides_ambiguous_comms() {
        let sendfiler = Activity { sendfile_calls: 3, ..Default::default() };
        let selector = Activity { socket_io_calls: 10, epoll_wait_calls: 10, ..Default::default() };
        let acceptor = Activity { epoll_wait_calls: 5, ..Default::default() };
        let handler = Activity { socket_io_calls: 0, ..Default::default() };
        assert_eq!(classify(None, "data-plane-kafk", &sendfiler), (Role::Network, RoleSource::Behaviour));
        assert_eq!(classify(None, "data-plane-kafk", &selector).0, Role::Network);
        assert_eq!(classify(None, "data-plane-kafk", &acceptor).0, Role::Other);
        assert_eq!(classify(None, "data-plane-kafk", &handler).0, Role::RequestHandler);
    }

    #[test]
    fn jvm_name_beats_comm_and_behaviour() {
        let sendfiler = Activity { sendfile_calls: 3, ..Default::default() };
        assert_eq!(
            classify(Some("data-plane-kafka-request-handler-0"), "data-plane-kafk", &sendfiler),
            (Role::RequestHandler, RoleSource::JvmName)
        );
        // A comm that names the role is used when the JVM name is missing.
        assert_eq!(classify(None, "kafka-network-t", &Activity::default()), (Role::Network, RoleSource::Comm));
        // A non-Kafka comm is "other" even if it does socket I/O: names win over behaviour.
        assert_eq!(classify(None, "java", &sendfiler), (Role::Other, RoleSource::Comm));
    }
}
