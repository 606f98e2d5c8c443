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
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use kstall_testbed::{cache_dir, output, run, workspace_root};

pub use crate::dist::{Arch, version};

/// Runs a binary of `arch` here: directly, or through Debian's qemu-user-static.
fn runner(arch: Arch, binary: &Path) -> Command {
    if arch == Arch::host() {
        Command::new(binary)
    } else {
        let mut cmd = Command::new(format!("qemu-{}-static", arch.name()));
        cmd.arg(binary);
        cmd
    }
}

pub const NAME: &str = "kstall";
const HOMEPAGE: &str = "https://github.com/kstall/kstall";
const MAINTAINER: &str = "kstall developers <kstall@users.noreply.github.com>";
const UNIT: &str = "kstall-export.service";
/// Where the man page says the unit and dashboard are, and what the tests look for.
const DASHBOARD: &str = "usr/share/kstall/grafana-dashboard.json";
const MAN_PAGE: &str = "usr/share/man/man1/kstall.1.gz";
const LICENSE_FILES: [&str; 2] = ["LICENSE-APACHE", "LICENSE-MIT"];

/// `key = "value"` in `[section]` of a Cargo manifest (the few fields packaging needs; xtask
/// has no TOML parser and needs none for these).
fn manifest_field(manifest: &Path, section: &str, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == format!("[{section}]");
        } else if in_section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
            && let Some(value) = v.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"'))
        {
            return Ok(value.to_string());
        }
    }
    bail!("no {key} in [{section}] of {}", manifest.display())
}


/// The version as dpkg and rpm order it: a SemVer pre-release (`0.2.0-rc.1`) sorts before its
/// release with `~`, and rpm forbids `-` in a version.
fn package_version(version: &str) -> String {
    version.replacen('-', "~", 1)
}

struct Meta {
    version: String,
    summary: String,
    license: String,
}

fn meta() -> Result<Meta> {
    let root = workspace_root();
    Ok(Meta {
        version: package_version(version()),
        summary: manifest_field(&root.join("tracer-cli/kstall/Cargo.toml"), "package", "description")?,
        // xtask's license is the workspace's, as kstall's.
        license: env!("CARGO_PKG_LICENSE").to_string(),
    })
}

/// The long description: README's opening paragraph and the list after it (what kstall
/// shows), as plain text: the paragraph, then one item a string.
fn long_description() -> Result<Vec<String>> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    let mut lines = readme.lines().skip_while(|l| l.starts_with('#') || l.trim().is_empty());
    let plain = |s: &str| s.replace(['`', '*'], "");
    let intro: Vec<&str> = lines.by_ref().take_while(|l| !l.trim().is_empty()).collect();
    let mut parts = vec![plain(&intro.join(" "))];
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        match line.strip_prefix("- ") {
            Some(item) => parts.push(plain(item)),
            None => parts.last_mut().expect("intro").push_str(&format!(" {}", plain(line.trim()))),
        }
    }
    Ok(parts)
}

/// The long description as rpm's %description: the paragraph, then `- ` items.
fn rpm_description(parts: &[String]) -> String {
    let mut text = parts[0].clone();
    for item in &parts[1..] {
        text.push_str(&format!("\n- {item}"));
    }
    text
}

/// A fresh scratch directory (emptied if a failed run left it).
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kstall-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(to.parent().expect("absolute"))?;
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write_file(to: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::create_dir_all(to.parent().expect("absolute"))?;
    std::fs::write(to, text)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Fails unless `binary` is an ELF executable for `arch` (e_machine), so an x86_64 binary is
/// never packaged as arm64.
fn check_elf(binary: &Path, arch: Arch) -> Result<()> {
    let mut header = [0u8; 20];
    std::fs::File::open(binary)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("cannot read the kstall binary {}", binary.display()))?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    let want = match arch {
        Arch::X86_64 => 62,
        Arch::Aarch64 => 183,
    };
    if &header[..4] != b"\x7fELF" || machine != want {
        bail!("{} is not an {} ELF executable (e_machine {machine}): pass the kstall built for {}", binary.display(), arch.name(), arch.name());
    }
    Ok(())
}

