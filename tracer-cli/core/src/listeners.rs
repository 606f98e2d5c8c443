//! Listeners of a Kafka broker: which listener (and security protocol, and plane) a network
//! thread serves, from its JVM name, and what the broker's properties file says about them.
//! Pure: names and file text in, typed listeners out (discovery reads the file).
//!
//! Network-thread names across versions:
//! - 0.9/0.10: `kafka-network-thread-{brokerId}-{protocol}-{index}` (the listener is named by its protocol)
//! - 1.x-3.x: `[data-plane-|control-plane-]kafka-network-thread-{nodeId}-ListenerName({listener})-{protocol}-{index}`
//! - 4.x: `data-plane-kafka-network-thread-{nodeId}-{listener}-{protocol}-{index}`
//!
//! and acceptors the same without the node id and with the port last
//! (`data-plane-kafka-socket-acceptor-PLAINTEXT-PLAINTEXT-19092`, `kafka-socket-acceptor-PLAINTEXT-9092`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a listener's bytes travel (Kafka's `SecurityProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SecurityProtocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] =
        [SecurityProtocol::Plaintext, SecurityProtocol::Ssl, SecurityProtocol::SaslPlaintext, SecurityProtocol::SaslSsl];

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's names, case-insensitive as Kafka reads them.
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// TLS: every byte is encrypted before kstall could see it, so there is no request view.
    pub fn is_encrypted(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// Whose traffic a listener carries: clients' (data plane), or the cluster's own controller
/// traffic (KRaft's `controller.listener.names`, ZooKeeper mode's `control.plane.listener.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Plane {
    Data,
    Controller,
}

impl Plane {
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::Data => "data",
            Plane::Controller => "controller",
        }
    }
}

/// The listener one network thread (or acceptor) serves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
pub struct Listener {
    pub name: String,
    pub security_protocol: SecurityProtocol,
    pub plane: Plane,
}

impl Listener {
    /// No per-request view: the listener's bytes are TLS.
    pub fn is_encrypted(&self) -> bool {
        self.security_protocol.is_encrypted()
    }
}

/// What a thread name says about its listener, before the broker's config is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedListener {
    /// Upper case, as Kafka normalises listener names.
    pub name: String,
    pub security_protocol: SecurityProtocol,
    /// The thread is a `control-plane-...` one (ZooKeeper mode's control.plane.listener.name).
    pub control_plane_thread: bool,
}

/// Listener of a network thread or acceptor, from its full JVM name; None for other threads and
/// for names that do not follow Kafka's patterns (comms are cut to 15 bytes: never enough).
pub fn parse_thread_name(name: &str) -> Option<NamedListener> {
    let (control_plane_thread, rest) = match name.strip_prefix("control-plane-") {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix("data-plane-").unwrap_or(name)),
    };
    let middle = if let Some(rest) = rest.strip_prefix("kafka-network-thread-") {
        // {nodeId}-...-{index}
        let (node, rest) = rest.split_once('-')?;
        all_digits(node).then_some(())?;
        strip_number_suffix(rest)?
    } else if let Some(rest) = rest.strip_prefix("kafka-socket-acceptor-") {
        // ...-{port}
        strip_number_suffix(rest)?
    } else {
        return None;
    };
    let (listener, protocol) = match middle.rsplit_once('-') {
        Some((listener, protocol)) => (listener, protocol),
        // 0.9: the listener is its protocol.
        None => (middle, middle),
    };
    let listener = match listener.strip_prefix("ListenerName(") {
        Some(inner) => inner.strip_suffix(')')?,
        None => listener,
    };
    let security_protocol = SecurityProtocol::parse(protocol)?;
    if listener.is_empty() || listener.contains(['(', ')']) {
        return None;
    }
    Some(NamedListener { name: listener.to_ascii_uppercase(), security_protocol, control_plane_thread })
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `x-12` -> `x`: the part before a trailing `-{number}`.
fn strip_number_suffix(s: &str) -> Option<&str> {
    let (head, number) = s.rsplit_once('-')?;
    (all_digits(number) && !head.is_empty()).then_some(head)
}

/// A process role of a KRaft node (`process.roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRole {
    Broker,
    Controller,
}

impl ProcessRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Broker => "broker",
            ProcessRole::Controller => "controller",
        }
    }
}

