//! The `.deb`: the staged root plus a `DEBIAN/control` (description wrapped as dpkg wants it:
//! lines under 80 columns, each starting with a space) and Debian's machine-readable
//! copyright, built with `dpkg-deb` (xz, which every dpkg since Debian 7 reads).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Result;

use kstall_testbed::run;

use super::{Arch, staging::*};

/// Debian's copyright file (machine-readable format), naming the license texts shipped beside it.
pub(super) fn debian_copyright(license: &str) -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {NAME}\nSource: {HOMEPAGE}\n\nFiles: *\nCopyright: the kstall developers\nLicense: {license}\n See /usr/share/doc/kstall/LICENSE-APACHE and /usr/share/doc/kstall/LICENSE-MIT;\n on Debian also /usr/share/common-licenses/Apache-2.0.\n"
    )
}

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
pub(super) fn textwrap_deb(text: &str, first: &str, rest: &str) -> String {
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

pub(super) fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_description_lines_are_indented_and_short() {
        let text = textwrap_deb(&"word ".repeat(60), "  - ", "    ");
        assert!(text.starts_with("  - word") && text.lines().skip(1).all(|l| l.starts_with("    w") && l.len() < 80), "{text}");
        assert_eq!(text.split_whitespace().filter(|w| *w == "word").count(), 60);
    }
}