/// Escapes help text for roff: backslashes, and lines that would read as requests.
fn roff_text(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') { format!("\\&{l}") } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The subcommands `kstall --help` lists (`help` aside).
fn subcommands(top_help: &str) -> Vec<String> {
    top_help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// `kstall.1.gz` for the binary at `root/usr/bin/kstall`: help2man over its `--help` and
/// `--version`, with every subcommand's `--help` in a SUBCOMMANDS section and a FILES section
/// naming what the packages install. A foreign-architecture binary runs under qemu-user.
fn man_page(root: &Path, arch: Arch, work: &Path, unit_dir: &str) -> Result<PathBuf> {
    let binary = root.join("usr/bin/kstall");
    // help2man runs a program by name; a wrapper named kstall keeps clap's usage lines saying
    // `kstall` (clap names the program after argv[0]).
    let wrapper_dir = work.join("help2man");
    let wrapper = wrapper_dir.join("kstall");
    let runner = runner(arch, &binary);
    let exec: Vec<String> = std::iter::once(runner.get_program()).chain(runner.get_args()).map(|a| format!("'{}'", a.to_string_lossy())).collect();
    write_file(&wrapper, &format!("#!/bin/sh\nexec {} \"$@\"\n", exec.join(" ")), 0o755)?;
    let top = output(Command::new(&wrapper).arg("--help")).with_context(|| format!("{} --help failed", binary.display()))?;
    let mut include = String::from("[SUBCOMMANDS]\n");
    for sub in subcommands(&top) {
        let help = output(Command::new(&wrapper).args([sub.as_str(), "--help"]))?;
        include.push_str(&format!(".SS \"kstall {sub}\"\n.nf\n{}\n.fi\n", roff_text(help.trim_end())));
    }
    include.push_str(&format!(
        "[FILES]\n.TP\n.I /{unit_dir}/{UNIT}\nsystemd unit running \\fBkstall export\\fR on 127.0.0.1:9464 (not enabled: \\fBsystemctl enable \\-\\-now kstall-export\\fR)\n.TP\n.I /{DASHBOARD}\nGrafana dashboard over the exported metrics\n[SEE ALSO]\n{HOMEPAGE}\n"
    ));
    let include_file = work.join("kstall.h2m");
    std::fs::write(&include_file, include)?;
    let page = work.join("kstall.1");
    run(Command::new("help2man")
        .args(["--no-info", "--section=1", "--name", &meta()?.summary, "--include"])
        .arg(&include_file)
        .arg("--output")
        .arg(&page)
        .arg(&wrapper))
    .context("help2man failed (cargo xtask setup installs it)")?;
    // -n: no name or time stamp in the gzip header, so the same page gives the same bytes.
    run(Command::new("gzip").args(["-9nf"]).arg(&page))?;
    Ok(page.with_extension("1.gz"))
}

/// Debian's copyright file (machine-readable format), naming the license texts shipped beside it.
fn debian_copyright(license: &str) -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {NAME}\nSource: {HOMEPAGE}\n\nFiles: *\nCopyright: the kstall developers\nLicense: {license}\n See /usr/share/doc/kstall/LICENSE-APACHE and /usr/share/doc/kstall/LICENSE-MIT;\n on Debian also /usr/share/common-licenses/Apache-2.0.\n"
    )
}

