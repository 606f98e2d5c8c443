//! The OCI image: `scratch` plus the static kstall, made with `buildah` (one file copied, so a
//! foreign architecture needs no emulation) and written as an OCI archive.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use kstall_testbed::{output, run};

use super::{Arch, staging::*, version};

/// What the image's entrypoint runs without arguments: the exporter on every address of the
/// pod's network namespace (the DaemonSet's Service scrapes it there).
pub(super) const IMAGE_CMD: [&str; 3] = ["export", "--listen", "0.0.0.0:9464"];

/// Builds `kstall-<version>-<arch>.oci.tar` in `out_dir`: an OCI image from `scratch` holding
/// only the static kstall (no shell, no libc, no CA certificates: it makes no outgoing
/// connection), with entrypoint kstall. buildah copies one file, so a foreign architecture
/// needs no emulation; nothing is left in buildah's local storage.
pub fn build_image(kstall: &Path, arch: Arch, out_dir: &Path) -> Result<PathBuf> {
    check_elf(kstall, arch)?;
    let version = version();
    std::fs::create_dir_all(out_dir)?;
    let image = out_dir.canonicalize()?.join(format!("{NAME}-{version}-{}.oci.tar", arch.name()));
    let _ = std::fs::remove_file(&image);
    let container = output(Command::new("buildah").args(["from", "--quiet", "--arch", arch.oci_arch(), "scratch"]))
        .context("buildah from scratch failed (cargo xtask setup installs buildah)")?
        .trim()
        .to_string();
    let built = (|| -> Result<()> {
        run(Command::new("buildah").args(["copy", "--quiet", "--chmod", "0755", &container]).arg(kstall).arg("/usr/bin/kstall").stdout(Stdio::null()))?;
        let cmd = serde_json::to_string(&IMAGE_CMD)?;
        run(Command::new("buildah")
            .args(["config", "--arch", arch.oci_arch(), "--os", "linux", "--entrypoint", r#"["/usr/bin/kstall"]"#, "--cmd", &cmd])
            .args(["--label", &format!("org.opencontainers.image.title={NAME}")])
            .args(["--label", &format!("org.opencontainers.image.version={version}")])
            .args(["--label", &format!("org.opencontainers.image.source={HOMEPAGE}")])
            .args(["--label", &format!("org.opencontainers.image.licenses={}", meta()?.license)])
            .args(["--port", "9464/tcp", &container]))?;
        run(Command::new("buildah")
            .args(["commit", "--quiet", "--format", "oci", "--rm", &container])
            .arg(format!("oci-archive:{}:{NAME}:{version}", image.display()))
            .stdout(Stdio::null()))
    })();
    if built.is_err() {
        let _ = Command::new("buildah").args(["rm", &container]).stdout(Stdio::null()).status();
    }
    built.with_context(|| format!("cannot build the {} image", arch.name()))?;
    Ok(image)
}
