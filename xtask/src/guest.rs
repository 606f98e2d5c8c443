//! Older kernels for tests: Debian's kernel packages booted under QEMU by virtme-ng (`vng`),
//! with this machine's root filesystem mounted read-only over 9p inside the guest.
//!
//! Constraints found on these machines (see /work/shared/kernels.md):
//! - No KVM: QEMU emulates in software (TCG). Boot plus a trivial script took 9-11 s wall on
//!   6.1, 6.12 and sid and 20-30 s on 5.10, about twice that while another guest runs (the
//!   machines have 2 CPUs). Host files are reached over 9p at milliseconds per operation (a
//!   `find` over 3800 entries: 28 s on 6.1), 2-3 times slower still on 5.10; vng's init runs
//!   the host's systemd-tmpfiles over it (2-3 s on 6.1, 10-19 s on 5.10).
//! - We boot the uncompressed `vmlinux` (Debian kernels have CONFIG_PVH, so QEMU enters the
//!   ELF directly): decompressing the bzImage inside the emulated guest costs 6-8 s a boot.
//! - Packages come from Debian's archive through a private apt config and state under
//!   `cache_dir()/kernels/apt`; the host's /etc/apt and dpkg database are never touched.
//!   Versions are resolved once, at the first download (newest 5.10, 6.1, 6.12 and sid); later
//!   calls read `manifest.json` and use no network. Delete that file to pick newer kernels.
//! - vng's init finds no /dev/virtio-ports (udev makes them; there is none here), so it runs
//!   the script on the serial console, mixed with kernel messages; the script's output and exit
//!   status therefore go to files in a shared writable dir. vng itself always exits 255.
use std::{
    fs,
    io::Read,
    os::unix::{fs::symlink, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use kstall_testbed::{cache_dir, output, run};

/// Where the newest kernel of each line is (bookworm-security has a newer 6.1 than bookworm).
const SOURCES: [&str; 5] = [
    "http://deb.debian.org/debian-security bullseye-security main",
    "http://deb.debian.org/debian bookworm main",
    "http://deb.debian.org/debian-security bookworm-security main",
    "http://deb.debian.org/debian-security trixie-security main",
    "http://deb.debian.org/debian sid main",
];
pub const LINES: [&str; 4] = ["5.10", "6.1", "6.12", "sid"];

/// Where `MOUNT_DISK` mounts the disk.
pub const DISK_MOUNT_POINT: &str = "/run/kstall-disk";
/// Start a guest script with this to mount the `GuestOptions::disk` image at
/// `DISK_MOUNT_POINT` (exit 90/91 if that fails). vng attaches `--disk` as virtio-blk-pci (not
/// virtio-scsi as its help says): the guest has `/dev/vda` once `virtio_blk` is loaded; Debian
/// builds it and ext4 (with jbd2, mbcache, crc16, crc32c) as modules. Same on 5.10 to sid.
pub const MOUNT_DISK: &str = "modprobe virtio_blk && modprobe ext4 || exit 90
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mkdir -p /run/kstall-disk && mount -t ext4 /dev/vda /run/kstall-disk || exit 91
";

pub struct GuestKernel {
    pub line: &'static str,
    /// `uname -r` in the guest.
    pub release: String,
    /// Debian package version, e.g. 5.10.262-1.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// What QEMU boots: the uncompressed ELF when it could be extracted, else `vmlinuz`.
    pub boot_image: PathBuf,
    /// Holds `modules.dep` (run at extraction: the debs do not ship it). vng finds this dir
    /// itself from `boot_image`'s location and links it as /lib/modules/<release> in the guest.
    pub modules: PathBuf,
}

pub struct GuestOptions {
    /// An image attached as `/dev/vda` (see `make_ext4_image`, `MOUNT_DISK`).
    pub disk: Option<PathBuf>,
    /// A host dir the guest may write to, at the same path. The rest of / is read-only, with
    /// throw-away overlays on /etc, /home, /tmp, /usr, /var...; /run is a guest tmpfs.
    pub rwdir: Option<PathBuf>,
    /// QEMU `-m` syntax.
    pub memory: String,
    pub cpus: u32,
    /// From the start of vng to the end of the script, boot included.
    pub timeout: Duration,
}

impl Default for GuestOptions {
    fn default() -> GuestOptions {
        let timeout = Duration::from_secs(300);
        GuestOptions {
            disk: None,
            rwdir: None,
            memory: "2G".into(),
            cpus: 2,
            timeout,
        }
    }
}

pub struct GuestRun {
    /// The script's exit status (128+N when killed by signal N).
    pub status: i32,
    /// The script's stdout and stderr, interleaved, without kernel messages.
    pub output: String,
    /// What vng and the guest's serial console printed: the boot log, and kernel messages
    /// while the script ran (warnings, oopses); not the script's output.
    pub console: String,
    pub wall: Duration,
}

/// The four kernels, downloaded and extracted on first use (~360 MB of debs, 70 s, deleted
/// after extraction; 1.2 GB extracted). A lock on `kernels/.lock` makes concurrent callers
/// wait for one download. With `manifest.json` present it takes well under a millisecond.
pub fn kernels() -> Result<Vec<GuestKernel>> {
    let dir = cache_dir().join("kernels");
    fs::create_dir_all(&dir)?;
    let lock = fs::File::create(dir.join(".lock"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}", dir.display());
    }
    let manifest = dir.join("manifest.json");
    if let Some(kernels) = fs::read(&manifest)
        .ok()
        .and_then(|m| from_manifest(&dir, &m))
    {
        return Ok(kernels);
    }
    let apt_dir = dir.join("apt");
    for sub in ["state/lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(apt_dir.join(sub))?;
    }
    let keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    let sources: String = SOURCES
        .iter()
        .map(|s| format!("deb {keyring} {s}\n"))
        .collect();
    fs::write(apt_dir.join("sources.list"), sources)?;
    run(apt(&apt_dir, "apt-get").args(["update", "-qq"]))
        .context("apt-get update of the private kernel sources failed")?;
    let meta = parse_stanzas(&output(
        apt(&apt_dir, "apt-cache").args(["show", "linux-image-amd64"]),
    )?);
    let mut entries = Vec::new();
    for line in LINES {
        let (version, image) =
            pick_image(&meta, line).with_context(|| format!("no linux-image-amd64 for {line}"))?;
        let release = image.trim_start_matches("linux-image-").to_string();
        if !dir.join(&release).is_dir() {
            // Since sid the image is a metapackage: add linux-{binary,modules,base}-<release>.
            let show =
                output(apt(&apt_dir, "apt-cache").args(["show", &format!("{image}={version}")]))?;
            let stanzas = parse_stanzas(&show);
            let deps = stanzas.iter().flat_map(|s| s.depends.iter());
            let mut packages = vec![image.clone()];
            packages.extend(
                deps.filter(|d| d.ends_with(&format!("-{release}")))
                    .cloned(),
            );
            eprintln!("guest: downloading {}", packages.join(" "));
            let packages: Vec<String> = packages.iter().map(|p| format!("{p}={version}")).collect();
            extract(&apt_dir, &dir, &release, &packages)?;
        }
        entries.push(json!({"line": line, "release": release, "version": version}));
    }
    let entries = serde_json::to_vec_pretty(&entries)?;
    fs::write(dir.join("manifest.json.tmp"), &entries)?;
    fs::rename(dir.join("manifest.json.tmp"), &manifest)?;
    from_manifest(&dir, &entries).context("kernels extracted but not found where expected")
}

fn from_manifest(dir: &Path, manifest: &[u8]) -> Option<Vec<GuestKernel>> {
    let entries: Vec<serde_json::Value> = serde_json::from_slice(manifest).ok()?;
    let kernels = entries.iter().map(|e| {
        let line = LINES.into_iter().find(|l| Some(*l) == e["line"].as_str())?;
        let release = e["release"].as_str()?.to_string();
        let (vmlinuz, modules) = layout(&dir.join(&release), &release)?;
        let vmlinux = dir.join(&release).join(format!("vmlinux-{release}"));
        let boot_image = if vmlinux.is_file() {
            vmlinux
        } else {
            vmlinuz.clone()
        };
        let version = e["version"].as_str()?.into();
        Some(GuestKernel {
            line,
            release,
            version,
            vmlinuz,
            boot_image,
            modules,
        })
    });
    kernels
        .collect::<Option<Vec<_>>>()
        .filter(|k| k.len() == LINES.len())
}

/// 5.10 and 6.1 ship boot/vmlinuz-R and lib/modules/R; 6.12 usr/lib/modules/R and sid
/// usr/lib/modules/R/vmlinuz too.
pub fn layout(root: &Path, release: &str) -> Option<(PathBuf, PathBuf)> {
    let modules = ["lib/modules", "usr/lib/modules"].map(|m| root.join(m).join(release));
    let modules = modules
        .into_iter()
        .find(|m| m.join("modules.dep").is_file())?;
    let vmlinuz = [
        root.join("boot").join(format!("vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ];
    Some((vmlinuz.into_iter().find(|v| v.is_file())?, modules))
}

/// Downloads `packages` and extracts them as `dir/release`, via a temp dir renamed at the end
/// so that an interrupted run never leaves a kernel dir that looks complete.
fn extract(apt_dir: &Path, dir: &Path, release: &str, packages: &[String]) -> Result<()> {
    extract_for("amd64", apt_dir, dir, release, packages)
}

/// `extract` for packages of Debian architecture `arch` (its apt config in `apt_dir`); only
/// amd64 kernels get an uncompressed vmlinux (QEMU's PVH entry is x86's).
pub fn extract_for(arch: &str, apt_dir: &Path, dir: &Path, release: &str, packages: &[String]) -> Result<()> {
    let [debs, tmp, depmod] =
        [".debs", ".tmp", ".depmod"].map(|d| dir.join(format!("{d}-{release}")));
    for d in [&debs, &tmp, &depmod] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d)?;
    }
    run(apt_for(arch, apt_dir, "apt-get")
        .current_dir(&debs)
        .args(["download", "-qq"])
        .args(packages))?;
    for deb in fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb?.path())
            .arg(&tmp))?;
    }
    let modules = ["lib/modules", "usr/lib/modules"].map(|m| tmp.join(m).join(release));
    let modules = modules
        .into_iter()
        .find(|m| m.is_dir())
        .context("no modules in the packages")?;
    // `depmod -b B` reads B/lib/modules or B/usr/lib/modules depending on the kmod build.
    fs::create_dir_all(depmod.join("lib/modules"))?;
    symlink(
        fs::canonicalize(&modules)?,
        depmod.join("lib/modules").join(release),
    )?;
    symlink(".", depmod.join("usr"))?;
    run(Command::new("depmod")
        .arg("-a")
        .arg("-b")
        .arg(&depmod)
        .arg(release))?;
    let (vmlinuz, _) = layout(&tmp, release).context("no vmlinuz in the packages")?;
    if arch == "amd64"
        && let Err(e) = write_vmlinux(&vmlinuz, &tmp.join(format!("vmlinux-{release}"))) {
        eprintln!(
            "guest: will boot the compressed {} (slower): {e:#}",
            vmlinuz.display()
        );
    }
    fs::rename(&tmp, dir.join(release))?;
    fs::remove_dir_all(&debs)?;
    Ok(fs::remove_dir_all(&depmod)?)
}