/// Installs kstall's files under `root` as both packages lay them out (the unit in `unit_dir`),
/// returning the package-relative paths of the files installed.
fn stage(kstall: &Path, arch: Arch, root: &Path, work: &Path, unit_dir: &str) -> Result<Vec<String>> {
    check_elf(kstall, arch)?;
    let ws = workspace_root();
    let mut files = Vec::new();
    let mut add = |from: &Path, rel: &str, mode: u32| -> Result<()> {
        install_file(from, &root.join(rel), mode)?;
        files.push(format!("/{rel}"));
        Ok(())
    };
    add(kstall, "usr/bin/kstall", 0o755)?;
    add(&ws.join("deploy").join(UNIT), &format!("{unit_dir}/{UNIT}"), 0o644)?;
    add(&ws.join("deploy/grafana-dashboard.json"), DASHBOARD, 0o644)?;
    add(&ws.join("README.md"), "usr/share/doc/kstall/README.md", 0o644)?;
    for license in LICENSE_FILES {
        add(&ws.join(license), &format!("usr/share/doc/kstall/{license}"), 0o644)?;
    }
    let page = man_page(root, arch, work, unit_dir)?;
    add(&page, MAN_PAGE, 0o644)?;
    Ok(files)
}

/// After install and removal the unit is (re)read when systemd runs; nothing is enabled or
/// started: tracing a broker is the operator's decision.
const DAEMON_RELOAD: &str = "if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi";

/// Builds `kstall_<version>-1_<arch>.deb` in `out_dir` from a static kstall for `arch`.
pub fn build_deb(kstall: &Path, arch: Arch, out_dir: &Path) -> Result<PathBuf> {
    let m = meta()?;
    let work = scratch(&format!("deb-{}", arch.deb_arch()))?;
    let root = work.join("root");
    // Debian 12 packages still ship units in /lib (usrmerge makes it /usr/lib too).
    stage(kstall, arch, &root, &work, "lib/systemd/system")?;
    write_file(&root.join("usr/share/doc/kstall/copyright"), &debian_copyright(&m.license), 0o644)?;
    let installed_kib: u64 = walk(&root)?.iter().map(|p| p.metadata().map_or(0, |m| m.len().div_ceil(1024))).sum();
    let parts = long_description()?;
    // The paragraph wrapped, then the items as a list (lines with two leading spaces are shown
    // verbatim by dpkg and apt).
    let mut description = textwrap_deb(&parts[0], " ", " ");
    for item in &parts[1..] {
        description.push('\n');
        description.push_str(&textwrap_deb(item, "  - ", "    "));
    }
    write_file(
        &root.join("DEBIAN/control"),
        &format!(
            "Package: {NAME}\nVersion: {}-1\nArchitecture: {}\nMaintainer: {MAINTAINER}\nInstalled-Size: {installed_kib}\nSection: admin\nPriority: optional\nHomepage: {HOMEPAGE}\nDescription: {}\n{description}\n",
            m.version,
            arch.deb_arch(),
            m.summary
        ),
        0o644,
    )?;
    for script in ["postinst", "postrm"] {
        write_file(&root.join("DEBIAN").join(script), &format!("#!/bin/sh\nset -e\n{DAEMON_RELOAD}\n"), 0o755)?;
    }
    std::fs::create_dir_all(out_dir)?;
    let deb = out_dir.join(format!("{NAME}_{}-1_{}.deb", m.version, arch.deb_arch()));
    // xz: what every dpkg since Debian 7 / Ubuntu 12.04 reads (zstd only since Debian 12).
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&root).arg(&deb).stdout(Stdio::null()))?;
    std::fs::remove_dir_all(&work)?;
    Ok(deb)
}

