//! TLS for the endpoint: the server config from the web config file's tls_server_config, and
//! a listener that runs handshakes concurrently.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::TlsFileConfig;

/// A TLS handshake not done by then is dropped (a client that connects and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 64;

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

pub(super) fn config(tls: &TlsFileConfig, base: &Path) -> Result<ServerConfig> {
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