/// Unpacks the ELF kernel from a bzImage: the setup header locates the compressed payload,
/// whose last 4 bytes are the uncompressed length (gzip's ISIZE, or appended by the build).
fn write_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz)?;
    let le32 = |b: &[u8], at: usize| {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let setup = 512
        * (1 + image
            .get(0x1f1)
            .map_or(0, |&n| if n == 0 { 4 } else { n as usize }));
    let (offset, length) = (
        le32(&image, 0x248).context("short")?,
        le32(&image, 0x24c).context("short")?,
    );
    let payload = image
        .get(setup + offset..setup + offset + length)
        .context("not a bzImage")?;
    let tools = [
        (&b"\x1f\x8b"[..], "gzip"),
        (b"\xfd7zXZ", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
    ];
    let tool = tools
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .context("unknown compression")?
        .1;
    let packed = out.with_extension("packed");
    fs::write(&packed, payload)?;
    // xz and zstd exit 1 on the appended length, after writing the whole kernel: check that.
    let (input, output) = (fs::File::open(&packed)?, fs::File::create(out)?);
    let _ = Command::new(tool)
        .arg("-dc")
        .stdin(input)
        .stdout(output)
        .stderr(Stdio::null())
        .status();
    fs::remove_file(&packed)?;
    let elf = fs::read(out)?;
    if !elf.starts_with(b"\x7fELF")
        || Some(elf.len()) != le32(payload, payload.len().saturating_sub(4))
    {
        let _ = fs::remove_file(out);
        bail!("{tool} -dc did not give the expected ELF");
    }
    Ok(())
}

/// apt-get or apt-cache on the private config and state in `dir`.
fn apt(dir: &Path, program: &str) -> Command {
    apt_for("amd64", dir, program)
}

/// apt-get or apt-cache on the private config and state in `dir`, for Debian architecture `arch`.
pub fn apt_for(arch: &str, dir: &Path, program: &str) -> Command {
    let d = dir.display();
    let options = [
        format!("Dir::Etc::sourcelist={d}/sources.list"),
        "Dir::Etc::sourceparts=-".into(),
        format!("Dir::State={d}/state"),
        format!("Dir::Cache={d}/cache"),
        "Dir::State::status=/dev/null".into(),
        format!("APT::Architecture={arch}"),
        "APT::Sandbox::User=root".into(),
    ];
    let mut command = Command::new(program);
    command.args(options.into_iter().flat_map(|o| ["-o".to_string(), o]));
    command
}

#[derive(Debug, PartialEq)]
pub struct Stanza {
    version: String,
    /// Package names of every alternative, without version constraints.
    depends: Vec<String>,
}

pub fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let field = |s: &str, name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let stanza = |s: &str| {
        let depends = field(s, "Depends:").unwrap_or_default();
        let depends = depends
            .split([',', '|'])
            .filter_map(|d| d.split_whitespace().next());
        Some(Stanza {
            version: field(s, "Version:")?,
            depends: depends.map(String::from).collect(),
        })
    };
    text.split("\n\n").filter_map(stanza).collect()
}