/// One entry of the `listeners` setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfiguredListener {
    pub name: String,
    /// `host:port` as configured (an empty host binds every interface).
    pub address: String,
}

/// What kstall reads from the broker's properties file (and `--override` arguments).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BrokerConfig {
    /// The properties file as the broker's command line names it.
    pub path: String,
    pub listeners: Vec<ConfiguredListener>,
    /// `listener.security.protocol.map`, as set (empty when not set: Kafka's default applies).
    pub listener_security_protocol_map: BTreeMap<String, SecurityProtocol>,
    pub controller_listener_names: Vec<String>,
    pub control_plane_listener_name: Option<String>,
    /// Empty in ZooKeeper mode.
    pub process_roles: Vec<ProcessRole>,
    /// `node.id`, else `broker.id`.
    pub node_id: Option<i64>,
    /// `log.dirs`, else `log.dir`, else Kafka's default: where the partitions' directories are.
    pub log_dirs: Vec<String>,
}

/// Java properties text as key/value pairs: `#`/`!` comments, `=`, `:` or blanks between key
/// and value, lines continued by a trailing backslash, and the common escapes.
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        out.extend(key_value(&logical));
        logical.clear();
    }
    if !logical.is_empty() {
        out.extend(key_value(&logical));
    }
    out
}

fn key_value(line: &str) -> Option<(String, String)> {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => key.extend(chars.next().map(unescape)),
            '=' | ':' => break,
            c if c.is_whitespace() => {
                // Blanks, then optionally one `=` or `:`.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('=' | ':')) {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            value.extend(chars.next().map(unescape));
        } else {
            value.push(c);
        }
    }
    (!key.is_empty()).then(|| (key, value.trim_end().to_string()))
}

