//! Apache Kafka's broker and Java client as Apache publishes them on Maven Central
//! (`org.apache.kafka:kafka_2.13` and the modules it depends on), resolved once into the cache
//! by Maven from a generated pom; a later run finds the jars and starts no Maven at all, so it
//! works offline. Also the project's small Java client (`java/KstallClient.java` in this crate), compiled
//! against the same `kafka-clients` jar.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cache_dir, output};

/// The log4j 2 binding for the slf4j 1.7 API Kafka 3.9 and 4.x log through (the broker jars
/// name the API only; Apache's distribution ships a binding beside them).
const LOG4J_VERSION: &str = "2.25.5";

/// Where one Kafka version's jars live once resolved.
fn version_dir(version: &str) -> PathBuf {
    cache_dir().join(format!("kafka-{version}"))
}

/// Written last, so a resolution cut short is redone.
const RESOLVED_MARKER: &str = "resolved";

/// The broker's jars (and their dependencies, kafka-clients among them) for `version`, from
/// Maven Central into the cache on the first call.
pub fn kafka_libs(version: &str) -> Result<PathBuf> {
    let dir = version_dir(version);
    let libs = dir.join("libs");
    if dir.join(RESOLVED_MARKER).exists() {
        return Ok(libs);
    }
    fs::create_dir_all(&dir)?;
    let _ = fs::remove_dir_all(&libs);
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kstall.cache</groupId><artifactId>kafka-broker</artifactId><version>{version}</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"#
    );
    fs::write(dir.join("pom.xml"), pom)?;
    eprintln!("setup: Kafka {version} from Maven Central (mvn dependency:copy-dependencies)");
    // Quiet, and its output kept for a failure: Maven 3.8 prints colour resets even with -q.
    let out = Command::new("mvn")
        .args(["-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!("-DoutputDirectory={}", libs.display()))
        .current_dir(&dir)
        .output()
        .context("cannot run mvn (apt-get install maven)")?;
    if !out.status.success() {
        bail!(
            "cannot resolve org.apache.kafka:kafka_2.13:{version} with Maven (needs Maven Central): {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let broker_jar = libs.join(format!("kafka_2.13-{version}.jar"));
    if !broker_jar.exists() {
        bail!("Maven resolved Kafka {version} but {} is missing", broker_jar.display());
    }
    fs::write(dir.join(RESOLVED_MARKER), "")?;
    Ok(libs)
}

/// Every jar of a directory, as an explicit class path (as Kafka's own `kafka-run-class.sh`
/// builds it, so the broker jar and its version show on the command line).
pub fn class_path(libs: &Path) -> Result<String> {
    let mut jars: Vec<String> = fs::read_dir(libs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jar"))
        .map(|p| p.display().to_string())
        .collect();
    jars.sort();
    if jars.is_empty() {
        bail!("no jars in {}", libs.display());
    }
    Ok(jars.join(":"))
}

const CLIENT_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/java/KstallClient.java");

/// The project's Java client (official `kafka-clients` of `version`), compiled once per source
/// and version; returns the class path to run `KstallClient` with.
pub fn java_client(version: &str) -> Result<String> {
    let libs = kafka_libs(version)?;
    let source_path = Path::new(CLIENT_SOURCE);
    let source = fs::read(source_path).with_context(|| format!("cannot read {}", source_path.display()))?;
    let classes = version_dir(version).join(format!("client-{:016x}", fnv1a(&source)));
    let libs_cp = class_path(&libs)?;
    if !classes.join("KstallClient.class").exists() {
        let tmp = classes.with_extension("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        output(Command::new("javac").args(["-nowarn", "-d"]).arg(&tmp).args(["-cp", &libs_cp]).arg(source_path))
            .context("cannot compile the Java client (needs javac, openjdk-17-jdk-headless)")?;
        let _ = fs::remove_dir_all(&classes);
        fs::rename(&tmp, &classes)?;
    }
    Ok(format!("{}:{libs_cp}", classes.display()))
}

/// FNV-1a, to name a compiled client after its source.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