/// The newest linux-image-<arch> metapackage of `line` ("sid": the newest of all) and the image it needs.
pub fn pick_image(stanzas: &[Stanza], line: &str) -> Option<(String, String)> {
    let key = |v: &str| {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect::<Vec<u64>>()
    };
    let of_line = stanzas
        .iter()
        .filter(|s| line == "sid" || s.version.starts_with(&format!("{line}.")));
    let newest = of_line.max_by_key(|s| key(&s.version))?;
    let image = newest
        .depends
        .iter()
        .find(|d| d.strip_prefix("linux-image-").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())))?;
    Some((newest.version.clone(), image.clone()))
}

/// A sparse `size_mib` file holding an empty ext4 filesystem (no mount, no root needed).
/// Lazy init is off so the guest does not zero inode tables in the background. Debian's
/// mke2fs.conf does not enable orphan_file, which 5.10 could not mount.
pub fn make_ext4_image(path: &Path, size_mib: u64) -> Result<()> {
    make_ext4_image_of(path, size_mib, None, None)
}

/// `make_ext4_image` with a label and holding a copy of `contents` (`mkfs.ext4 -d`: owners,
/// modes, device nodes, symlinks and hard links as they are there).
pub fn make_ext4_image_of(path: &Path, size_mib: u64, label: Option<&str>, contents: Option<&Path>) -> Result<()> {
    fs::File::create(path)?.set_len(size_mib << 20)?;
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]);
    if let Some(label) = label {
        mkfs.args(["-L", label]);
    }
    if let Some(contents) = contents {
        mkfs.arg("-d").arg(contents);
    }
    run(mkfs.arg(path))
}

