//! Finding the broker process, its threads and their JVM names.
use std::{
    collections::HashMap,
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use procfs::process::Process;

use kstall_core::{
    broker::{BROKER_MAIN_CLASSES, Broker, broker_main_class, config_args, kafka_jar_version, parse_thread_dump},
    kafka::{TopicNames, partition_metadata_topic_id},
    listeners::{self, BrokerConfig},
};

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
    Process::new(pid as i32).and_then(|p| p.task_from_tid(tid as i32)).is_ok()
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

/// Kafka's version, from the broker jar (`kafka_2.11-0.9.0.1.jar`) named on the classpath or,
/// when the classpath is a wildcard, held open by the JVM.
pub fn kafka_version(broker: &Broker) -> Option<String> {
    let on_classpath = broker.command_line.split([':', ' ', '/']).find_map(kafka_jar_version);
    on_classpath.or_else(|| {
        super::files::open_files(broker.pid)
            .into_iter()
            .find_map(|(_, path)| path.file_name().and_then(|n| n.to_str()).and_then(kafka_jar_version))
    })
}

/// Largest properties file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The broker's listener settings from its properties file, read through /proc/PID/root (or
/// /proc/PID/cwd for a relative path) so a broker in another mount namespace (a container)
/// is read as it sees its file. None when there is no file argument or it cannot be read.
/// A path as the broker names it, seen from here: through its root (a container's) or, when
/// relative, its working directory.
fn broker_path(broker: &Broker, path: &str) -> PathBuf {
    PathBuf::from(match path.strip_prefix('/') {
        Some(absolute) => format!("/proc/{}/root/{absolute}", broker.pid),
        None => format!("/proc/{}/cwd/{path}", broker.pid),
    })
}

/// Partition directories read for topic ids, at most: a broker with more partitions names the
/// rest by id.
const MAX_PARTITION_DIRS: usize = 100_000;

/// Topic ids to names from the broker's log directories: every partition directory's
/// `partition.metadata` holds its topic's id (Kafka 2.8 and later).
pub fn topic_names(broker: &Broker, config: &BrokerConfig) -> TopicNames {
    let mut names = TopicNames::default();
    // One partition's file names its topic: the others are skipped.
    let mut topics = std::collections::HashSet::new();
    let mut seen = 0;
    for dir in &config.log_dirs {
        let Ok(entries) = std::fs::read_dir(broker_path(broker, dir)) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_PARTITION_DIRS {
                return names;
            }
            let name = entry.file_name();
            let Some((topic, partition)) = name.to_str().and_then(|n| n.rsplit_once('-')) else { continue };
            if partition.parse::<u32>().is_err() || topics.contains(topic) {
                continue;
            }
            let mut text = String::new();
            let read = std::fs::File::open(entry.path().join("partition.metadata")).and_then(|f| f.take(256).read_to_string(&mut text));
            if let Some(id) = read.ok().and_then(|_| partition_metadata_topic_id(&text)) {
                names.0.insert(id, topic.to_string());
                topics.insert(topic.to_string());
            }
        }
    }
    names
}

pub fn broker_config(broker: &Broker) -> Option<BrokerConfig> {
    let (file, overrides) = config_args(&broker.args)?;
    let path = broker_path(broker, file);
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_CONFIG_BYTES).read_to_string(&mut text).ok()?;
    let mut pairs = listeners::parse_properties(&text);
    pairs.extend(overrides);
    Some(BrokerConfig::from_properties(file, &pairs))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
