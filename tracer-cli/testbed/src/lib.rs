//! kstall's test fixtures, shared by the system tests (`tracer-cli/systests`) and by
//! `cargo xtask` (the demo, the bench, the kernel matrix): a real Kafka broker with real clients
//! (`kafka`, from Maven Central via `kafka_maven`, or 0.9 from npm), the project's own
//! protocol-level clients (`kafka_protocol`, the one Kafka request encoder in the workspace), a
//! FUSE slow disk (`slow_disk`), the kernel matrix's stand-in broker (`stand_in`), the bench's
//! synthetic broker (`synthetic_broker`), process helpers (`support`), a three-broker KRaft
//! cluster with its clients (`cluster`), and which network thread serves a connection, read
//! from /proc, with steering onto one (`placement`). Nothing here needs
//! root to build or to run its unit tests; the fixtures themselves mostly do.
pub mod cluster;
pub mod kafka;
pub mod kafka_maven;
pub mod kafka_protocol;
pub mod placement;
pub mod slow_disk;
pub mod stand_in;
pub mod support;
pub mod synthetic_broker;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Where downloads are cached between runs: $KSTALL_CACHE, else ~/.cache/kstall.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KSTALL_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/kstall")
}

/// Runs a command to completion, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd);
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace root (this crate lives in `tracer-cli/testbed`, two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("tracer-cli/testbed has a grandparent").to_path_buf()
}

/// Cargo's target directory: $CARGO_TARGET_DIR (a relative one taken from the workspace root,
/// where `cargo xtask` runs cargo), else `target` in the workspace root. A `build.target-dir`
/// in a cargo config file is not visible from here: set CARGO_TARGET_DIR or KSTALL instead.
pub fn target_dir() -> PathBuf {
    // join() with an absolute path is that path.
    workspace_root().join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

/// A release binary of the workspace (`cargo build --release`), in [`target_dir`].
pub fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// The kstall binary the system tests and the kernel check run: $KSTALL, else the release build
/// (`cargo xtask build`; `cargo xtask test` builds it and sets KSTALL to it).
pub fn kstall_path() -> PathBuf {
    std::env::var_os("KSTALL").map(PathBuf::from).unwrap_or_else(|| release_binary("kstall"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_is_the_workspace() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml at the workspace root");
        assert!(manifest.contains("[workspace]"), "{} is not the workspace manifest", workspace_root().display());
        assert!(workspace_root().join("tracer-cli/testbed/Cargo.toml").exists());
    }
}
