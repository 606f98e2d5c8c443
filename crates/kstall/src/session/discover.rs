//! Finding the broker process, its threads and their JVM names.
use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use procfs::process::Process;
use serde::Serialize;

use crate::listeners::{self, BrokerConfig};

/// Main classes a Kafka broker JVM runs (Apache Kafka, ZooKeeper or KRaft mode alike).
const BROKER_MAIN_CLASSES: [&str; 2] = ["kafka.Kafka", "io.confluent.support.metrics.SupportedKafka"];

#[derive(Debug, Clone, Serialize)]
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

fn broker_main_class(cmdline: &[String]) -> Option<&'static str> {
    BROKER_MAIN_CLASSES.into_iter().find(|class| cmdline.iter().any(|arg| arg == class))
}

fn broker_from(process: &Process) -> Option<Broker> {
    let cmdline = process.cmdline().ok()?;
    let main_class = broker_main_class(&cmdline)?;
    Some(Broker {
        pid: process.pid as u32,
        main_class: main_class.to_string(),
        command_line: cmdline.join(" "),
        exe: process.exe().ok(),
        args: cmdline,
    })
}

/// The broker to trace: `pid` when given (checked to be a Kafka broker), else the only process
/// on this host running a broker main class.
pub fn find_broker(pid: Option<u32>) -> Result<Broker> {
    if let Some(pid) = pid {
        let Ok(process) = Process::new(pid as i32) else {
            bail!("no process with pid {pid}: pass the broker's pid (pgrep -f kafka.Kafka)");
        };
        return match broker_from(&process) {
            Some(broker) => Ok(broker),
            None => {
                let comm = process.stat().map(|s| s.comm).unwrap_or_else(|_| "?".into());
                bail!(
                    "pid {pid} ({comm}) is not a Kafka broker: its command line runs none of {}; pass the broker's pid (pgrep -f kafka.Kafka)",
                    BROKER_MAIN_CLASSES.join(", ")
                )
            }
        };
    }
    let brokers: Vec<Broker> = procfs::process::all_processes()
        .map_err(|e| anyhow::anyhow!("cannot list processes in /proc: {e}"))?
        .filter_map(|p| p.ok())
        .filter_map(|p| broker_from(&p))
        .collect();
    match brokers.as_slice() {
        [] => bail!("no Kafka broker found on this host (no process runs kafka.Kafka): start one, or pass --pid"),
        [one] => Ok(one.clone()),
        many => {
            let pids: Vec<String> = many.iter().map(|b| b.pid.to_string()).collect();
            bail!("several Kafka brokers found (pids {}): pick one with --pid", pids.join(", "))
        }
    }
}

/// The process runs. A zombie (exited, not yet reaped by its parent) does not: its threads are
/// gone, and it stays one for as long as that parent does not wait for it.
pub fn is_alive(pid: u32) -> bool {
    Process::new(pid as i32).and_then(|p| p.stat()).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
}

pub fn thread_is_alive(pid: u32, tid: u32) -> bool {
    Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// Live threads of a process: tid -> comm (the kernel's 15-byte thread name).
pub fn thread_comms(pid: u32) -> HashMap<u32, String> {
    let Ok(process) = Process::new(pid as i32) else { return HashMap::new() };
    let Ok(tasks) = process.tasks() else { return HashMap::new() };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| Some((t.tid as u32, t.stat().ok()?.comm)))
        .collect()
}

