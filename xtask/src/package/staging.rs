//! What every package holds, whatever its format: `/usr/bin/kstall` (checked to be an ELF of the
//! package's architecture), the systemd unit, the Grafana dashboard, a man page made by
//! help2man from the binary's own help, README and license texts; staged under a root as the
//! package lays them out. And the metadata the formats share: name, version (spelt so that a
//! pre-release sorts first), summary, license, long description.
use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use kstall_testbed::{output, run, workspace_root};

use super::{Arch, version};

/// Runs a binary of `arch` here: directly, or through Debian's qemu-user-static.
pub(super) fn runner(arch: Arch, binary: &Path) -> Command {
    if arch == Arch::host() {
        Command::new(binary)
    } else {
        let mut cmd = Command::new(format!("qemu-{}-static", arch.name()));
        cmd.arg(binary);
        cmd
    }
}

pub const NAME: &str = "kstall";
pub(super) const HOMEPAGE: &str = "https://github.com/kstall/kstall";
pub(super) const MAINTAINER: &str = "kstall developers <kstall@users.noreply.github.com>";
pub(super) const UNIT: &str = "kstall-export.service";
/// Where the man page says the unit and dashboard are, and what the tests look for.
pub(super) const DASHBOARD: &str = "usr/share/kstall/grafana-dashboard.json";
pub(super) const MAN_PAGE: &str = "usr/share/man/man1/kstall.1.gz";
pub(super) const LICENSE_FILES: [&str; 2] = ["LICENSE-APACHE", "LICENSE-MIT"];

/// `key = "value"` in `[section]` of a Cargo manifest (the few fields packaging needs; xtask
/// has no TOML parser and needs none for these).
pub(super) fn manifest_field(manifest: &Path, section: &str, key: &str) -> Result<String> {
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
pub(super) fn package_version(version: &str) -> String {
    version.replacen('-', "~", 1)
}

pub(super) struct Meta {
    pub(super) version: String,
    pub(super) summary: String,
    pub(super) license: String,
}

pub(super) fn meta() -> Result<Meta> {
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
pub(super) fn long_description() -> Result<Vec<String>> {
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

/// A fresh scratch directory (emptied if a failed run left it).
pub(super) fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kstall-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(super) fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(to.parent().expect("absolute"))?;
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub(super) fn write_file(to: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::create_dir_all(to.parent().expect("absolute"))?;
    std::fs::write(to, text)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Fails unless `binary` is an ELF executable for `arch` (e_machine), so an x86_64 binary is
/// never packaged as arm64.
pub(super) fn check_elf(binary: &Path, arch: Arch) -> Result<()> {
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
pub(super) fn roff_text(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') { format!("\\&{l}") } else { l }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The subcommands `kstall --help` lists (`help` aside).
pub(super) fn subcommands(top_help: &str) -> Vec<String> {
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
pub(super) fn man_page(root: &Path, arch: Arch, work: &Path, unit_dir: &str) -> Result<PathBuf> {
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

/// Installs kstall's files under `root` as both packages lay them out (the unit in `unit_dir`),
/// returning the package-relative paths of the files installed.
pub(super) fn stage(kstall: &Path, arch: Arch, root: &Path, work: &Path, unit_dir: &str) -> Result<Vec<String>> {
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
pub(super) const DAEMON_RELOAD: &str = "if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi";

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
    fn prerelease_versions_sort_before_the_release() {
        assert_eq!(package_version("0.2.0-rc.1"), "0.2.0~rc.1");
        assert_eq!(package_version("0.1.0"), "0.1.0");
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
