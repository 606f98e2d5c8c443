//! The `.rpm`: a generated spec that copies the staged root (no compiling, no stripping: the
//! host's tools do not know an arm64 binary), built with `rpmbuild` (xz payload and sha256
//! digests, what rpm 4.11 reads).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use kstall_testbed::run;

use super::{Arch, staging::*};

/// The long description as rpm's %description: the paragraph, then `- ` items.
pub(super) fn rpm_description(parts: &[String]) -> String {
    let mut text = parts[0].clone();
    for item in &parts[1..] {
        text.push_str(&format!("\n- {item}"));
    }
    text
}

/// Builds `kstall-<version>-1.<arch>.rpm` in `out_dir` from a static kstall for `arch`, with
/// rpmbuild from a generated spec that copies the staged files (no compiling, no stripping).
pub fn build_rpm(kstall: &Path, arch: Arch, out_dir: &Path) -> Result<PathBuf> {
    let m = meta()?;
    let work = scratch(&format!("rpm-{}", arch.rpm_arch()))?;
    let staged = work.join("staged");
    let files = stage(kstall, arch, &staged, &work, "usr/lib/systemd/system")?;
    let file_list: Vec<String> = files
        .iter()
        .map(|f| match f {
            f if LICENSE_FILES.iter().any(|l| f.ends_with(l)) => format!("%license {f}"),
            f if f.ends_with("README.md") => format!("%doc {f}"),
            f => f.clone(),
        })
        .collect();
    let spec = work.join("kstall.spec");
    std::fs::write(
        &spec,
        format!(
            r#"# The binary is built and stripped already, for any architecture: no debuginfo package,
# no strip or other post-install rewriting (the host's tools do not know an arm64 binary).
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%global _build_id_links none
# xz payload and sha256 digests: what rpm 4.11 (Amazon Linux 2, CentOS 7) reads; zstd is newer.
%global _binary_payload w6.xzdio
Name: {NAME}
Version: {version}
Release: 1
Summary: {summary}
License: {license}
URL: {HOMEPAGE}
Packager: {MAINTAINER}
AutoReqProv: no

%description
{description}

%install
cp -a {staged}/. %{{buildroot}}/

%post
{DAEMON_RELOAD}

%postun
{DAEMON_RELOAD}

%files
%defattr(-,root,root,-)
%dir /usr/share/kstall
%dir /usr/share/doc/kstall
{file_list}
"#,
            version = m.version,
            summary = m.summary,
            license = m.license,
            description = rpm_description(&long_description()?),
            staged = staged.display(),
            file_list = file_list.join("\n"),
        ),
    )?;
    std::fs::create_dir_all(out_dir)?;
    let out_dir = out_dir.canonicalize()?;
    run(Command::new("rpmbuild")
        .args(["-bb", "--quiet", "--target", &format!("{}-linux", arch.rpm_arch())])
        .arg("--define")
        .arg(format!("_topdir {}", work.join("rpmbuild").display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", out_dir.display()))
        .args(["--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm"])
        .arg(&spec))
    .context("rpmbuild failed (cargo xtask setup installs it, Debian package rpm)")?;
    std::fs::remove_dir_all(&work)?;
    let rpm = out_dir.join(format!("{NAME}-{}-1.{}.rpm", m.version, arch.rpm_arch()));
    if !rpm.is_file() {
        bail!("rpmbuild did not write {}", rpm.display());
    }
    Ok(rpm)
}