/// Full JVM thread names (tid -> name) from `jcmd PID Thread.print`, using the jcmd of the
/// broker's own JDK when it can be found. Slow (it starts a JVM), so callers run it off the
/// hot path, after the probes are attached.
pub fn jvm_thread_names(broker: &Broker) -> Result<HashMap<u32, String>> {
    // jcmd asks a JVM for a thread dump with SIGQUIT, which ends any other process: never send
    // it to one whose executable is not java (a broker embedded in something else, say).
    let is_java = broker.exe.as_ref().and_then(|e| e.file_name()).is_some_and(|n| n == "java");
    if !is_java {
        bail!("pid {} does not run java: no jcmd", broker.pid);
    }
    let jcmd = broker
        .exe
        .as_ref()
        .and_then(|java| java.parent())
        .map(|bin| bin.join("jcmd"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("jcmd"));
    let mut child = Command::new(&jcmd)
        .arg(broker.pid.to_string())
        .arg("Thread.print")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", jcmd.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // The child exits (or is killed below) so this read ends.
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        loop {
            match child.try_wait()? {
                Some(_) => break,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        out = reader.join().unwrap_or_default();
    }
    let names = parse_thread_dump(&out);
    if names.is_empty() {
        bail!("{} {} Thread.print gave no thread names", jcmd.display(), broker.pid);
    }
    Ok(names)
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

/// Kafka's version, from the broker jar (`kafka_2.11-0.9.0.1.jar`) named on the classpath or,
/// when the classpath is a wildcard, held open by the JVM.
pub fn kafka_version(broker: &Broker) -> Option<String> {
    let on_classpath = broker.command_line.split([':', ' ', '/']).find_map(kafka_jar_version);
    on_classpath.or_else(|| {
        open_files(broker.pid)
            .into_iter()
            .find_map(|(_, path)| path.file_name().and_then(|n| n.to_str()).and_then(kafka_jar_version))
    })
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

/// Largest properties file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The broker's listener settings from its properties file, read through /proc/PID/root (or
/// /proc/PID/cwd for a relative path) so a broker in another mount namespace (a container)
/// is read as it sees its file. None when there is no file argument or it cannot be read.
pub fn broker_config(broker: &Broker) -> Option<BrokerConfig> {
    let (file, overrides) = config_args(&broker.args)?;
    let path = match file.strip_prefix('/') {
        Some(absolute) => format!("/proc/{}/root/{absolute}", broker.pid),
        None => format!("/proc/{}/cwd/{file}", broker.pid),
    };
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_CONFIG_BYTES).read_to_string(&mut text).ok()?;
    let mut pairs = listeners::parse_properties(&text);
    pairs.extend(overrides);
    Some(BrokerConfig::from_properties(file, &pairs))
}

/// A file as the kernel names it in tracepoints: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// From a tracepoint's `dev_t` (the kernel's internal encoding, major << 20 | minor).
    pub fn from_kernel(dev: u32, inode: u64) -> FileId {
        FileId { major: dev >> 20, minor: dev & 0xfffff, inode }
    }

    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let dev = meta.dev();
        FileId { major: libc::major(dev), minor: libc::minor(dev), inode: meta.ino() }
    }
}

/// The file open as `fd` in process `pid`, with its identity.
pub fn fd_file(pid: u32, fd: i32) -> Option<(FileId, PathBuf)> {
    let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    let meta = std::fs::metadata(&link).ok()?;
    Some((FileId::of(&meta), std::fs::read_link(&link).ok()?))
}

/// Every regular file process `pid` has open.
pub fn open_files(pid: u32) -> Vec<(FileId, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|entry| {
            let meta = std::fs::metadata(entry.path()).ok()?;
            meta.is_file().then_some(())?;
            Some((FileId::of(&meta), std::fs::read_link(entry.path()).ok()?))
        })
        .collect()
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

    #[test]
    fn unreadable_config_is_none() {
        let broker = |args: &str| Broker {
            pid: std::process::id(),
            main_class: "kafka.Kafka".into(),
            command_line: args.into(),
            args: args.split(' ').map(String::from).collect(),
            exe: None,
        };
        assert_eq!(broker_config(&broker("java kafka.Kafka /nonexistent/server.properties")), None);
        assert_eq!(broker_config(&broker("java kafka.Kafka")), None);
        // A relative path resolves against the broker's working directory.
        let dir = std::env::temp_dir().join(format!("kstall-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.properties"), "listeners=SSL://:9093\nnode.id=4\n").unwrap();
        let absolute = format!("java kafka.Kafka {}", dir.join("s.properties").display());
        let c = broker_config(&broker(&absolute)).unwrap();
        assert_eq!((c.listeners[0].name.as_str(), c.node_id), ("SSL", Some(4)));
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&dir.join("s.properties"), &cwd);
        assert_eq!(broker_config(&broker(&format!("java kafka.Kafka {relative}"))).map(|c| c.node_id), Some(Some(4)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `target` relative to `base` (both absolute).
    fn pathdiff(target: &Path, base: &Path) -> String {
        let ups = base.components().count() - 1;
        format!("{}{}", "../".repeat(ups), target.strip_prefix("/").unwrap().display())
    }

    #[test]
    fn missing_pid_is_a_clear_error() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = find_broker(Some(1 << 23)).unwrap_err().to_string();
        assert!(err.starts_with("no process with pid 8388608"), "{err}");
    }

    #[test]
    fn non_kafka_pid_is_a_clear_error() {
        let err = find_broker(Some(std::process::id())).unwrap_err().to_string();
        assert!(err.contains("is not a Kafka broker"), "{err}");
    }
}
