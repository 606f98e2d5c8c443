//! What `cargo xtask dist` ships besides the static binaries: a `.deb` and an `.rpm` per
//! architecture and an OCI image from `scratch`, each built from one static `kstall`, and the
//! tests that install or run them.
//!
//! The packages are built with the distributions' own tools from Debian (`dpkg-deb --build`,
//! `rpmbuild` from the `rpm` package), not cargo-deb / cargo-generate-rpm: both tools are one
//! `apt-get install` away on a fresh CI machine, take a prebuilt binary of any architecture as
//! it is, and need no crate compiled first. The image is made with `buildah` (from `scratch`,
//! one file copied, so a foreign architecture needs no emulation) and written as an OCI archive.
//!
//! Each package holds `/usr/bin/kstall`, the systemd unit `kstall-export.service` (not enabled),
//! the Grafana dashboard in `/usr/share/kstall/`, a man page made by `help2man` from the binary's
//! own `--help` (every subcommand's included) and README plus license texts.
//!
//! Tests: [`test_deb`] installs the .deb with `dpkg -i` into a clean Debian 12 root
//! (`debootstrap --variant=minbase`, made once and cached as a tarball) and runs `kstall check`
//! there from /usr/bin; [`test_rpm`] reads the .rpm back with `rpm -qp` and installs it into an
//! empty root; [`test_image`] reads the image's config and layer back and, for this machine's
//! architecture, runs it under `podman run --privileged --pid=host` against the stand-in broker
//! (`xtask stand-in`) until `/metrics` says `kstall_target_up 1`.
//!
//! The modules: `staging` (the files every package holds, laid out under a root, and the
//! metadata all three share), `deb`, `rpm` and `oci` (one format each, from a staged
//! root or the binary), `verify` (the tests that install or run what was built).
mod deb;
mod oci;
mod rpm;
mod staging;
mod verify;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};

pub use crate::dist::{Arch, version};
pub use deb::build_deb;
pub use oci::build_image;
pub use rpm::build_rpm;
pub use staging::NAME;
pub use verify::{debian_root_tarball, run_image, test_deb, test_image, test_rpm};

/// The .deb, .rpm and image for one architecture, as `cargo xtask dist` writes them.
pub fn build_all(kstall: &Path, arch: Arch, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut built = Vec::new();
    for step in [build_deb, build_rpm, build_image] {
        let started = Instant::now();
        let path = step(kstall, arch, out_dir)?;
        eprintln!("package: {} ({:.1} MiB) in {:.1}s", path.display(), size_mib(&path), started.elapsed().as_secs_f64());
        built.push(path);
    }
    Ok(built)
}

fn size_mib(path: &Path) -> f64 {
    path.metadata().map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
}

/// `cargo xtask package KSTALL ARCH [OUT_DIR]`: the .deb, .rpm and image from one kstall
/// binary for ARCH (x86_64 or aarch64) into OUT_DIR (default: `<target>/dist`), then their
/// tests; prints each artifact's size and each step's time.
pub fn package_command(args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask package KSTALL x86_64|aarch64 [OUT_DIR]";
    let kstall = PathBuf::from(args.first().context(usage)?);
    let arch = match args.get(1).map(String::as_str) {
        Some(name) => Arch::ALL.into_iter().find(|a| a.name() == name).with_context(|| format!("unknown architecture {name:?}: {usage}"))?,
        None => bail!(usage),
    };
    let out = args.get(2).map(PathBuf::from).unwrap_or_else(crate::dist::dist_dir);
    let [deb, rpm, image]: [PathBuf; 3] = build_all(&kstall, arch, &out)?.try_into().expect("three artifacts");
    let timed = |what: &str, test: &dyn Fn() -> Result<()>| -> Result<()> {
        let started = Instant::now();
        test()?;
        eprintln!("package: {what} passed in {:.1}s", started.elapsed().as_secs_f64());
        Ok(())
    };
    if arch == Arch::host() {
        timed("test_deb", &|| test_deb(&deb))?;
    }
    timed("test_rpm", &|| test_rpm(&rpm, arch))?;
    timed("test_image", &|| test_image(&image, arch))?;
    Ok(())
}
