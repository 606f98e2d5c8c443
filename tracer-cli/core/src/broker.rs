//! The broker process as kstall knows it, and what its command line, jar names and thread
//! dump say (parsed here; read from /proc and jcmd by the session).
use std::{collections::HashMap, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Main classes a Kafka broker JVM runs (Apache Kafka, ZooKeeper or KRaft mode alike).
pub const BROKER_MAIN_CLASSES: [&str; 2] = ["kafka.Kafka", "io.confluent.support.metrics.SupportedKafka"];

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Broker {
    pub pid: u32,
    pub main_class: String,
    pub command_line: String,
    /// The command line's arguments, one by one.
    #[serde(skip)]
    pub args: Vec<String>,
    #[serde(skip)]
    pub exe: Option<PathBuf>,
}

pub fn broker_main_class(cmdline: &[String]) -> Option<&'static str> {
    BROKER_MAIN_CLASSES.into_iter().find(|class| cmdline.iter().any(|arg| arg == class))
}

/// Parses a HotSpot thread dump: lines like
/// `"kafka-network-thread-0-PLAINTEXT-0" #25 prio=5 os_prio=0 ... tid=0x... nid=4242 runnable`
/// (`nid` is the Linux tid, decimal since JDK 19, hex before).
pub fn parse_thread_dump(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('"')?;
            let end = rest.rfind("\" ")?;
            let name = &rest[..end];
            let nid = rest[end..].split_whitespace().find_map(|w| w.strip_prefix("nid="))?;
            let tid = match nid.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => nid.parse().ok()?,
            };
            Some((tid, name.to_string()))
        })
        .collect()
}

/// `kafka_2.11-0.9.0.1.jar` -> 0.9.0.1; None for any other file (sources, javadoc, clients).
pub fn kafka_jar_version(file_name: &str) -> Option<String> {
    let jar = file_name.strip_prefix("kafka_")?.strip_suffix(".jar")?;
    let (_scala, version) = jar.split_once('-')?;
    let plain = version.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    (plain && version.starts_with(|c: char| c.is_ascii_digit())).then(|| version.to_string())
}

/// The properties file a broker command line names (the argument after the main class) and
/// the `--override key=value` pairs after it.
pub fn config_args(args: &[String]) -> Option<(&str, Vec<(String, String)>)> {
    let main = args.iter().position(|a| BROKER_MAIN_CLASSES.contains(&a.as_str()))?;
    let file = args.get(main + 1).filter(|a| !a.starts_with('-'))?;
    let mut overrides = Vec::new();
    let mut rest = args[main + 2..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--override"
            && let Some((k, v)) = rest.next().and_then(|kv| kv.split_once('='))
        {
            overrides.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Some((file.as_str(), overrides))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_version_from_the_broker_jar() {
        assert_eq!(kafka_jar_version("kafka_2.11-0.9.0.1.jar").as_deref(), Some("0.9.0.1"));
        assert_eq!(kafka_jar_version("kafka_2.13-3.7.0.jar").as_deref(), Some("3.7.0"));
        for other in ["kafka_2.11-0.9.0.1-sources.jar", "kafka-clients-3.7.0.jar", "kafka_2.11-0.9.0.1.jar.asc", "app.jar"] {
            assert_eq!(kafka_jar_version(other), None, "{other}");
        }
    }

    #[test]
    fn thread_dump_hex_and_decimal_nids() {
        let dump = r#"2026-11-21 12:00:00
Full thread dump OpenJDK 64-Bit Server VM (17.0.15+6-Debian-1deb12u1 mixed mode, sharing):

"kafka-network-thread-0-PLAINTEXT-0" #25 prio=5 os_prio=0 cpu=120.50ms elapsed=60.01s tid=0x00007f1c2c5a1000 nid=0x1a2b runnable  [0x00007f1bf4dfe000]
   java.lang.Thread.State: RUNNABLE
"data-plane-kafka-request-handler-3" #40 daemon prio=5 os_prio=0 cpu=1.00ms elapsed=9.00s tid=0x00007f1c2c5a2000 nid=4242 waiting on condition
"weird "quoted" name" #41 prio=5 os_prio=0 tid=0x1 nid=77 runnable
"VM Thread" os_prio=0 cpu=10ms elapsed=60s tid=0x00007f1c2c0a0000 nid=0x1a00 runnable
"no nid here" #3 prio=5
JNI global refs: 15, weak refs: 0
"#;
        let names = parse_thread_dump(dump);
        assert_eq!(names.get(&0x1a2b).map(String::as_str), Some("kafka-network-thread-0-PLAINTEXT-0"));
        assert_eq!(names.get(&4242).map(String::as_str), Some("data-plane-kafka-request-handler-3"));
        assert_eq!(names.get(&77).map(String::as_str), Some("weird \"quoted\" name"));
        assert_eq!(names.get(&0x1a00).map(String::as_str), Some("VM Thread"));
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn broker_main_class_is_an_argument_not_a_substring() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(broker_main_class(&args("java -Xmx1G -cp /k/libs/* kafka.Kafka server.properties")), Some("kafka.Kafka"));
        assert_eq!(broker_main_class(&args("java -cp /k/libs/* kafka.tools.ConsoleConsumer")), None);
        assert_eq!(broker_main_class(&args("grep kafka.Kafka.log")), None);
    }

    #[test]
    fn config_file_is_the_argument_after_the_main_class() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let a = args("java -Xmx1G -cp /k/libs/* kafka.Kafka config/server.properties --override listeners=PLAINTEXT://:9092 --override broker.id=3");
        let (file, overrides) = config_args(&a).unwrap();
        assert_eq!(file, "config/server.properties");
        assert_eq!(overrides, [("listeners".to_string(), "PLAINTEXT://:9092".to_string()), ("broker.id".into(), "3".into())]);
        assert_eq!(config_args(&args("java -cp x kafka.Kafka")), None);
        assert_eq!(config_args(&args("java -cp x kafka.Kafka --version")), None);
        assert_eq!(config_args(&args("java -cp x Other server.properties")), None);
    }
}
