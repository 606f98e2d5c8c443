//! `kstall export --web.config.file`: TLS and basic auth for the metrics endpoint, in the format
//! of the Prometheus exporter-toolkit (the file node_exporter and friends take), so one file
//! serves a fleet of exporters:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths are relative to this file, as the toolkit does
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: ca.crt
//!   min_version: TLS12           # optional: TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt: htpasswd -nBC 10 "" | tr -d ':\n'
//! ```
//!
//! Unlike the toolkit, the file is read once at start (restart kstall for a new certificate
//! or user), so a mistake in it stops kstall at once with the fix instead of failing scrapes
//! later. Keys kstall does not implement (inline `cert`, `cipher_suites`, `http_server_config`,
//! `rate_limit`, ...) are refused by name rather than ignored.
//!
//! Basic auth and the CPU of the broker host: a bcrypt check costs ~50-100 ms of CPU at cost
//! 10, on purpose. A check that succeeded is remembered per user (a keyed HMAC of the password,
//! with a key drawn at start: not the password, and useless outside this process) and reused
//! until the user has not been seen for [`CACHE_IDLE`], so a Prometheus scraping every 15 s
//! pays for one bcrypt check, not one per scrape. Checks that need bcrypt (a new or wrong
//! password, an unknown user, which is checked against a dummy hash of the same cost so that
//! timing does not tell which users exist) run one at a time, off the async worker, and each
//! keeps the slot busy for [`PENALTY_FACTOR`] times its own duration after it: a storm of bad
//! credentials costs at most ~1/(1+PENALTY_FACTOR) = 20% of one core, whatever the bcrypt cost.
//! A request that cannot get the slot within [`SLOT_WAIT`] is answered 429, so a storm queues
//! no unbounded work; a scraper whose password is cached never waits for the slot.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use ring::{hmac, rand::SecureRandom};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// A cached successful check is forgotten after this long without a request by that user.
pub const CACHE_IDLE: Duration = Duration::from_secs(10 * 60);
/// After a bcrypt check the slot stays busy this many times the check's own duration.
pub const PENALTY_FACTOR: u32 = 4;
/// How long a request waits for the bcrypt slot before it is answered 429.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);
/// A TLS handshake not done by then is dropped (a client that connects and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 64;
/// Where the format is described, for error messages.
const FORMAT_DOC: &str = "https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tls_server_config: Option<TlsFileConfig>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsFileConfig {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// What the web config file asks for: TLS, basic auth, both or (an empty file) neither.
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
}

impl WebConfig {
    /// Reads and checks the file; every error names the file and the fix.
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the web config file {}: pass an existing file to --web.config.file", path.display()))?;
        let config = parse(&text).with_context(|| format!("web config file {}", path.display()))?;
        // The toolkit resolves the file's relative paths against the file's own directory.
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match config.tls_server_config {
            Some(tls) => Some(Arc::new(tls_config(&tls, base).with_context(|| format!("web config file {}", path.display()))?)),
            None => None,
        };
        let auth = match config.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users).with_context(|| format!("web config file {}", path.display()))?)),
            _ => None,
        };
        Ok(WebConfig { tls, auth })
    }
}

