//! `cargo xtask setup`: everything kstall needs to build and test, installed idempotently.
//! A second run only checks (seconds). Building BPF from Rust needs a compiler that ships its
//! own library source (`-Z build-std=core`) and a bpf-linker built against the same LLVM
//! major: Debian's rustc-web provides the first, linked into rustup as `debian-bpf`.
use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use kstall_testbed::{kafka, kafka_maven, output, run};

pub const BPF_TOOLCHAIN: &str = "debian-bpf";
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const VIRTME_NG_VERSION: &str = "1.42";

/// Commands the tests and demo use, and the Debian package that provides each.
const TOOLS: [(&str, &str); 11] = [
    ("kcat", "kcat"),
    // export_web: a test certificate (openssl) and scrapes over TLS with basic auth (curl).
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("strace", "strace"),
    ("tmux", "tmux"),
    ("setpriv", "util-linux"),
    ("java", "openjdk-17-jdk-headless"),
    ("jcmd", "openjdk-17-jdk-headless"),
    ("keytool", "openjdk-17-jdk-headless"),
    ("npm", "npm"),
    ("mvn", "maven"),
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("install ok installed"))
}

fn on_path(command: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {command}")]).output().is_ok_and(|o| o.status.success())
}

struct Apt {
    updated: bool,
}

