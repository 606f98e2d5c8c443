//! `cargo xtask dist`: static binaries of kstall for x86_64 and aarch64 (the eBPF object
//! embedded), named `kstall-<version>-<arch>-linux`, in `<target>/dist/` with SHA256SUMS.
//!
//! How they are built: rustup cannot download other targets' std on these machines, so std is
//! built from Debian's library source (rust-web-src) with `-Z build-std` on the `debian-bpf`
//! toolchain, as the BPF build already does. Both are `*-unknown-linux-gnu` with
//! `+crt-static`: glibc's libc.a linked in, so they start on any glibc or none (musl would need
//! the LLVM libunwind.a that only rustup ships, and Debian has no arm64 musl cross toolchain).
//! A static glibc cannot load NSS modules; kstall resolves no host or user names (`--listen`
//! takes an address), so that does not arise. aarch64 is linked, and any C the crates compile
//! with the cc crate (e.g. a TLS provider) is compiled, by Debian's gcc-aarch64-linux-gnu
//! against libc6-dev-arm64-cross; it runs here under qemu-user-static.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use kstall_testbed::{output, run, target_dir, workspace_root};

/// The toolchain whose library source builds std for the targets (setup.rs links it).
const TOOLCHAIN: &str = "+debian-bpf";

/// An architecture kstall ships for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The machine this runs on.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") { Arch::Aarch64 } else { Arch::X86_64 }
    }

    /// `uname -m`, and the architecture in artifact names (`kstall-0.1.0-aarch64-linux`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Rust's target triple the static binary is built for.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Debian's name (`Architecture:` of a .deb).
    pub fn deb_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// RPM's name (the arch of an .rpm).
    pub fn rpm_arch(self) -> &'static str {
        self.name()
    }

    /// The OCI image config's `architecture` (GOARCH spelling).
    pub fn oci_arch(self) -> &'static str {
        self.deb_arch()
    }

    /// Environment for cargo when building for this target: static linking, and for a cross
    /// target the linker, the C compiler and archiver cc-using crates need, and a runner.
    fn cargo_env(self) -> Vec<(String, String)> {
        let upper = self.triple().replace('-', "_").to_uppercase();
        let lower = self.triple().replace('-', "_");
        let mut env = vec![(format!("CARGO_TARGET_{upper}_RUSTFLAGS"), "-C target-feature=+crt-static".to_string())];
        if self != Arch::host() {
            let gnu = format!("{}-linux-gnu", self.name());
            env.extend([
                (format!("CARGO_TARGET_{upper}_LINKER"), format!("{gnu}-gcc")),
                (format!("CC_{lower}"), format!("{gnu}-gcc")),
                (format!("AR_{lower}"), format!("{gnu}-ar")),
                (format!("CXX_{lower}"), format!("{gnu}-g++")),
                (format!("CARGO_TARGET_{upper}_RUNNER"), format!("qemu-{}-static", self.name())),
            ]);
        }
        env
    }

    /// binutils' strip for this architecture's ELF files.
    fn strip(self) -> String {
        if self == Arch::host() { "strip".to_string() } else { format!("{}-linux-gnu-strip", self.name()) }
    }

    /// The cross tools this target needs that are missing, with the fix.
    fn check_tools(self) -> Result<()> {
        if self == Arch::host() {
            return Ok(());
        }
        let gcc = format!("{}-linux-gnu-gcc", self.name());
        if Command::new(&gcc).arg("--version").output().is_err() {
            bail!("{gcc} not found: the {} build needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (cargo xtask setup installs them)", self.name());
        }
        Ok(())
    }
}

/// A cargo command on the `debian-bpf` toolchain for `arch`, with std built from source.
fn cargo(arch: Arch, subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .arg(TOOLCHAIN)
        .args([subcommand, "-Z", "build-std=std,panic_abort", "--target", arch.triple()])
        // -Z flags on Debian's stable rustc.
        .env("RUSTC_BOOTSTRAP", "1")
        // `cargo xtask` runs under rustup's stable: its RUSTC would win over the toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .envs(arch.cargo_env());
    cmd
}

/// Builds `bin` of workspace package `package` as a static release binary for `arch` and
/// returns its path (`<target>/<triple>/release/<bin>`), after checking `file` calls it static.
pub fn build_static(package: &str, bin: &str, arch: Arch) -> Result<PathBuf> {
    arch.check_tools()?;
    run(cargo(arch, "build").args(["--release", "--package", package, "--bin", bin]))
        .with_context(|| format!("static build of {bin} for {} failed", arch.triple()))?;
    let path = target_dir().join(arch.triple()).join("release").join(bin);
    check_static(&path)?;
    Ok(path)
}