fn parse(text: &str) -> Result<FileConfig> {
    // An empty file (or only comments) is valid for the toolkit: no TLS, no auth.
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Ok(FileConfig::default());
    }
    serde_saphyr::from_str::<Option<FileConfig>>(text)
        .map(Option::unwrap_or_default)
        // Without the source snippet: the error is one line, and names line and column.
        .map_err(|e| anyhow!("{}: fix the YAML (format: {FORMAT_DOC})", one_line(&e.without_snippet().to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_relative() { base.join(file) } else { file.to_path_buf() }
}

fn read_file(base: &Path, file: &Option<PathBuf>, key: &str) -> Result<(PathBuf, Vec<u8>)> {
    let Some(file) = file else { bail!("tls_server_config has no {key}: add it (a PEM file)") };
    let path = resolve(base, file);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {key} {}: fix {key}", path.display()))?;
    Ok((path, bytes))
}

fn certificates(path: &Path, pem: &[u8], key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{key} {} is not a PEM certificate file ({e}): fix {key}", path.display()))?;
    if certs.is_empty() {
        bail!("{key} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): fix {key}", path.display());
    }
    Ok(certs)
}

/// The versions kstall speaks, oldest first; a config names a range of them.
const VERSIONS: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS12, &rustls::version::TLS13];

/// The index of a version in [`VERSIONS`].
fn tls_version(name: &str, key: &str) -> Result<usize> {
    match name {
        "TLS12" => Ok(0),
        "TLS13" => Ok(1),
        "TLS10" | "TLS11" => bail!("{key} {name} is not supported (TLS 1.0 and 1.1 are obsolete): use TLS12 or TLS13"),
        other => bail!("{key} {other:?} is not a TLS version: use TLS12 or TLS13"),
    }
}

fn tls_config(tls: &TlsFileConfig, base: &Path) -> Result<ServerConfig> {
    let (cert_path, cert_pem) = read_file(base, &tls.cert_file, "cert_file")?;
    let (key_path, key_pem) = read_file(base, &tls.key_file, "key_file")?;
    let certs = certificates(&cert_path, &cert_pem, "cert_file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow!("key_file {} holds no PEM private key ({e}): fix key_file (PKCS#8, PKCS#1 or SEC1 PEM)", key_path.display()))?;

    let min = tls_version(tls.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = tls_version(tls.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    if min > max {
        bail!("min_version is above max_version: fix one of them");
    }
    let versions = &VERSIONS[min..=max];
    // ring, not aws-lc-rs: it builds with the cc crate for every target kstall ships (static
    // x86_64 and aarch64 through CC_<target>), where aws-lc-rs would need cmake.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("the TLS versions asked for are not supported")?;

    let client_auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = || -> Result<Arc<RootCertStore>> {
        let (ca_path, ca_pem) = read_file(base, &tls.client_ca_file, "client_ca_file")
            .with_context(|| format!("client_auth_type {client_auth} needs client_ca_file"))?;
        let mut roots = RootCertStore::empty();
        for cert in certificates(&ca_path, &ca_pem, "client_ca_file")? {
            roots.add(cert).map_err(|e| anyhow!("client_ca_file {}: {e}: fix client_ca_file", ca_path.display()))?;
        }
        Ok(Arc::new(roots))
    };
    let builder = match client_auth {
        "NoClientCert" | "" => {
            if tls.client_ca_file.is_some() {
                bail!("client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type: RequireAndVerifyClientCert (or remove client_ca_file)");
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone()).build().context("client_ca_file cannot verify clients")?,
        ),
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .allow_unauthenticated()
                .build()
                .context("client_ca_file cannot verify clients")?,
        ),
        other => bail!(
            "client_auth_type {other:?} is not supported: use NoClientCert, RequireAndVerifyClientCert or VerifyClientCertIfGiven (a certificate that is not verified proves nothing)"
        ),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow!("cert_file {} and key_file {} do not make a usable certificate ({e}): give the key of that certificate", cert_path.display(), key_path.display()))?;
    // The endpoint speaks HTTP/1.1 only (axum's http1); say so in ALPN.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The outcome of a basic-auth check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No, malformed or wrong credentials: 401 with `WWW-Authenticate: Basic`.
    Denied,
    /// The bcrypt slot stayed busy (a storm of checks): 429.
    Busy,
}

/// Users and their bcrypt hashes, with the cache and the CPU budget described at the top.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// Checked for unknown users, at the highest cost of the real ones: the same work.
    dummy_hash: String,
    cache_key: hmac::Key,
    /// user -> (HMAC of the password that passed bcrypt, last use).
    cache: Mutex<HashMap<String, (hmac::Tag, Instant)>>,
    slot: Arc<Semaphore>,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        let mut max_cost = 4;
        for (user, hash) in &users {
            if user.contains(':') {
                bail!("basic_auth_users: user name {user:?} contains ':', which basic auth cannot send: rename it");
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                anyhow!("basic_auth_users: the password of {user:?} is not a bcrypt hash ({e}): hash it with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                bail!("basic_auth_users: the bcrypt cost of {user:?} is {cost}, outside 4-31: hash it again with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`");
            }
            max_cost = max_cost.max(cost);
        }
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        rng.fill(&mut secret).map_err(|_| anyhow!("the system's random number generator failed"))?;
        let dummy_hash = bcrypt::hash(secret, max_cost).context("cannot make the dummy bcrypt hash")?;
        rng.fill(&mut secret).map_err(|_| anyhow!("the system's random number generator failed"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            dummy_hash,
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            cache: Mutex::new(HashMap::new()),
            slot: Arc::new(Semaphore::new(1)),
        })
    }

    /// The check for one request, given its `Authorization` header.
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(parse_basic) else { return Verdict::Denied };
        if self.cached(&user, &password, Instant::now()) {
            return Verdict::Allowed;
        }
        let Ok(Ok(permit)) = tokio::time::timeout(SLOT_WAIT, self.slot.clone().acquire_owned()).await else {
            return Verdict::Busy;
        };
        let this = self.clone();
        let started = Instant::now();
        let allowed = tokio::task::spawn_blocking(move || this.verify(&user, &password)).await.unwrap_or(false);
        // The slot stays taken for a while after the check, in the background: the answer is
        // not delayed, the next bcrypt check is.
        let penalty = started.elapsed() * PENALTY_FACTOR;
        tokio::spawn(async move {
            tokio::time::sleep(penalty).await;
            drop(permit);
        });
        if allowed { Verdict::Allowed } else { Verdict::Denied }
    }

    /// True when this user's password passed bcrypt before and the user was seen within
    /// [`CACHE_IDLE`]; refreshes the entry. The HMAC comparison is constant-time.
    fn cached(&self, user: &str, password: &str, now: Instant) -> bool {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let Some((tag, seen)) = cache.get_mut(user) else { return false };
        if now.duration_since(*seen) > CACHE_IDLE {
            cache.remove(user);
            return false;
        }
        if hmac::verify(&self.cache_key, password.as_bytes(), tag.as_ref()).is_err() {
            return false;
        }
        *seen = now;
        true
    }

    /// The bcrypt check (slow on purpose); remembers a success.
    fn verify(&self, user: &str, password: &str) -> bool {
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy_hash);
                false
            }
        };
        if ok {
            let tag = hmac::sign(&self.cache_key, password.as_bytes());
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(user.to_string(), (tag, Instant::now()));
        }
        ok
    }
}

/// `Basic base64(user:password)` -> (user, password); None for anything else.
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A TLS listener for `axum::serve`: TCP connections are accepted here and their handshakes
/// run concurrently (each in its own task, with a timeout), so a slow or silent client holds
/// up no one; finished handshakes are handed to the HTTP server.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(16);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        log::debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            drop(permit);
                            let _ = tx.send((tls, peer)).await;
                        }
                        // A scraper with the wrong CA, plain HTTP to the TLS port, a port scan:
                        // the client sees the failure; here it is only debug noise.
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (the runtime is shutting down): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The warnings for an endpoint reachable from other hosts without TLS or without auth.
pub fn exposure_warnings(listen: SocketAddr, config: Option<&WebConfig>) -> Vec<String> {
    if listen.ip().is_loopback() {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if config.is_none_or(|c| c.tls.is_none()) {
        warnings.push(format!(
            "listening on {listen}, beyond loopback, without TLS: metrics (client ids, topics' latency) cross the network in clear; set tls_server_config in a --web.config.file"
        ));
    }
    if config.is_none_or(|c| c.auth.is_none()) {
        warnings.push(format!("listening on {listen}, beyond loopback, without basic auth: anyone who reaches the port can scrape; set basic_auth_users in a --web.config.file"));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "secret" at cost 4 (the minimum: fast tests) with htpasswd's `$2y$` prefix, made by glibc's
    /// crypt(3) (libxcrypt), not by the crate that checks it.
    const SECRET_2Y: &str = "$2y$04$x6bW4WQ3FVXN4ZC5b6WiIulrySdQLK.9KmfFl2hnjJa7mSOu/1nYe";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kstall-web-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn load_err(dir: &Path, text: &str) -> String {
        let path = write(dir, "web.yml", text);
        match WebConfig::load(&path) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    fn auth_of(users: &[(&str, &str)]) -> Arc<BasicAuth> {
        Arc::new(BasicAuth::new(users.iter().map(|(u, h)| (u.to_string(), h.to_string())).collect()).unwrap())
    }

    #[test]
    fn empty_and_auth_only_files_parse() {
        let dir = scratch("parse");
        let empty = WebConfig::load(&write(&dir, "empty.yml", "# nothing yet\n\n")).unwrap();
        assert!(empty.tls.is_none() && empty.auth.is_none());
        let auth = WebConfig::load(&write(&dir, "auth.yml", &format!("basic_auth_users:\n  prometheus: {SECRET_2Y}\n"))).unwrap();
        assert!(auth.tls.is_none());
        assert_eq!(auth.auth.unwrap().users.len(), 1);
        // A bcrypt hash with `$` unquoted and quoted reads the same.
        let quoted = WebConfig::load(&write(&dir, "quoted.yml", &format!("basic_auth_users:\n  prometheus: '{SECRET_2Y}'\n"))).unwrap();
        assert_eq!(quoted.auth.unwrap().users["prometheus"], SECRET_2Y);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_files_fail_with_the_fix() {
        let dir = scratch("bad");
        let missing = WebConfig::load(&dir.join("nope.yml")).err().unwrap();
        assert!(format!("{missing:#}").contains("pass an existing file to --web.config.file"), "{missing:#}");
        for (text, expected) in [
            ("basic_auth_users: [unclosed\n", "fix the YAML"),
            ("tls_server_config:\n  cert_file: a\n  ciphers: [x]\n", "unknown field"),
            ("rate_limit:\n  burst: 2\n", "unknown field"),
            ("basic_auth_users:\n  bob: plaintext\n", "is not a bcrypt hash"),
            ("basic_auth_users:\n  bob: $1$abc$abcdefghijklmnopqrstuv\n", "htpasswd -nBC 10"),
            (&format!("basic_auth_users:\n  'a:b': {SECRET_2Y}\n"), "contains ':'"),
            ("tls_server_config:\n  key_file: k.pem\n", "no cert_file"),
            ("tls_server_config:\n  cert_file: missing.crt\n  key_file: k.pem\n", "cannot read cert_file"),
        ] {
            let err = load_err(&dir, text);
            assert!(err.contains(expected), "{text:?}: expected {expected:?} in {err}");
            assert!(err.contains("web.yml") || err.contains("web config"), "names the file: {err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tls_files_are_found_relative_to_the_config_and_checked() {
        let dir = scratch("tls");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .args(["-keyout", "server.key", "-out", "server.crt"])
            .current_dir(&dir)
            .output();
        let Ok(made) = made else {
            eprintln!("openssl not installed: TLS file test skipped");
            return;
        };
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let config = write(&dir, "web.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
        // From another working directory: the paths are the config file's.
        let loaded = WebConfig::load(&config).unwrap();
        assert_eq!(loaded.tls.unwrap().alpn_protocols, vec![b"http/1.1".to_vec()]);
        // A key that is not a key; a certificate given as the key; TLS 1.3 only.
        std::fs::write(dir.join("junk.key"), "not a key\n").unwrap();
        let err = load_err(&dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: junk.key\n");
        assert!(err.contains("holds no PEM private key"), "{err}");
        let err = load_err(&dir, "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n");
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = load_err(&dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n  max_version: TLS12\n");
        assert!(err.contains("min_version is above max_version"), "{err}");
        let err = load_err(&dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n");
        assert!(err.contains("needs client_ca_file"), "{err}");
        let err = load_err(&dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequestClientCert\n");
        assert!(err.contains("is not supported"), "{err}");
        let mtls = write(&dir, "mtls.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n  min_version: TLS13\n");
        assert!(WebConfig::load(&mtls).unwrap().tls.is_some());
        // Another certificate's key.
        let other = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "other.key"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(other.success());
        let err = load_err(&dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n");
        assert!(err.contains("do not make a usable certificate"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(parse_basic(&basic("alice", "pa:ss wörd")), Some(("alice".into(), "pa:ss wörd".into())));
        assert_eq!(parse_basic(b"basic YWxpY2U6eA=="), Some(("alice".into(), "x".into())));
        for bad in [&b"Bearer abc"[..], b"Basic", b"Basic !!!", b"Basic YWxpY2U=", b"\xff\xfe"] {
            assert_eq!(parse_basic(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn auth_allows_only_the_right_password_and_caches_it() {
        let auth = auth_of(&[("prometheus", SECRET_2Y)]);
        assert_eq!(auth.check(None).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&basic("prometheus", "wrong"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&basic("nobody", "secret"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(b"Basic cHJvbWV0aGV1cw==")).await, Verdict::Denied); // no ':'
        assert!(!auth.cached("prometheus", "secret", Instant::now()));
        assert_eq!(auth.check(Some(&basic("prometheus", "secret"))).await, Verdict::Allowed);
        // Now from the cache: no bcrypt, and only for the same password.
        assert!(auth.cached("prometheus", "secret", Instant::now()));
        assert!(!auth.cached("prometheus", "secret2", Instant::now()));
        assert!(!auth.cached("nobody", "secret", Instant::now()));
        assert_eq!(auth.check(Some(&basic("prometheus", "secret "))).await, Verdict::Denied);
        // Idle past CACHE_IDLE: forgotten, so bcrypt runs again.
        assert!(!auth.cached("prometheus", "secret", Instant::now() + CACHE_IDLE + Duration::from_secs(1)));
        assert!(!auth.cached("prometheus", "secret", Instant::now()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_storm_of_bad_passwords_is_paced() {
        // Cost 8: ~10-20 ms a check, long enough to measure the pacing.
        let hash = bcrypt::hash("secret", 8).unwrap();
        let auth = auth_of(&[("prometheus", &hash)]);
        let started = Instant::now();
        let storm: Vec<_> = (0..6)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.check(Some(&basic("prometheus", &format!("guess{i}")))).await })
            })
            .collect();
        let mut verdicts = Vec::new();
        for s in storm {
            verdicts.push(s.await.unwrap());
        }
        assert!(verdicts.iter().all(|v| *v == Verdict::Denied || *v == Verdict::Busy), "{verdicts:?}");
        let denied = verdicts.iter().filter(|v| **v == Verdict::Denied).count() as u32;
        // One check at a time, each followed by PENALTY_FACTOR times its duration: the checks
        // that ran took at least (denied - 1) * (1 + PENALTY_FACTOR) single checks of wall time.
        let one = {
            let t = Instant::now();
            let _ = bcrypt::verify("x", &hash);
            t.elapsed()
        };
        let elapsed = started.elapsed();
        assert!(elapsed * 2 >= one * (denied - 1) * (1 + PENALTY_FACTOR), "{denied} checks of {one:?} took only {elapsed:?}");
    }

    #[test]
    fn warnings_beyond_loopback_only() {
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let local6: SocketAddr = "[::1]:9464".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert!(exposure_warnings(local, None).is_empty());
        assert!(exposure_warnings(local6, None).is_empty());
        let warnings = exposure_warnings(any, None);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("without TLS") && warnings[1].contains("without basic auth"));
        let auth_only = WebConfig { tls: None, auth: Some(auth_of(&[("p", SECRET_2Y)])) };
        let warnings = exposure_warnings(any, Some(&auth_only));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("without TLS"));
    }
}