/// Text wrapped for a deb long description (lines under 80 columns): the first line starts
/// with `first`, the others with `rest` (every line must start with a space).
fn textwrap_deb(text: &str, first: &str, rest: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let indent = if lines.is_empty() { first } else { rest };
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 79 {
            lines.push(format!("{indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{}{line}", if lines.is_empty() { first } else { rest }));
    }
    lines.join("\n")
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
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

/// What the image's entrypoint runs without arguments: the exporter on every address of the
/// pod's network namespace (the DaemonSet's Service scrapes it there).
const IMAGE_CMD: [&str; 3] = ["export", "--listen", "0.0.0.0:9464"];

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

// ---------------------------------------------------------------------------------------------
// Tests

/// The files every package must hold (beyond directories), as `dpkg -L` / `rpm -qlp` list them.
fn expected_files(unit_dir: &str) -> Vec<String> {
    let mut files = vec![
        "/usr/bin/kstall".to_string(),
        format!("/{unit_dir}/{UNIT}"),
        format!("/{DASHBOARD}"),
        format!("/{MAN_PAGE}"),
        "/usr/share/doc/kstall/README.md".to_string(),
    ];
    files.extend(LICENSE_FILES.iter().map(|l| format!("/usr/share/doc/kstall/{l}")));
    files
}

fn missing_files(listed: &str, expected: &[String]) -> Vec<String> {
    let listed: Vec<&str> = listed.lines().map(str::trim).collect();
    expected.iter().filter(|f| !listed.contains(&f.as_str())).cloned().collect()
}

/// A clean Debian 12 root (`debootstrap --variant=minbase bookworm`) for this machine's
/// architecture, cached as a tarball in kstall's cache: made once (a few minutes, from
/// deb.debian.org), unpacked fresh for every test (seconds).
pub fn debian_root_tarball() -> Result<PathBuf> {
    let tarball = cache_dir().join(format!("debian-bookworm-minbase-{}.tar.zst", Arch::host().deb_arch()));
    if tarball.is_file() {
        return Ok(tarball);
    }
    let started = Instant::now();
    std::fs::create_dir_all(cache_dir())?;
    let root = cache_dir().join(format!("debootstrap-{}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    eprintln!("package: debootstrap --variant=minbase bookworm into {} (once; cached)", root.display());
    // In a private mount namespace: whatever debootstrap mounts in the root (proc, sys) is
    // gone when it exits, even if it fails half-way.
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "debootstrap", "--variant=minbase", "bookworm"])
        .arg(&root)
        .arg("http://deb.debian.org/debian")
        .stdout(Stdio::null()))
    .context("debootstrap failed (cargo xtask setup installs it; it needs deb.debian.org)")?;
    let partial = tarball.with_extension("partial");
    run(Command::new("tar").arg("-C").arg(&root).args(["--zstd", "-cf"]).arg(&partial).arg("."))?;
    std::fs::rename(&partial, &tarball)?;
    std::fs::remove_dir_all(&root)?;
    eprintln!("package: Debian root cached in {} ({:.0} MiB) in {:.0}s", tarball.display(), size_mib(&tarball), started.elapsed().as_secs_f64());
    Ok(tarball)
}

/// Runs `args` chrooted into `root` with /proc, /sys and tracefs mounted inside, in a private
/// mount namespace so the mounts end with the command whatever happens.
fn in_chroot(root: &Path, args: &[&str]) -> Result<std::process::Output> {
    let script = r#"set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tracefs nodev "$root/sys/kernel/tracing"
exec chroot "$root" "$@""#;
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env_remove("RUST_LOG")
        .output()
        .with_context(|| format!("cannot chroot into {}", root.display()))
}