/// Boots `kernel` and runs `script` as root (the caller is root) with `bash -c`, stdin from
/// /dev/null, in the caller's working directory. Fails, naming the kernel, on timeout (vng
/// and QEMU killed) or when the guest ended without the script's status (the run dir under
/// `kernels/runs` is then kept, as after a timeout); removes that dir otherwise.
/// A guest that never reached the script (or hangs before it) boots again, twice at most: bookworm's QEMU 7.2
/// sometimes segfaults before the guest prints anything (host dmesg: "qemu-system-x86[..]:
/// segfault"; 2 of ~45 boots here), and sid's 7.2.13 once panicked during its boot initcalls
/// (enqueue_task_fair, "Fatal exception in interrupt") under emulation. Either way nothing of
/// the script ran (it had not created its output file).
pub fn run_in_guest(kernel: &GuestKernel, script: &str, opts: &GuestOptions) -> Result<GuestRun> {
    let name = format!("{} ({})", kernel.line, kernel.release);
    const ATTEMPTS: u32 = 3;
    for attempt in 1..=ATTEMPTS {
        let (dir, console, timed_out, exit, wall) = boot(kernel, script, opts)?;
        let tail = console.lines().rev().take(30).collect::<Vec<_>>();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        if timed_out {
            bail!(
                "guest {name} did not finish within {:?}, killed; console tail:\n{tail}",
                opts.timeout
            );
        }
        let status = fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if let Some(status) = status {
            let output = fs::read_to_string(dir.join("output")).unwrap_or_default();
            fs::remove_dir_all(&dir)?;
            return Ok(GuestRun {
                status,
                output,
                console,
                wall,
            });
        }
        if attempt < ATTEMPTS && !dir.join("output").exists() {
            let why = if console.contains("Kernel panic") {
                "the kernel panicked while booting"
            } else if wall > BOOT_DEADLINE {
                "the guest hung before the script"
            } else if console.contains("Linux version") {
                "the guest stopped before the script"
            } else {
                "QEMU died before the kernel started"
            };
            let last: Vec<&str> = console.lines().rev().take(3).collect();
            eprintln!("guest {name}: {why} (vng {exit}, console ends {:?}); booting again", last.into_iter().rev().collect::<Vec<_>>());
            fs::remove_dir_all(&dir)?;
            continue;
        }
        let dir = dir.display();
        bail!(
            "guest {name} ended without the script's status (vng {exit}, see {dir}); console tail:\n{tail}"
        );
    }
    unreachable!("the last attempt returns or fails")
}

