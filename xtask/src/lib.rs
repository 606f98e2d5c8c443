//! Project helpers behind `cargo xtask`: toolchain setup, and a real Kafka broker with real
//! clients for the demo and the integration tests (which use this crate as a library).
pub mod bench;
pub mod guest;
pub mod kafka;
pub mod kafka_protocol;
pub mod kafka_maven;
pub mod kernel_check;
pub mod matrix;
pub mod setup;
pub mod slow_disk;
pub mod stand_in;
pub mod support;
pub mod synthetic_broker;

use std::{path::PathBuf, process::Command};

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

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}
