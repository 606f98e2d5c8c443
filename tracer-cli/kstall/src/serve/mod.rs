//! The exporter's HTTP endpoint: [`http`] serves the metrics, over [`tls`] and behind
//! [`auth`] when the web config file asks for them.
//!
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
pub mod auth;
pub mod http;
pub mod tls;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, anyhow};
use rustls::ServerConfig;
use serde::Deserialize;

use self::auth::BasicAuth;

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
pub(super) struct TlsFileConfig {
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
            Some(tls) => Some(Arc::new(tls::config(&tls, base).with_context(|| format!("web config file {}", path.display()))?)),
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
    use super::{auth::testing::{SECRET_2Y, auth_of}, *};

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