impl Apt {
    fn ensure(&mut self, packages: &[String]) -> Result<()> {
        let missing: Vec<&String> = packages.iter().filter(|p| !installed(p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        eprintln!("setup: apt-get install {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
        if !self.updated {
            run(Command::new("apt-get").args(["update", "-qq"]))
                .context("apt-get update failed (setup needs root and Debian's package archive)")?;
            self.updated = true;
        }
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .with_context(|| format!("cannot install {missing:?} with apt-get"))
    }
}

/// LLVM major version of Debian's rustc (bpf-linker must be built against the same one).
fn debian_llvm_major() -> Result<u32> {
    let info = output(Command::new("/usr/bin/rustc").arg("-vV"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("cannot read the LLVM version from /usr/bin/rustc -vV")
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin").join(name)
}

pub fn setup() -> Result<()> {
    let started = Instant::now();
    let mut apt = Apt { updated: false };
    apt.ensure(&["rustc-web", "cargo-web", "rust-web-src"].map(String::from))?;
    let llvm = debian_llvm_major()?;
    let mut packages = vec![format!("llvm-{llvm}-dev")];
    packages.extend(TOOLS.iter().filter(|(cmd, _)| !on_path(cmd)).map(|(_, pkg)| pkg.to_string()));
    // python3-fusepy serves the slow disk of the stall test and the demo; chromium renders
    // and python3-jsonschema validates the reports in that test; prometheus (and promtool)
    // scrapes the exporter, systemd-analyze verifies its unit; bpftool checks that a killed
    // kstall leaves no program behind; bpftrace is what the overhead bench compares with;
    // g++ builds libFuzzer for the fuzz targets. python3-confluent-kafka (librdkafka) is the
    // cluster test's group consumer: kafka-python 2.0.2 speaks Metadata v1 and JoinGroup v1,
    // which Kafka 4.x refuses (KIP-896).
    packages.extend(
        ["python3-kafka", "python3-confluent-kafka", "python3-fusepy", "python3-jsonschema", "chromium", "fonts-liberation", "prometheus", "systemd", "bpftool", "bpftrace", "g++"]
            .map(String::from),
    );
    // Older kernels under QEMU (guest.rs): vng boots them and needs kmod (depmod),
    // busybox-static (its initramfs) and file (the kernel version); xz-utils and zstd unpack
    // vmlinux; e2fsprogs makes disk images; debian-archive-keyring checks the kernel debs;
    // python3-pip installs virtme-ng, which Debian does not package before trixie.
    packages.extend(
        ["qemu-system-x86", "kmod", "busybox-static", "file", "xz-utils", "zstd", "e2fsprogs", "debian-archive-keyring", "python3-pip"]
            .map(String::from),
    );
    // `cargo xtask dist` (dist.rs): static binaries need glibc's libc.a (libc6-dev) for x86_64,
    // the arm64 cross compiler and its libc.a for aarch64 (and for the C that crates compile
    // with cc), qemu-user-static to run the arm64 one here; `file` (above) checks they are static.
    packages.extend(["libc6-dev", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user-static"].map(String::from));
    // Its packages (package.rs): dpkg-deb (dpkg) and rpmbuild (rpm) build the .deb and .rpm,
    // help2man their man page, buildah the OCI image; the tests install the .deb into a
    // debootstrap root and run the image with podman, on runc (crun refuses hybrid cgroups).
    packages.extend(["rpm", "help2man", "buildah", "podman", "runc", "debootstrap"].map(String::from));
    // The arm64 guest (guest_arm64.rs): qemu-system-aarch64 boots it; its root is made with
    // debootstrap (above) and qemu-user-static (above); debugfs (e2fsprogs) reads its results.
    packages.push("qemu-system-arm".into());
    apt.ensure(&packages)?;

    let linker = cargo_bin("bpf-linker");
    let have_linker = output(Command::new(&linker).arg("--version"))
        .is_ok_and(|v| v.trim() == format!("bpf-linker {BPF_LINKER_VERSION}"));
    if !have_linker {
        eprintln!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm}");
        run(Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--no-default-features"])
            .args(["--features", &format!("llvm-{llvm}")])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}")))
        .context("cannot build bpf-linker")?;
    }
    // cargo-fuzz runs the framing parser's fuzz targets (tracer-ebpf/common/fuzz) in `cargo xtask test`.
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_err() {
        eprintln!("setup: cargo install cargo-fuzz {CARGO_FUZZ_VERSION}");
        run(Command::new("cargo").args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"]))
            .context("cannot build cargo-fuzz")?;
    }

    let vng = || output(Command::new("vng").arg("--version")).is_ok_and(|v| v.trim() == format!("virtme-ng {VIRTME_NG_VERSION}"));
    if !vng() {
        eprintln!("setup: pip install virtme-ng=={VIRTME_NG_VERSION}");
        // Debian's own python3 refuses a plain pip install (PEP 668); a pyenv one does not.
        let pip = |extra: &[&str]| {
            run(Command::new("python3").args(["-m", "pip", "install", "-q"]).args(extra).arg(format!("virtme-ng=={VIRTME_NG_VERSION}")))
        };
        pip(&[]).or_else(|_| pip(&["--break-system-packages"])).context("cannot pip install virtme-ng")?;
        if !vng() {
            bail!("virtme-ng {VIRTME_NG_VERSION} is installed but `vng --version` does not show it (is its bin dir on PATH?)");
        }
    }

    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to run the BPF build with Debian's rustc")?;
    if !toolchains.lines().any(|l| l.split_whitespace().next() == Some(BPF_TOOLCHAIN)) {
        run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))?;
    }
    if !PathBuf::from("/usr/lib/rustlib/src/rust/library/core").is_dir() {
        bail!("rust-web-src did not install the library source under /usr/lib/rustlib/src");
    }
    // The brokers the demo and the tests run (Kafka 4.x and 3.9 from Maven Central, 0.9 from
    // npm) and the Java client built against 4.x's kafka-clients: fetched once, then offline.
    for version in kafka::VERSIONS {
        version.ensure_cached()?;
    }
    if let kafka::KafkaVersion::Kraft(v) = kafka::KAFKA_4 {
        kafka_maven::java_client(v)?;
    }
    let versions: Vec<&str> = kafka::VERSIONS.iter().map(|v| v.as_str()).collect();
    eprintln!(
        "setup: ok in {:.1}s (Debian rustc with LLVM {llvm}, bpf-linker {BPF_LINKER_VERSION}, Kafka {} cached)",
        started.elapsed().as_secs_f64(),
        versions.join(", ")
    );
    Ok(())
}
