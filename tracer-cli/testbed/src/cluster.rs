//! A real three-broker Apache Kafka KRaft cluster on loopback: nodes 1, 2 and 3, each a JVM in
//! combined mode (broker and controller, the three controllers a static quorum), Kafka's
//! default three network threads on the PLAINTEXT listener, every port on 127.0.0.1. Broker 1's
//! partition logs can live on a [`SlowDisk`] (its evicted data then takes milliseconds a read),
//! the others' on a normal directory; the metadata logs in /dev/shm. Topics are created with an
//! explicit replica assignment (CreateTopics v2 on the wire), so broker 1 can lead them with
//! its two followers fetching from it. Everything is stopped by pid on drop, the slow disk
//! unmounted and detached after the brokers.
//!
//! Also its clients: a protocol-level cold reader (Fetch v4 from offset 0, one connection,
//! placeable) and a group consumer tailing a topic with librdkafka (python3-confluent-kafka)
//! that records its own request round trips.
use std::{
    fs,
    io::Write,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    kafka::{KafkaVersion, KraftJvm, free_port, kraft_cluster_id, metadata_dir, wait_for_port},
    kafka_maven,
    kafka_protocol::{
        Handshake, Reader, SyncProducer, create_topics_v2, decode_create_topics_v2_response, decode_fetch_v4_response, error_name,
        fetch_v4, read_frame,
    },
    slow_disk::SlowDisk,
};

/// One node of the cluster: a broker and controller in one JVM.
pub struct Node {
    pub id: i32,
    /// The PLAINTEXT (client and replication) listener.
    pub port: u16,
    pub controller_port: u16,
    pub log_dir: PathBuf,
    pub work_dir: PathBuf,
    child: Child,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub version: KafkaVersion,
    /// Broker 1's partition logs on a slow disk of this many MiB whose reads take this long.
    pub slow_disk: Option<(u64, Duration)>,
    /// The JVMs' heap (-Xmx and -Xms).
    pub heap: &'static str,
    /// `offsets.topic.num.partitions` (few, so the group coordinators are quick to list).
    pub offsets_partitions: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { version: KafkaVersion::kraft_from_env(), slow_disk: None, heap: "256M", offsets_partitions: 3 }
    }
}

/// Three KRaft nodes on loopback, stopped on drop.
pub struct Cluster {
    pub version: KafkaVersion,
    pub work_dir: PathBuf,
    pub nodes: Vec<Node>,
    pub offsets_partitions: u32,
    // Dropped after the nodes (see Drop).
    disk: Option<SlowDisk>,
}