fn unescape(c: char) -> char {
    match c {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\u{c}',
        other => other,
    }
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl BrokerConfig {
    /// From the file's key/value pairs, later ones (`--override`) winning.
    pub fn from_properties(path: &str, pairs: &[(String, String)]) -> BrokerConfig {
        let mut settings: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in pairs {
            settings.insert(k.as_str(), v.as_str());
        }
        let get = |key: &str| settings.get(key).copied().filter(|v| !v.trim().is_empty());
        let listeners = get("listeners")
            .map(|v| {
                list(v)
                    .filter_map(|entry| {
                        let (name, address) = entry.split_once("://")?;
                        Some(ConfiguredListener { name: name.trim().to_ascii_uppercase(), address: address.trim().to_string() })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let listener_security_protocol_map = get("listener.security.protocol.map")
            .map(|v| {
                list(v)
                    .filter_map(|entry| {
                        let (name, protocol) = entry.split_once(':')?;
                        Some((name.trim().to_ascii_uppercase(), SecurityProtocol::parse(protocol)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let process_roles = get("process.roles")
            .map(|v| {
                list(v)
                    .filter_map(|r| match r.to_ascii_lowercase().as_str() {
                        "broker" => Some(ProcessRole::Broker),
                        "controller" => Some(ProcessRole::Controller),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        BrokerConfig {
            path: path.to_string(),
            listeners,
            listener_security_protocol_map,
            controller_listener_names: get("controller.listener.names")
                .map(|v| list(v).map(str::to_ascii_uppercase).collect())
                .unwrap_or_default(),
            control_plane_listener_name: get("control.plane.listener.name").map(|v| v.trim().to_ascii_uppercase()),
            process_roles,
            node_id: get("node.id").or_else(|| get("broker.id")).and_then(|v| v.trim().parse().ok()),
            log_dirs: list(get("log.dirs").or_else(|| get("log.dir")).unwrap_or("/tmp/kafka-logs")).map(String::from).collect(),
        }
    }

    /// The config names this listener as one of the controller plane.
    pub fn is_controller_listener(&self, name: &str) -> bool {
        self.controller_listener_names.iter().chain(&self.control_plane_listener_name).any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Security protocol of a listener as the config maps it. Without a map, Kafka's default:
    /// each protocol's name maps to itself, and (KRaft) controller listeners to PLAINTEXT.
    pub fn protocol_of(&self, name: &str) -> Option<SecurityProtocol> {
        let name = name.to_ascii_uppercase();
        if !self.listener_security_protocol_map.is_empty() {
            return self.listener_security_protocol_map.get(&name).copied();
        }
        SecurityProtocol::parse(&name).or_else(|| {
            (!self.process_roles.is_empty() && self.controller_listener_names.contains(&name)).then_some(SecurityProtocol::Plaintext)
        })
    }
}

/// Plane of a listener: the config decides when kstall could read it; else a `control-plane-`
/// thread or the name `CONTROLLER` (KRaft's conventional controller listener) mean controller.
pub fn plane_of(name: &str, control_plane_thread: bool, config: Option<&BrokerConfig>) -> Plane {
    let controller = control_plane_thread
        || match config {
            Some(c) => c.is_controller_listener(name),
            None => name.eq_ignore_ascii_case("CONTROLLER"),
        };
    if controller { Plane::Controller } else { Plane::Data }
}

/// The listener of a thread from its full JVM name and the broker's config (when read).
pub fn thread_listener(jvm_name: &str, config: Option<&BrokerConfig>) -> Option<Listener> {
    let named = parse_thread_name(jvm_name)?;
    let plane = plane_of(&named.name, named.control_plane_thread, config);
    Some(Listener { plane, security_protocol: named.security_protocol, name: named.name })
}

/// A listener as the report and the watch header show it: what the config says, and what the
/// thread names show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ListenerInfo {
    pub name: String,
    /// None when neither a thread name nor the config tells.
    pub security_protocol: Option<SecurityProtocol>,
    pub plane: Plane,
    /// TLS (SSL, SASL_SSL): no per-request view on this listener.
    pub encrypted: bool,
    /// `host:port` from the config's `listeners`.
    pub address: Option<String>,
    /// Live network threads serving it.
    pub network_threads: usize,
}

/// Every listener the config or the threads name, config order first.
pub fn describe(config: Option<&BrokerConfig>, network_threads: &[&Listener]) -> Vec<ListenerInfo> {
    let mut out: Vec<ListenerInfo> = Vec::new();
    let threads_of = |name: &str| network_threads.iter().filter(|l| l.name == name).count();
    if let Some(c) = config {
        for l in &c.listeners {
            let seen = network_threads.iter().find(|t| t.name == l.name);
            let security_protocol = seen.map(|t| t.security_protocol).or_else(|| c.protocol_of(&l.name));
            out.push(ListenerInfo {
                name: l.name.clone(),
                security_protocol,
                plane: seen.map_or_else(|| plane_of(&l.name, false, Some(c)), |t| t.plane),
                encrypted: security_protocol.is_some_and(SecurityProtocol::is_encrypted),
                address: Some(l.address.clone()),
                network_threads: threads_of(&l.name),
            });
        }
    }
    for t in network_threads {
        if !out.iter().any(|l| l.name == t.name) {
            out.push(ListenerInfo {
                name: t.name.clone(),
                security_protocol: Some(t.security_protocol),
                plane: t.plane,
                encrypted: t.is_encrypted(),
                address: None,
                network_threads: threads_of(&t.name),
            });
        }
    }
    out
}

/// `CONTROLLER (PLAINTEXT, controller plane, 127.0.0.1:9093, 1 network thread)`: the security
/// protocol when the name is not it, the plane, the address and thread count when known.
pub fn label(info: &ListenerInfo) -> String {
    let mut s = info.name.clone();
    let mut notes = Vec::new();
    if let Some(p) = info.security_protocol.filter(|p| p.as_str() != info.name) {
        notes.push(p.as_str().to_string());
    }
    notes.push(format!("{} plane", info.plane.as_str()));
    if let Some(a) = &info.address {
        notes.push(a.clone());
    }
    if info.network_threads > 0 {
        notes.push(format!("{} network thread{}", info.network_threads, crate::units::plural(info.network_threads as u64)));
    }
    s += &format!(" ({})", notes.join(", "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, protocol: SecurityProtocol, control: bool) -> Option<NamedListener> {
        Some(NamedListener { name: name.into(), security_protocol: protocol, control_plane_thread: control })
    }

    #[test]
    fn kafka_0_9_names_the_listener_by_its_protocol() {
        assert_eq!(parse_thread_name("kafka-network-thread-0-PLAINTEXT-0"), named("PLAINTEXT", SecurityProtocol::Plaintext, false));
        assert_eq!(parse_thread_name("kafka-network-thread-1001-SSL-2"), named("SSL", SecurityProtocol::Ssl, false));
        assert_eq!(parse_thread_name("kafka-socket-acceptor-PLAINTEXT-9092"), named("PLAINTEXT", SecurityProtocol::Plaintext, false));
    }

    #[test]
    fn kafka_3_names_carry_listener_name() {
        assert_eq!(
            parse_thread_name("data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-0"),
            named("PLAINTEXT", SecurityProtocol::Plaintext, false)
        );
        assert_eq!(
            parse_thread_name("data-plane-kafka-network-thread-2-ListenerName(INTERNAL_TLS)-SASL_SSL-11"),
            named("INTERNAL_TLS", SecurityProtocol::SaslSsl, false)
        );
        assert_eq!(
            parse_thread_name("control-plane-kafka-network-thread-1-ListenerName(CONTROL)-SSL-0"),
            named("CONTROL", SecurityProtocol::Ssl, true)
        );
        assert_eq!(
            parse_thread_name("data-plane-kafka-socket-acceptor-ListenerName(EXTERNAL)-SASL_PLAINTEXT-9094"),
            named("EXTERNAL", SecurityProtocol::SaslPlaintext, false)
        );
        // 1.x/2.x, before the plane prefix.
        assert_eq!(
            parse_thread_name("kafka-network-thread-0-ListenerName(REPLICATION)-PLAINTEXT-3"),
            named("REPLICATION", SecurityProtocol::Plaintext, false)
        );
    }

    #[test]
    fn kafka_4_names_carry_the_bare_listener() {
        assert_eq!(
            parse_thread_name("data-plane-kafka-network-thread-1-CONTROLLER-PLAINTEXT-0"),
            named("CONTROLLER", SecurityProtocol::Plaintext, false)
        );
        assert_eq!(
            parse_thread_name("data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0"),
            named("PLAINTEXT", SecurityProtocol::Plaintext, false)
        );
        assert_eq!(
            parse_thread_name("data-plane-kafka-socket-acceptor-PLAINTEXT-PLAINTEXT-19092"),
            named("PLAINTEXT", SecurityProtocol::Plaintext, false)
        );
        // Hyphens and underscores in a listener name; the protocol never has a hyphen.
        assert_eq!(
            parse_thread_name("data-plane-kafka-network-thread-3-CLIENT-A_1-SASL_SSL-2"),
            named("CLIENT-A_1", SecurityProtocol::SaslSsl, false)
        );
    }

    #[test]
    fn other_names_do_not_parse() {
        for name in [
            "data-plane-kafka-request-handler-3",
            "kafka-network-t",
            "data-plane-kafk",
            "kafka-network-thread-0-PLAINTEXT",       // no index
            "kafka-network-thread-x-PLAINTEXT-0",     // no node id
            "kafka-network-thread-0-TRACE-0",         // not a security protocol
            "data-plane-kafka-network-thread-1-PLAINTEXT-KERBEROS-0",
            "data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT-PLAINTEXT-0",
            "kafka-socket-acceptor-PLAINTEXT",
            "kafka-scheduler-0",
            "",
        ] {
            assert_eq!(parse_thread_name(name), None, "{name}");
        }
    }

    const KRAFT: &str = "# KRaft combined\nprocess.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:39093\n\
listeners=PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093\ncontroller.listener.names=CONTROLLER\n\
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\nlog.dirs=/tmp/kl4/logs\n";

    #[test]
    fn kraft_config_names_its_controller_listener() {
        let c = BrokerConfig::from_properties("/etc/kafka/server.properties", &parse_properties(KRAFT));
        assert_eq!(c.process_roles, [ProcessRole::Broker, ProcessRole::Controller]);
        assert_eq!(c.node_id, Some(1));
        assert_eq!(c.log_dirs, ["/tmp/kl4/logs"]);
        assert_eq!(c.controller_listener_names, ["CONTROLLER"]);
        assert_eq!(c.listeners[1], ConfiguredListener { name: "CONTROLLER".into(), address: "127.0.0.1:39093".into() });
        assert_eq!(c.protocol_of("controller"), Some(SecurityProtocol::Plaintext));
        let ctl = thread_listener("data-plane-kafka-network-thread-1-CONTROLLER-PLAINTEXT-0", Some(&c)).unwrap();
        assert_eq!((ctl.name.as_str(), ctl.plane), ("CONTROLLER", Plane::Controller));
        let data = thread_listener("data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0", Some(&c)).unwrap();
        assert_eq!(data.plane, Plane::Data);
        let infos = describe(Some(&c), &[&data, &ctl, &data]);
        assert_eq!(infos.len(), 2);
        assert_eq!((infos[0].name.as_str(), infos[0].network_threads, infos[0].address.as_deref()), ("PLAINTEXT", 2, Some("127.0.0.1:39092")));
        assert_eq!((infos[1].plane, infos[1].security_protocol), (Plane::Controller, Some(SecurityProtocol::Plaintext)));
        assert_eq!(label(&infos[1]), "CONTROLLER (PLAINTEXT, controller plane, 127.0.0.1:39093, 1 network thread)");
    }

    #[test]
    fn zookeeper_config_with_a_control_plane_listener() {
        let text = "broker.id = 7\nlisteners = INTERNAL://:9092, EXTERNAL://broker-7.example:9093, \\\n   CONTROL://:9094\n\
listener.security.protocol.map: INTERNAL:SASL_PLAINTEXT,EXTERNAL:SSL,CONTROL:PLAINTEXT\ncontrol.plane.listener.name=control\n\
! a comment\nzookeeper.connect=zk:2181/kafka\n";
        let c = BrokerConfig::from_properties("server.properties", &parse_properties(text));
        assert_eq!(c.node_id, Some(7));
        assert!(c.process_roles.is_empty());
        let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["INTERNAL", "EXTERNAL", "CONTROL"]);
        assert_eq!(c.protocol_of("EXTERNAL"), Some(SecurityProtocol::Ssl));
        assert_eq!(c.control_plane_listener_name.as_deref(), Some("CONTROL"));
        assert_eq!(plane_of("CONTROL", false, Some(&c)), Plane::Controller);
        // The config decides: a listener it does not name as the controller's is data plane.
        assert_eq!(plane_of("CONTROLLER", false, Some(&c)), Plane::Data);
        let infos = describe(Some(&c), &[]);
        assert_eq!(infos.iter().filter(|l| l.encrypted).map(|l| l.name.as_str()).collect::<Vec<_>>(), ["EXTERNAL"]);
    }

    #[test]
    fn without_config_the_name_and_thread_decide_the_plane() {
        assert_eq!(plane_of("CONTROLLER", false, None), Plane::Controller);
        assert_eq!(plane_of("PLAINTEXT", false, None), Plane::Data);
        assert_eq!(plane_of("CONTROL", true, None), Plane::Controller);
        let l = thread_listener("control-plane-kafka-network-thread-1-ListenerName(CONTROL)-SSL-0", None).unwrap();
        assert_eq!((l.plane, l.is_encrypted()), (Plane::Controller, true));
        // Default protocol map: a protocol's name maps to itself.
        let c = BrokerConfig::from_properties("s", &parse_properties("listeners=SSL://:9093,PLAINTEXT://:9092"));
        assert_eq!(c.protocol_of("SSL"), Some(SecurityProtocol::Ssl));
        assert_eq!(c.protocol_of("OTHER"), None);
    }

    #[test]
    fn properties_syntax() {
        let pairs = parse_properties("a=1\n  b : two words  \nc three\n# x=y\nd=first\\\n    second\ne\\:f=g\nempty=\n");
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("a"), Some("1"));
        assert_eq!(get("b"), Some("two words"));
        assert_eq!(get("c"), Some("three"));
        assert_eq!(get("d"), Some("firstsecond"));
        assert_eq!(get("e:f"), Some("g"));
        assert_eq!(get("empty"), Some(""));
        assert_eq!(get("# x"), None);
        assert_eq!(pairs.len(), 6);
    }

    #[test]
    fn one_name_per_value() {
        for p in SecurityProtocol::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(SecurityProtocol::parse(&p.as_str().to_lowercase()), Some(p));
        }
        for p in [Plane::Data, Plane::Controller] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for r in [ProcessRole::Broker, ProcessRole::Controller] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