/// How long a guest may take to reach its script (they take 20-60 s under TCG here).
const BOOT_DEADLINE: Duration = Duration::from_secs(150);

/// One vng run: its run dir, console, whether it timed out, its exit status, wall time. A guest
/// that has not reached its script by BOOT_DEADLINE is killed and reported as not timed out
/// (nothing of the script ran: it may boot again).
fn boot(
    kernel: &GuestKernel,
    script: &str,
    opts: &GuestOptions,
) -> Result<(PathBuf, String, bool, ExitStatus, Duration)> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let dir = cache_dir().join("kernels/runs").join(run_id);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("script"), script)?;
    let file = |f: &str| {
        format!(
            "'{}'",
            dir.join(f).display().to_string().replace('\'', r"'\''")
        )
    };
    let (script, out, status) = (file("script"), file("output"), file("status"));
    // The kernel command line (which carries --exec) is limited to 2 KiB: keep the script out.
    let wrapper =
        format!("bash -c \"$(cat {script})\" >{out} 2>&1 </dev/null; echo $? >{status}; sync");
    let mut vng = Command::new("vng");
    vng.args([
        "-v",
        "--force-9p",
        "--disable-kvm",
        "--cpus",
        &opts.cpus.to_string(),
        "--memory",
        &opts.memory,
    ]);
    // One host thread runs every vCPU in turn. With QEMU's default multi-threaded TCG, a vCPU
    // could execute kernel text another vCPU was patching (a static key flipped as tracepoints
    // are enabled): sid's 7.2.13 panicked that way, at boot and as kstall attached (RIP in
    // enqueue_task_fair and trace_syscall_exit on a half-written 5-byte NOP), 3 boots in 8.
    vng.arg("--qemu-opts=-accel tcg,thread=single");
    vng.arg("-r")
        .arg(&kernel.boot_image)
        .arg(format!("--rwdir={}", dir.display()));
    if let Some(rw) = &opts.rwdir {
        vng.arg(format!("--rwdir={}", rw.display()));
    }
    if let Some(disk) = &opts.disk {
        vng.arg("--disk").arg(disk);
    }
    // QEMU reopens /proc/self/fd/{1,2} with O_TRUNC, so its outputs must be a pipe, not a file.
    let (mut reader, writer) = std::io::pipe()?;
    vng.args(["--exec", &wrapper])
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let started = Instant::now();
    let mut child = vng
        .process_group(0)
        .spawn()
        .context("cannot run vng (cargo xtask setup installs it)")?;
    drop(vng);
    let console = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = reader.read_to_end(&mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    let mut exit = child.try_wait()?;
    let mut stuck_booting = false;
    while exit.is_none() && started.elapsed() < opts.timeout {
        std::thread::sleep(Duration::from_millis(100));
        exit = child.try_wait()?;
        // The script creates its output file first thing: a guest without one by now hangs
        // in its boot (sid's once did for the whole 300 s under emulation, in CI).
        if exit.is_none() && started.elapsed() > BOOT_DEADLINE && !dir.join("output").exists() {
            stuck_booting = true;
            break;
        }
    }
    let timed_out = exit.is_none() && !stuck_booting;
    if exit.is_none() {
        // SAFETY: vng is not reaped yet, so its process group (QEMU included) is still ours.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    }
    let exit = child.wait()?;
    let console = console.join().unwrap_or_default();
    Ok((dir, console, timed_out, exit, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "Package: linux-image-amd64\nVersion: 7.2.13-1\n\
        Depends: linux-base-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)\n\n\
        Package: linux-image-amd64\nVersion: 6.12.118-1\nDepends: linux-image-6.12.118+deb13-amd64 (= 6.12.118-1)\n\n\
        Package: linux-image-amd64\nVersion: 6.1.192-3\nDepends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\n\n\
        Package: linux-image-amd64\nVersion: 6.1.176-1\nDepends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)\n\n\
        Package: linux-image-amd64\nVersion: 5.10.262-1\nDepends: linux-image-5.10.0-46-amd64 (= 5.10.262-1)\n";

    #[test]
    fn picks_the_newest_image_of_each_line() {
        let stanzas = parse_stanzas(META);
        let pick = |line| pick_image(&stanzas, line).map(|(v, i)| format!("{v} {i}"));
        assert_eq!(
            pick("5.10").as_deref(),
            Some("5.10.262-1 linux-image-5.10.0-46-amd64")
        );
        assert_eq!(
            pick("6.1").as_deref(),
            Some("6.1.192-3 linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            pick("6.12").as_deref(),
            Some("6.12.118-1 linux-image-6.12.118+deb13-amd64")
        );
        assert_eq!(
            pick("sid").as_deref(),
            Some("7.2.13-1 linux-image-7.2.13+deb14-amd64")
        );
        assert_eq!(pick("4.19"), None);
    }

    #[test]
    fn parses_alternatives_and_version_constraints() {
        let s = parse_stanzas(
            "Package: linux-image-7.2.13+deb14-amd64\nVersion: 7.2.13-1\nDepends: dracut | \
             initramfs-tools (>= 0.120+deb8u2), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1)\n",
        );
        let depends = [
            "dracut",
            "initramfs-tools",
            "linux-binary-7.2.13+deb14-amd64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            s,
            vec![Stanza {
                version: "7.2.13-1".into(),
                depends
            }]
        );
    }
}