impl Cluster {
    pub fn start(work_dir: &Path, options: ClusterOptions) -> Result<Cluster> {
        let KafkaVersion::Kraft(version) = options.version else { bail!("the cluster runs KRaft brokers only") };
        let _ = fs::remove_dir_all(work_dir);
        fs::create_dir_all(work_dir)?;
        let disk = match options.slow_disk {
            Some((mib, delay)) => Some(SlowDisk::create(&work_dir.join("disk"), mib, delay)?),
            None => None,
        };
        let mut cluster =
            Cluster { version: options.version, work_dir: work_dir.to_path_buf(), nodes: Vec::new(), offsets_partitions: options.offsets_partitions, disk };
        let class_path = kafka_maven::class_path(&kafka_maven::kafka_libs(version)?)?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
        let voters: Vec<String> = ports.iter().enumerate().map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1)).collect();
        let voters = voters.join(",");
        let cluster_id = kraft_cluster_id()?;
        let mut formats = Vec::new();
        let mut configs = Vec::new();
        for (i, &(port, controller_port)) in ports.iter().enumerate() {
            let id = i as i32 + 1;
            let dir = work_dir.join(format!("node-{id}"));
            let app_logs = dir.join("logs");
            fs::create_dir_all(&app_logs)?;
            let log_dir = match (&cluster.disk, id) {
                (Some(disk), 1) => disk.mount_point.join("kafka-logs"),
                _ => dir.join("kafka-logs"),
            };
            fs::create_dir_all(&log_dir)?;
            let metadata = metadata_dir(port);
            let _ = fs::remove_dir_all(&metadata);
            let props = dir.join("server.properties");
            let rf = 3;
            fs::write(
                &props,
                format!(
                    "process.roles=broker,controller\nnode.id={id}\ncontroller.quorum.voters={voters}\n\
                     listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
                     advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
                     inter.broker.listener.name=PLAINTEXT\nlistener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                     num.io.threads=4\nlog.dirs={}\nmetadata.log.dir={}\nnum.partitions=1\n\
                     offsets.topic.replication.factor={rf}\noffsets.topic.num.partitions={}\n\
                     transaction.state.log.replication.factor={rf}\ntransaction.state.log.min.isr=2\n\
                     share.coordinator.state.topic.replication.factor={rf}\nshare.coordinator.state.topic.min.isr=2\n\
                     group.initial.rebalance.delay.ms=0\nauto.create.topics.enable=false\ndelete.topic.enable=true\n",
                    log_dir.display(),
                    metadata.display(),
                    options.offsets_partitions,
                ),
            )?;
            let jvm = KraftJvm::new(&dir, &app_logs, class_path.clone(), options.heap)?;
            let java = |main: &str| jvm.command(main);
            let mut format = java("kafka.tools.StorageTool");
            format.arg("format").arg(format!("--cluster-id={cluster_id}")).arg("-c").arg(&props).stdout(Stdio::piped()).stderr(Stdio::piped());
            formats.push(format.spawn().context("cannot run Kafka's StorageTool (java)")?);
            let mut run = java("kafka.Kafka");
            run.arg(&props);
            configs.push((id, port, controller_port, log_dir, dir, app_logs, run));
        }
        // Formatted in parallel (a JVM start each), then started together: the quorum needs two.
        for f in formats {
            let out = f.wait_with_output()?;
            if !out.status.success() {
                bail!("kafka StorageTool format failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            }
        }
        for (id, port, controller_port, log_dir, dir, app_logs, mut cmd) in configs {
            let log = fs::File::create(app_logs.join("kafka.out"))?;
            let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().context("cannot start java")?;
            cluster.nodes.push(Node { id, port, controller_port, log_dir, work_dir: dir, child });
        }
        for node in &mut cluster.nodes {
            let log = node.work_dir.join("logs/kafka.out");
            wait_for_port(node.port, &mut node.child, &format!("Kafka node {}", node.id), &log)?;
        }
        cluster.wait_brokers(3)?;
        Ok(cluster)
    }

    pub fn node(&self, id: i32) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("node ids are 1, 2 and 3")
    }

    /// Every broker's address, for a client's bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(Node::bootstrap).collect::<Vec<_>>().join(",")
    }

    /// kcat for this cluster (bootstrap: every broker).
    pub fn kcat(&self) -> Command {
        let mut cmd = Command::new("kcat");
        cmd.args(["-b", &self.bootstrap()]);
        cmd
    }

    /// `kcat -L` (one topic, or all).
    pub fn metadata(&self, topic: Option<&str>) -> Result<String> {
        let mut cmd = self.kcat();
        cmd.args(["-L", "-m", "5"]);
        if let Some(t) = topic {
            cmd.args(["-t", t]);
        }
        let out = cmd.stderr(Stdio::null()).output().context("cannot run kcat")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_brokers(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.metadata(None)?;
            if last.contains(&format!(" {n} brokers:")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!("the cluster did not list {n} brokers within 90 s: {last}")
    }

    /// Creates `topic` with one partition per entry of `assignment` (its replicas, the
    /// preferred leader first) and `configs`, through broker 1 (which forwards to the active
    /// controller), then waits until every partition has its preferred leader and every
    /// replica in sync.
    pub fn create_topic(&self, topic: &str, assignment: &[Vec<i32>], configs: &[(&str, &str)]) -> Result<()> {
        let mut stream = TcpStream::connect(self.node(1).bootstrap())?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.write_all(&create_topics_v2(1, "kstall-testbed", topic, assignment, configs, 30_000))?;
        let response = read_frame(&mut stream)?;
        let mut r = Reader::new(&response);
        let _correlation_id = r.i32()?;
        for (name, code, message) in decode_create_topics_v2_response(r.rest())? {
            if code != 0 {
                bail!("CreateTopics {name}: error {code} ({}){}", error_name(code), message.map(|m| format!(": {m}")).unwrap_or_default());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let md = self.metadata(Some(topic))?;
            let ready = assignment.iter().enumerate().all(|(p, replicas)| {
                let list = replicas.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
                md.lines().any(|l| {
                    l.contains(&format!("partition {p}, leader {},", replicas[0]))
                        && l.contains(&format!("replicas: {list},"))
                        && l.contains(&format!("isrs: {list}"))
                })
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{topic} did not get its leaders and in-sync replicas within 60 s: {md}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Produces `total_bytes` of `message_bytes`-sized messages to `topic` with kcat (acks=all).
    pub fn produce(&self, topic: &str, total_bytes: usize, message_bytes: usize) -> Result<()> {
        let mut kcat = self.kcat();
        kcat.args(["-X", "acks=all"]);
        crate::kafka::kcat_produce(kcat, topic, total_bytes, message_bytes)
    }

    /// Segment files of a topic's partitions in node `id`'s log dir.
    pub fn segment_files(&self, id: i32, topic: &str) -> Result<Vec<PathBuf>> {
        crate::kafka::segment_files_in(&self.node(id).log_dir, topic)
    }

    /// Drops a topic's segment files of node `id` from the page cache (written back first).
    pub fn evict_from_page_cache(&self, id: i32, topic: &str) -> Result<usize> {
        crate::kafka::evict_files(&self.segment_files(id, topic)?)
    }

    /// The group coordinator (broker id) of `group`, from the leaders of `__consumer_offsets`
    /// (which must exist): partition `abs(group.hashCode()) % partitions`, as Kafka picks it.
    pub fn coordinator_of(&self, group: &str) -> Result<i32> {
        let partition = java_string_hash(group).checked_abs().unwrap_or(0) as u32 % self.offsets_partitions;
        let md = self.metadata(Some("__consumer_offsets"))?;
        let prefix = format!("partition {partition}, leader ");
        md.lines()
            .find_map(|l| l.trim().strip_prefix(&prefix)?.split(',').next()?.trim().parse().ok())
            .with_context(|| format!("no leader for __consumer_offsets partition {partition}: {md}"))
    }

    /// A consumer group id whose coordinator is not broker `not_on`: `{prefix}-N`.
    pub fn group_not_coordinated_by(&self, prefix: &str, not_on: i32) -> Result<String> {
        for n in 0..64 {
            let group = format!("{prefix}-{n}");
            if self.coordinator_of(&group)? != not_on {
                return Ok(group);
            }
        }
        bail!("every group {prefix}-N is coordinated by broker {not_on}")
    }

    fn stop_all(&mut self) {
        // SIGTERM to all first, so they shut down together (a lone survivor waits for a quorum).
        for node in &mut self.nodes {
            if node.child.try_wait().ok().flatten().is_none() {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
            }
        }
        // Shutting down together, the last ones may wait for a quorum that left: at most 10 s,
        // then SIGKILL (this cluster's data is thrown away).
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &mut self.nodes {
            while node.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            stop_now(&mut node.child);
            let _ = fs::remove_dir_all(metadata_dir(node.port));
        }
        self.nodes.clear();
        self.disk.take();
    }

    pub fn stop(mut self) {
        self.stop_all();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn stop_now(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Java's `String.hashCode` (UTF-16 units; these group ids are ASCII).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

// ---------------------------------------------------------------------------------------------
// The cold reader

/// A consumer on one connection of its own that reads partition 0 of a topic from offset 0 with
/// Fetch v4 (1 MiB at a time, as kcat asks), and starts over from 0 at the end.
pub struct ColdReader {
    stream: TcpStream,
    client_id: String,
    correlation_id: i32,
}

/// What a cold reader did.
#[derive(Clone, Debug, Default)]
pub struct ColdReadStats {
    pub fetches: u64,
    pub bytes: u64,
    /// Times it reached the end and started over.
    pub passes: u64,
    /// Each Fetch's round trip on the client's clock.
    pub times_ns: Vec<u64>,
}

impl ColdReader {
    pub fn connect(bootstrap: &str, client_id: &str) -> Result<ColdReader> {
        let stream = TcpStream::connect(bootstrap).with_context(|| format!("cannot connect to {bootstrap}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(ColdReader { stream, client_id: client_id.to_string(), correlation_id: 0 })
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Reads `topic` until `stop` is set; at its end calls `at_end` (to evict it again, say)
    /// and starts over from offset 0.
    pub fn run(&mut self, topic: &str, stop: &AtomicBool, mut at_end: impl FnMut()) -> Result<ColdReadStats> {
        let mut stats = ColdReadStats::default();
        let mut offset = 0i64;
        while !stop.load(Ordering::Relaxed) {
            self.correlation_id += 1;
            let started = Instant::now();
            self.stream.write_all(&fetch_v4(self.correlation_id, &self.client_id, topic, offset, 1 << 20, 100))?;
            let response = read_frame(&mut self.stream)?;
            stats.times_ns.push(started.elapsed().as_nanos() as u64);
            let mut r = Reader::new(&response);
            let correlation_id = r.i32()?;
            if correlation_id != self.correlation_id {
                bail!("Fetch answered for correlation id {correlation_id}, expected {}", self.correlation_id);
            }
            let answer = decode_fetch_v4_response(r.rest())?;
            if answer.error_code != 0 {
                bail!("Fetch {topic} at {offset}: error {} ({})", answer.error_code, error_name(answer.error_code));
            }
            stats.fetches += 1;
            stats.bytes += answer.bytes as u64;
            match answer.next_offset {
                Some(next) if next < answer.high_watermark => offset = next,
                _ => {
                    stats.passes += 1;
                    at_end();
                    offset = 0;
                }
            }
        }
        Ok(stats)
    }
}

// ---------------------------------------------------------------------------------------------
// The synchronous producer, on the cluster

/// The project's protocol-level producer (acks=all) connected to node `id`.
pub fn sync_producer(cluster: &Cluster, id: i32, client_id: &str) -> Result<SyncProducer> {
    Ok(SyncProducer::connect(&cluster.node(id).bootstrap(), client_id, Handshake::ApiVersions)?.with_acks(-1))
}

/// Produces one message at a time to `topic` until `stop` is set; returns each request's time
/// on the producer's clock (ns, in order).
pub fn produce_until(producer: &mut SyncProducer, topic: &str, stop: &AtomicBool, count: &AtomicU64) -> Result<Vec<u64>> {
    let mut times = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        times.push(producer.produce(topic, &[b'p'; 100])?.as_nanos() as u64);
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------------------
// The group consumer (librdkafka through python3-confluent-kafka)

const TAIL_CONSUMER: &str = r#"
import json, signal, sys, time
from confluent_kafka import Consumer

bootstrap, topic, group, client_id, out_path, seconds = sys.argv[1:7]
deadline = time.time() + float(seconds)
stopping = []
signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
windows = []

def on_stats(text):
    s = json.loads(text)
    for name, b in s.get("brokers", {}).items():
        if b.get("rtt", {}).get("cnt", 0) > 0:
            windows.append({"ts": time.time(), "name": name, "nodeid": b.get("nodeid"), "rtt": b["rtt"]})

assigned = []
def on_assign(consumer, partitions):
    assigned.extend(partitions)
    sys.stderr.write("tail consumer assigned %s\n" % [p.partition for p in partitions])
    sys.stderr.flush()

c = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "client.id": client_id,
    "auto.offset.reset": "latest", "enable.auto.commit": False,
    "fetch.wait.max.ms": 100, "statistics.interval.ms": 1000, "stats_cb": on_stats,
})
c.subscribe([topic], on_assign=on_assign)
records = 0
gaps = []
last = None
while time.time() < deadline and not stopping:
    m = c.poll(0.1)
    if m is None or m.error():
        continue
    records += 1
    now = time.monotonic()
    if last is not None:
        gaps.append(now - last)
    last = now
c.close()

def rtt_of(pred):
    ws = [w["rtt"] for w in windows if pred(w)]
    return {"windows": len(ws), "count": sum(w["cnt"] for w in ws),
            "max_us": max((w["max"] for w in ws), default=0),
            "p99_us": max((w["p99"] for w in ws), default=0)}

json.dump({
    "records": records,
    "max_gap_ms": max(gaps, default=0) * 1000,
    "leader": rtt_of(lambda w: w["nodeid"] == 1 and "GroupCoordinator" not in w["name"]),
    "coordinator": rtt_of(lambda w: "GroupCoordinator" in w["name"]),
    "windows": windows,
}, open(out_path, "w"))
"#;

/// A group consumer tailing a topic (librdkafka, through python3-confluent-kafka), timing its
/// requests itself (librdkafka's per-broker round-trip windows, every second) and writing them
/// to a JSON file when it ends: `leader` (requests to broker 1: its Fetch requests), and
/// `coordinator` (Heartbeat and the group's requests), each with max_us and the largest
/// window p99_us; `records`; `max_gap_ms` between records; and every window (`ts`: wall clock
/// at its end, seconds; each covers the second before), see [`rtt_max_between`].
pub struct TailConsumer {
    child: Child,
    pub out: PathBuf,
}

impl TailConsumer {
    /// Starts it with bootstrap `bootstrap` in `group` for at most `seconds`; returns once
    /// it has its partitions.
    pub fn start(dir: &Path, bootstrap: &str, topic: &str, group: &str, client_id: &str, seconds: u64) -> Result<TailConsumer> {
        fs::create_dir_all(dir)?;
        let script = dir.join("tail_consumer.py");
        fs::write(&script, TAIL_CONSUMER)?;
        let out = dir.join(format!("{group}.json"));
        let _ = fs::remove_file(&out);
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(&script).args([bootstrap, topic, group, client_id]).arg(&out).arg(seconds.to_string()).stdin(Stdio::null()).stdout(Stdio::null());
        let child = crate::support::spawn_until_ready(cmd, "tail consumer assigned").context("python3-confluent-kafka consumer")?;
        Ok(TailConsumer { child, out })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it (SIGTERM: it closes, leaving its group) and returns what it measured.
    pub fn finish(mut self) -> Result<serde_json::Value> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the tail consumer did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = fs::read_to_string(&self.out).with_context(|| format!("the tail consumer wrote no {}", self.out.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

impl Drop for TailConsumer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The largest round trip (ns) of the consumer's windows for broker `node_id` (not its
/// coordinator connection) that overlap the wall-clock interval [`from`, `to`] (seconds since
/// the epoch), or with `inside` only those within it, and how many requests they hold.
pub fn rtt_max_between(result: &serde_json::Value, node_id: i64, from: f64, to: f64, inside: bool) -> (u64, u64) {
    let mut max = 0;
    let mut count = 0;
    for w in result["windows"].as_array().into_iter().flatten() {
        let ts = w["ts"].as_f64().unwrap_or(0.0);
        let coordinator = w["name"].as_str().is_some_and(|n| n.contains("GroupCoordinator"));
        let wanted = if inside { ts - 1.0 >= from && ts <= to } else { ts > from && ts - 1.0 < to };
        if w["nodeid"].as_i64() == Some(node_id) && !coordinator && wanted {
            max = max.max(w["rtt"]["max"].as_u64().unwrap_or(0) * 1000);
            count += w["rtt"]["cnt"].as_u64().unwrap_or(0);
        }
    }
    (max, count)
}

/// Seconds since the epoch, as the consumer's windows are stamped.
pub fn wall_clock() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A flag and counter shared with a client thread.
pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_codes() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }
}