/// `file`'s description of `path`, failing unless it is a static executable for its arch.
pub fn check_static(path: &Path) -> Result<String> {
    let described = output(Command::new("file").arg("-b").arg(path))?;
    ensure!(
        described.contains("statically linked") || described.contains("static-pie linked"),
        "{} is not a static executable: {}",
        path.display(),
        described.trim()
    );
    Ok(described.trim().to_string())
}

/// What `dist` made, in [`Dist::dir`].
#[derive(Clone, Debug)]
pub struct Dist {
    pub dir: PathBuf,
    /// The workspace version in the names (`kstall-<version>-<arch>-linux`).
    pub version: String,
    /// The static kstall for each architecture, in `dir`.
    pub binaries: Vec<(Arch, PathBuf)>,
    /// The .deb, .rpm and OCI image of each architecture, in `dir`.
    pub packages: Vec<(Arch, Packages)>,
}

#[derive(Clone, Debug)]
pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
    pub image: PathBuf,
}

impl Dist {
    /// The static kstall for `arch`.
    pub fn binary(&self, arch: Arch) -> &Path {
        &self.binaries.iter().find(|(a, _)| *a == arch).expect("dist builds every Arch").1
    }

    /// The packages of `arch` (none before `dist` made them).
    pub fn packages(&self, arch: Arch) -> Option<&Packages> {
        self.packages.iter().find(|(a, _)| *a == arch).map(|(_, p)| p)
    }
}

/// `<target>/dist`, where `dist` writes.
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// The workspace version (kstall's and xtask's are the workspace's).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Builds the static kstall for every [`Arch`] and copies each to `dist_dir()` as
/// `kstall-<version>-<arch>-linux` (the folder is emptied first: stale packages go too).
pub fn build_binaries() -> Result<Dist> {
    let dir = dist_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut binaries = Vec::new();
    for arch in Arch::ALL {
        let started = Instant::now();
        let built = build_static("kstall", "kstall", arch)?;
        let dest = dir.join(format!("kstall-{}-{}-linux", version(), arch.name()));
        std::fs::copy(&built, &dest).with_context(|| format!("cannot copy {} to {}", built.display(), dest.display()))?;
        // The release profile keeps kstall-common's DWARF (the probes' BTF comes from it);
        // the shipped binary needs none (the embedded probe object is data, not a section).
        run(Command::new(arch.strip()).arg("--strip-debug").arg(&dest))?;
        eprintln!("dist: {} built in {:.0} s", dest.display(), started.elapsed().as_secs_f64());
        binaries.push((arch, dest));
    }
    Ok(Dist { dir, version: version().to_string(), binaries, packages: Vec::new() })
}