fn in_chroot_ok(root: &Path, args: &[&str]) -> Result<String> {
    let out = in_chroot(root, args)?;
    if !out.status.success() {
        bail!("`{}` in the Debian root failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when something is mounted at or under `dir` (what must never be deleted recursively).
fn mounts_under(dir: &Path) -> bool {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == dir || m.starts_with(&format!("{dir}/")))
}

/// The .deb for this machine's architecture in a clean Debian 12 root: `dpkg -i` installs it,
/// `dpkg -L kstall` lists every expected file, `dpkg -s` the version and architecture, the man
/// page opens, `kstall --version` and `kstall check` run from /usr/bin (check loads and attaches
/// every probe: it needs root and BPF), and `systemd-analyze verify` accepts the installed unit
/// against the installed binary. Then `dpkg -r` removes every file again.
pub fn test_deb(deb: &Path) -> Result<()> {
    let arch = Arch::host();
    let m = meta()?;
    let tarball = debian_root_tarball()?;
    let started = Instant::now();
    let root = scratch("deb-root")?;
    let result = (|| -> Result<()> {
        run(Command::new("tar").arg("-C").arg(&root).args(["--zstd", "-xf"]).arg(&tarball))?;
        let unpacked_s = started.elapsed().as_secs_f64();
        install_file(deb, &root.join("tmp/kstall.deb"), 0o644)?;
        in_chroot_ok(&root, &["dpkg", "-i", "/tmp/kstall.deb"])?;
        let listed = in_chroot_ok(&root, &["dpkg", "-L", NAME])?;
        let missing = missing_files(&listed, &expected_files("lib/systemd/system"));
        if !missing.is_empty() {
            bail!("dpkg -L kstall lacks {missing:?}; it lists:\n{listed}");
        }
        let status = in_chroot_ok(&root, &["dpkg-query", "-W", "-f=${Version} ${Architecture} ${Status}", NAME])?;
        let want = format!("{}-1 {} install ok installed", m.version, arch.deb_arch());
        if status != want {
            bail!("dpkg-query says {status:?}, not {want:?}");
        }
        let version = in_chroot_ok(&root, &["/usr/bin/kstall", "--version"])?;
        if !version.contains(&version_of(&m)) {
            bail!("/usr/bin/kstall --version says {version:?}, not version {}", m.version);
        }
        // The man page is gzipped roff whose title names kstall (minbase has no man-db).
        let page = output(Command::new("gzip").arg("-dc").arg(root.join(MAN_PAGE)))?;
        if !page.contains(".TH KSTALL \"1\"") || !page.contains("kstall export") {
            bail!("the installed man page is not kstall's (no .TH KSTALL 1 or no export subcommand)");
        }
        let check = in_chroot(&root, &["/usr/bin/kstall", "check"])?;
        if !check.status.success() {
            bail!(
                "kstall check from /usr/bin in the Debian root failed ({}): {}{}",
                check.status,
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        // The installed unit, verified on this host (`--root` would need systemd in the root,
        // which minbase lacks) with ExecStart= pointing into the root: it must name the binary
        // the package installed, or the rewrite changes nothing and verify finds no /usr/bin/kstall.
        let unit_text = std::fs::read_to_string(root.join("lib/systemd/system").join(UNIT))?;
        let installed = root.join("usr/bin/kstall");
        if !unit_text.contains("ExecStart=/usr/bin/kstall ") {
            bail!("the installed {UNIT} does not run /usr/bin/kstall");
        }
        let unit = root.join("tmp").join(UNIT);
        std::fs::write(&unit, unit_text.replace("ExecStart=/usr/bin/kstall ", &format!("ExecStart={} ", installed.display())))?;
        let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output();
        match verify {
            Ok(v) if v.status.success() && v.stderr.is_empty() => {}
            Ok(v) => bail!("systemd-analyze verify {UNIT} in the Debian root: {}", String::from_utf8_lossy(&v.stderr).trim()),
            Err(e) => eprintln!("package: systemd-analyze not available ({e}): the unit is not verified"),
        }
        in_chroot_ok(&root, &["dpkg", "-r", NAME])?;
        let left: Vec<String> = expected_files("lib/systemd/system").into_iter().filter(|f| root.join(&f[1..]).exists()).collect();
        if !left.is_empty() {
            bail!("dpkg -r kstall left {left:?}");
        }
        eprintln!(
            "package: {} installs, checks and removes in a clean Debian 12 root ({unpacked_s:.1}s to unpack it, {:.1}s in all)",
            deb.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    if mounts_under(&root) {
        bail!("{} still has mounts; not removing it: {result:?}", root.display());
    }
    std::fs::remove_dir_all(&root)?;
    result
}

/// What `kstall --version` must contain: the Cargo version (the package version may spell a
/// pre-release with `~`).
fn version_of(m: &Meta) -> String {
    m.version.replacen('~', "-", 1)
}

/// The .rpm for `arch`: `rpm -qip` names kstall, the version and the architecture, `rpm -qlp`
/// lists every expected file, it needs nothing (a static binary), and `rpm -i` into an empty
/// root installs a kstall that answers `--version` (under qemu-user for a foreign architecture).
pub fn test_rpm(rpm: &Path, arch: Arch) -> Result<()> {
    let m = meta()?;
    let info = output(Command::new("rpm").arg("-qip").arg(rpm))?;
    let field = |name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim_start().strip_prefix(':')).map(|v| v.trim().to_string())).unwrap_or_default()
    };
    for (name, want) in [("Name", NAME.to_string()), ("Version", m.version.clone()), ("Release", "1".into()), ("Architecture", arch.rpm_arch().into()), ("License", m.license.clone())] {
        if field(name) != want {
            bail!("rpm -qip {}: {name} is {:?}, not {want:?}\n{info}", rpm.display(), field(name));
        }
    }
    let listed = output(Command::new("rpm").arg("-qlp").arg(rpm))?;
    let missing = missing_files(&listed, &expected_files("usr/lib/systemd/system"));
    if !missing.is_empty() {
        bail!("rpm -qlp {} lacks {missing:?}; it lists:\n{listed}", rpm.display());
    }
    let requires = output(Command::new("rpm").args(["-qp", "--requires"]).arg(rpm))?;
    if let Some(other) = requires.lines().find(|r| !r.starts_with("rpmlib(") && !r.starts_with("/bin/sh")) {
        bail!("the static kstall's rpm requires {other:?}");
    }
    let root = scratch(&format!("rpm-root-{}", arch.rpm_arch()))?;
    let result = (|| -> Result<()> {
        run(Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--initdb"]))?;
        // --nodeps: the empty root has no /bin/sh for the scriptlets' requirement; --noscripts
        // likewise. --ignorearch: rpm on this machine would refuse another architecture.
        run(Command::new("rpm").arg("--root").arg(&root).args(["-i", "--nodeps", "--noscripts", "--ignorearch"]).arg(rpm))?;
        let version = output(runner(arch, &root.join("usr/bin/kstall")).arg("--version"))?;
        if !version.contains(&version_of(&m)) {
            bail!("the kstall the rpm installed says {version:?}, not version {}", m.version);
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&root)?;
    result.with_context(|| format!("installing {}", rpm.display()))
}

/// The OCI image for `arch`: its index, manifest and config say `linux/<arch>`, the entrypoint
/// is kstall and its one layer holds nothing but `usr/bin/kstall` (no shell); for this
/// machine's architecture it then runs under podman (see [`run_image`]).
pub fn test_image(image: &Path, arch: Arch) -> Result<()> {
    let read = |member: &str| -> Result<Vec<u8>> {
        let out = Command::new("tar").arg("-xOf").arg(image).arg(member).output()?;
        if !out.status.success() {
            bail!("{} has no {member}", image.display());
        }
        Ok(out.stdout)
    };
    let blob = |digest: &Value| -> Result<Vec<u8>> {
        let digest = digest.as_str().context("digest")?;
        read(&format!("blobs/{}", digest.replacen(':', "/", 1)))
    };
    let index: Value = serde_json::from_slice(&read("index.json")?)?;
    let manifest: Value = serde_json::from_slice(&blob(&index["manifests"][0]["digest"])?)?;
    let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])?)?;
    let what = format!("{} config", image.display());
    if config["architecture"] != arch.oci_arch() || config["os"] != "linux" {
        bail!("{what}: architecture {} os {}, not {} linux", config["architecture"], config["os"], arch.oci_arch());
    }
    if config["config"]["Entrypoint"] != serde_json::json!(["/usr/bin/kstall"]) || config["config"]["Cmd"] != serde_json::json!(IMAGE_CMD) {
        bail!("{what}: entrypoint {} cmd {}", config["config"]["Entrypoint"], config["config"]["Cmd"]);
    }
    let layers = manifest["layers"].as_array().context("layers")?;
    if layers.len() != 1 {
        bail!("{}: {} layers, not the one with kstall", image.display(), layers.len());
    }
    let layer = image.with_extension("layer");
    std::fs::write(&layer, blob(&layers[0]["digest"])?)?;
    let listed = output(Command::new("tar").arg("-tvf").arg(&layer));
    std::fs::remove_file(&layer)?;
    let listed = listed?;
    let files: Vec<&str> = listed.lines().filter(|l| !l.starts_with('d')).filter_map(|l| l.split_whitespace().last()).collect();
    if files != ["usr/bin/kstall"] {
        bail!("{}: the layer holds {files:?}, not just usr/bin/kstall", image.display());
    }
    if arch == Arch::host() { run_image(image) } else { Ok(()) }
}

/// An unused loopback port.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The body of `GET /metrics`, or None while nothing answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then(|| response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The value of an unlabelled metric in a scrape (`kstall_target_up 1` or `1.0`).
fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Flags that make podman run on these machines (a VM without systemd as init): cgroupfs, and
/// events to a file instead of journald; runc, because crun refuses the hybrid cgroup layout
/// here (v1 controllers, plus hugetlb on the v2 mount: "crun: cgroups in hybrid mode not
/// supported, drop all controllers from cgroupv2").
const PODMAN: [&str; 3] = ["--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime=runc"];

/// Resource limits for `podman run`: podman's defaults (nofile 1048576, nproc 4194304) exceed
/// the hard limits of a process without CAP_SYS_RESOURCE, as on these machines, where the
/// runtime then fails with "error setting rlimit type 6: operation not permitted". Open files:
/// this process's hard limit; processes: a fixed number well above what kstall starts (its
/// threads, jcmd's JVM), which runc can set (it could not set the hard limit itself here).
fn podman_ulimits() -> [String; 4] {
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    let nofile = nofile.rlim_max.min(1 << 20);
    ["--ulimit".into(), format!("nofile={nofile}:{nofile}"), "--ulimit".into(), "nproc=4096:4096".into()]
}

/// Runs the image as the DaemonSet does (`--privileged --pid=host`, tracefs mounted from the
/// host) against the stand-in broker (`xtask stand-in`, a process with `kafka.Kafka` in its
/// arguments; a JVM would take seconds to start) on the host, and scrapes its `/metrics` from the
/// host until `kstall_target_up 1` and the stand-in's pid; SIGTERM (`podman stop`) then ends it
/// with status 0. Must be called from the xtask binary (it starts itself as the stand-in).
pub fn run_image(image: &Path) -> Result<()> {
    let started = Instant::now();
    let data = scratch("image-stand-in")?;
    let mut broker = Command::new(std::env::current_exe()?)
        .args(["stand-in", "kafka.Kafka"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the stand-in broker")?;
    let mut ready = String::new();
    BufReader::new(broker.stdout.take().context("stdout")?).read_line(&mut ready)?;
    let pid = broker.id();
    let port = free_port()?;
    let name = format!("kstall-image-test-{}", std::process::id());
    let result = (|| -> Result<()> {
        if ready.trim() != "ready" {
            bail!("the stand-in broker did not start");
        }
        let mut podman = Command::new("podman")
            .args(PODMAN)
            .args(["run", "--rm", "--name", &name, "--privileged", "--pid=host", "--network=host"])
            .args(podman_ulimits())
            .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing"])
            .arg(format!("oci-archive:{}", image.display()))
            .args(["export", "--pid", &pid.to_string(), "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run podman (cargo xtask setup installs it)")?;
        let stderr = podman.stderr.take().context("stderr")?;
        let log = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        // Loading the image (from the archive into podman's storage) and attaching take seconds.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = None;
        let up = loop {
            if let Some(status) = podman.try_wait()? {
                bail!("podman run ended ({status}) before serving metrics: {}", log.join().unwrap_or_default().trim());
            }
            last = scrape(port).or(last);
            let up = last.as_deref().is_some_and(|m| metric(m, "kstall_target_up") == Some(1.0) && metric(m, "kstall_target_pid") == Some(pid as f64));
            if up || Instant::now() > deadline {
                break up;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let up_s = started.elapsed().as_secs_f64();
        let _ = Command::new("podman").args(PODMAN).args(["stop", "--time", "15", &name]).stdout(Stdio::null()).status();
        let status = podman.wait()?;
        let log = log.join().unwrap_or_default();
        if !up {
            let lines: Vec<&str> = last.as_deref().unwrap_or("(no answer)").lines().filter(|l| l.starts_with("kstall_target")).collect();
            bail!("the image never served kstall_target_up 1 for pid {pid} on 127.0.0.1:{port} (last: {lines:?}); its log:\n{}", log.trim());
        }
        if !status.success() {
            bail!("the container's kstall ended with {status} on SIGTERM:\n{}", log.trim());
        }
        eprintln!("package: {} under podman served kstall_target_up 1 for the stand-in after {up_s:.1}s", image.display());
        Ok(())
    })();
    drop(broker.stdin.take());
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&data);
    // podman kept the image it loaded from the archive: remove it (by the archive's name).
    let _ = Command::new("podman").args(PODMAN).args(["rmi", "--force", &format!("{NAME}:{}", version())]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    result
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_come_from_the_help() {
        let help = "Usage: kstall <COMMAND>\n\nCommands:\n  watch   Trace\n  export  Serve\n  help    Print\n\nOptions:\n  -h, --help  Print help\n";
        assert_eq!(subcommands(help), ["watch", "export"]);
    }

    #[test]
    fn roff_escapes_requests_and_backslashes() {
        assert_eq!(roff_text(".hidden\n'quote\na\\b"), "\\&.hidden\n\\&'quote\na\\eb");
    }

    #[test]
    fn metrics_are_read_in_both_spellings() {
        let scrape = "# TYPE kstall_target_up gauge\nkstall_target_up 1.0\nkstall_target_pid 42\nkstall_target_pid_other 7\n";
        assert_eq!(metric(scrape, "kstall_target_up"), Some(1.0));
        assert_eq!(metric(scrape, "kstall_target_pid"), Some(42.0));
        assert_eq!(metric(scrape, "kstall_attaches_total"), None);
    }

    #[test]
    fn prerelease_versions_sort_before_the_release() {
        assert_eq!(package_version("0.2.0-rc.1"), "0.2.0~rc.1");
        assert_eq!(package_version("0.1.0"), "0.1.0");
    }

    #[test]
    fn deb_description_lines_are_indented_and_short() {
        let text = textwrap_deb(&"word ".repeat(60), "  - ", "    ");
        assert!(text.starts_with("  - word") && text.lines().skip(1).all(|l| l.starts_with("    w") && l.len() < 80), "{text}");
        assert_eq!(text.split_whitespace().filter(|w| *w == "word").count(), 60);
    }

    #[test]
    fn a_binary_of_another_architecture_is_refused() {
        let dir = std::env::temp_dir().join(format!("kstall-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("kstall");
        let mut header = vec![0x7f, b'E', b'L', b'F'];
        header.resize(18, 0);
        header.extend(62u16.to_le_bytes());
        std::fs::write(&fake, &header).unwrap();
        assert!(check_elf(&fake, Arch::X86_64).is_ok());
        let err = check_elf(&fake, Arch::Aarch64).unwrap_err().to_string();
        assert!(err.contains("not an aarch64 ELF executable"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