/// Writes `SHA256SUMS` over every other file in `dir` (sha256sum's format, so
/// `sha256sum -c SHA256SUMS` checks a download) and returns the files with their sizes.
pub fn write_sha256sums(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files: Vec<(String, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && name != "SHA256SUMS" {
            files.push((name, entry.metadata()?.len()));
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "nothing to sum in {}", dir.display());
    let sums = output(Command::new("sha256sum").current_dir(dir).args(files.iter().map(|(n, _)| n)))?;
    std::fs::write(dir.join("SHA256SUMS"), sums)?;
    Ok(files)
}

/// `cargo xtask dist`: the static binaries, then SHA256SUMS; prints each artifact with its size
/// and the time taken.
pub fn dist() -> Result<Dist> {
    let started = Instant::now();
    let mut dist = build_binaries()?;
    for (arch, path) in &dist.binaries {
        println!("dist: {}: {}", path.display(), check_static(path)?);
        println!("dist: {}", version_of(*arch, path)?);
    }
    for (arch, path) in dist.binaries.clone() {
        let [deb, rpm, image]: [PathBuf; 3] =
            crate::package::build_all(&path, arch, &dist.dir)?.try_into().map_err(|_| anyhow::anyhow!("build_all makes a .deb, an .rpm and an image"))?;
        dist.packages.push((arch, Packages { deb, rpm, image }));
    }
    let files = write_sha256sums(&dist.dir)?;
    for (name, size) in &files {
        println!("{:>10}  {}", human_size(*size), dist.dir.join(name).display());
    }
    println!("dist: {} artifacts and SHA256SUMS in {} in {:.0} s", files.len(), dist.dir.display(), started.elapsed().as_secs_f64());
    Ok(dist)
}

/// What `<binary> --version` prints, run here (under qemu-user for another architecture),
/// checked to name the binary's target.
pub fn version_of(arch: Arch, binary: &Path) -> Result<String> {
    let mut cmd = if arch == Arch::host() {
        Command::new(binary)
    } else {
        let mut qemu = Command::new(format!("qemu-{}-static", arch.name()));
        qemu.arg(binary);
        qemu
    };
    let said = output(cmd.arg("--version"))?.trim().to_string();
    ensure!(said.contains(arch.triple()), "{} --version says {said:?}, not {}", binary.display(), arch.triple());
    Ok(said)
}

fn human_size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Test for `cargo xtask test`: the x86_64 static kstall `built` (from [`dist`] or
/// [`build_static`]), copied outside the build tree and run with no toolchain on PATH and an
/// empty environment, is static to `file` and `ldd`, says what it is (`--version`), and loads
/// and attaches every probe on this kernel (`kstall check`, as root).
pub fn test_static_kstall_check(built: &Path) -> Result<()> {
    let described = check_static(built)?;
    // ldd of a static binary exits non-zero saying so.
    let ldd = Command::new("ldd").arg(built).output().context("cannot run ldd")?;
    let ldd_says = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
    ensure!(ldd_says.contains("not a dynamic executable") || ldd_says.contains("statically linked"), "ldd {}: {ldd_says}", built.display());

    let dir = std::env::temp_dir().join(format!("kstall-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        let kstall = dir.join("kstall");
        std::fs::copy(built, &kstall)?;
        let bare_with = |args: &[&str], env: &[(&str, &str)]| -> Result<std::process::Output> {
            Command::new(&kstall)
                .args(args)
                .current_dir(&dir)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(env.iter().copied())
                .output()
                .with_context(|| format!("cannot run {}", kstall.display()))
        };
        let bare = |args: &[&str]| bare_with(args, &[]);
        let said = bare(&["--version"])?;
        let version_line = String::from_utf8_lossy(&said.stdout).trim().to_string();
        ensure!(said.status.success(), "kstall --version failed: {}", String::from_utf8_lossy(&said.stderr));
        ensure!(
            version_line.starts_with(&format!("kstall {} (commit ", version())) && version_line.contains(Arch::X86_64.triple()),
            "kstall --version says {version_line:?}"
        );
        // As it chooses, then on the classic tracepoints, whose names show the syscall table.
        let check_with = |env: &[(&str, &str)]| -> Result<serde_json::Value> {
            let check = bare_with(&["check", "--format", "json"], env)?;
            let stdout = String::from_utf8_lossy(&check.stdout);
            let report: serde_json::Value = serde_json::from_str(&stdout)
                .with_context(|| format!("kstall check --format json printed no JSON: {stdout}{}", String::from_utf8_lossy(&check.stderr)))?;
            ensure!(report["can_run"] == true && check.status.success(), "the static kstall cannot run here ({env:?}): {}", report["error"]);
            ensure!(report["arch"] == "x86_64", "kstall check says arch {}", report["arch"]);
            Ok(report)
        };
        let chosen = check_with(&[])?;
        ensure!(chosen["syscall_hooks"]["hooks"].is_string(), "kstall check names no syscall hooks: {}", chosen["syscall_hooks"]);
        let report = check_with(&[("KSTALL_HOOKS", "tracepoint")])?;
        // Classic tracepoints: their targets are tracefs's `category:event`.
        let attached: Vec<&str> = report["attached"].as_array().into_iter().flatten().filter(|p| p["mechanism"] == "tracepoint").filter_map(|p| p["target"].as_str()).collect();
        for hook in ["syscalls:sys_exit_sendfile64", "syscalls:sys_exit_epoll_wait", "syscalls:sys_exit_epoll_pwait", "sched:sched_switch"] {
            ensure!(attached.contains(&hook), "the static kstall did not attach {hook}: {attached:?}");
        }
        println!(
            "static kstall ({described}) from {}: {version_line}; check chose {}, and attached {} hooks on tracepoints",
            dir.display(),
            chosen["syscall_hooks"]["hooks"],
            attached.len()
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Test for `cargo xtask test`: the syscall table's unit tests built for aarch64 and run under
/// qemu-user (cargo's runner for that target): the traced set without epoll_wait, libc's arm64
/// numbers against the kernel's, the attach plan. On x86_64 plain `cargo test` runs them.
pub fn test_aarch64_syscall_table() -> Result<()> {
    let arch = Arch::Aarch64;
    arch.check_tools()?;
    let started = Instant::now();
    for (package, target, test) in [
        ("kstall-common", "--lib", "tests::traced_syscalls_are_this_architectures"),
        ("kstall", "--bin=kstall", "session::attach::tests::syscall_numbers_are_this_architectures_kernels"),
    ] {
        // A filter that matches nothing passes: the one test must have run.
        let stdout = output(cargo(arch, "test").args(["--package", package, target, "--", "--exact", test]).stderr(Stdio::inherit()))
            .with_context(|| format!("{test} failed on aarch64"))?;
        ensure!(stdout.contains("test result: ok. 1 passed"), "{test} did not run on aarch64: {stdout}");
    }
    println!("aarch64 syscall table tests passed under qemu-aarch64-static in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
