//! The aarch64 test: the static aarch64 kstall (and xtask, for the stand-in broker) inside a
//! Debian arm64 guest under `qemu-system-aarch64` (software emulation), running `kstall check`
//! and the kernel matrix's functional check (`kernel_check.rs`) with its data on a virtio disk.
//!
//! Made once and cached under `cache_dir()/arm64` (a few minutes; then no network):
//! - the root: Debian bookworm arm64 minbase by `debootstrap --foreign --arch=arm64`, its
//!   second stage in a chroot through qemu-user-static, which the kernel's binfmt_misc starts
//!   for arm64 programs (registered here when it is not: these machines have binfmt_misc
//!   built in but not mounted), then an ext4 image. The guest boots it with writes thrown
//!   away (`snapshot=on`), so every run starts from the same root.
//! - the kernel: Debian's newest bookworm arm64 kernel package (bookworm-security has newer
//!   6.1 than bookworm), downloaded through a private apt config (`guest::apt_for`) and
//!   extracted natively, with `modules.dep` from the host's depmod. It is not in the
//!   debootstrap: its postinst, initramfs-tools, udev and two initrd builds, each a few
//!   thousand processes under user-mode emulation, made the second stage 880 s instead of
//!   500 s here (both with the machine's 2 cores shared by 4 builds). Its modules are copied into the root.
//! - the initramfs: written here (newc cpio) with busybox-static (arm64) and the modules to
//!   reach the root (virtio-pci, virtio-blk, ext4 and what they need from `modules.dep`).
//!
//! Each run gets a second disk (ext4, labelled `kstall-work`) holding the binaries and the
//! script; the root's init (`/kstall-init`, PID 1, no systemd) mounts what kstall needs,
//! runs the script with its output and status on that disk, and powers off. The host reads
//! them back with `debugfs` (no mount, no loop device).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use kstall_testbed::{cache_dir, output, run};

use crate::{
    guest::{self, GuestRun, make_ext4_image_of},
    kernel_check::{self, RECORD_PREFIX},
    matrix::{self, Outcome},
};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const SOURCES: [&str; 2] = ["http://deb.debian.org/debian bookworm main", "http://deb.debian.org/debian-security bookworm-security main"];
/// Bookworm's kernel line.
const KERNEL_LINE: &str = "6.1";
/// Bump when anything below changes what the cache holds: a cache made by another recipe is
/// made again.
const RECIPE: u64 = 2;
const WORK_LABEL: &str = "kstall-work";
/// The root image's size (sparse; minbase uses ~250 MB of it) and the work disk's (binaries,
/// the stand-in's segments, the check's reports).
const ROOT_MIB: u64 = 2048;
const WORK_MIB: u64 = 512;
/// What the initramfs loads to reach the root; modprobe adds what `modules.dep` says they
/// need; crc32c is only a soft dependency of ext4 (jbd2 checksums). Built-in ones are skipped.
const INITRD_MODULES: [&str; 4] = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];
/// What the console shows once PID 1 has started the script.
const STARTED: &str = "kstall-init: running the script";

/// The initramfs's /init: the root is the first virtio disk (`-device` order is PCI order).
const INITRAMFS_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in MODULES; do modprobe -q $m; done
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    [ $i -gt 200 ] && { echo "initramfs: no /dev/vda"; poweroff -f; }
    sleep 0.1
done
mount -t ext4 -o rw /dev/vda /root || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /root/dev
exec switch_root /root /kstall-init
"#;

/// PID 1 of the root.
const INIT: &str = r#"#!/bin/sh
# PID 1 of kstall's arm64 test guest (xtask/src/guest_arm64.rs): mounts what kstall needs, runs
# /mnt/work/run from the disk labelled kstall-work with its output and status there, powers off.
PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
busybox ip link set lo up
mkdir -p /mnt/work
if mount -t ext4 "$(blkid -L kstall-work)" /mnt/work; then
    echo "kstall-init: running the script"
    sh /mnt/work/run >/mnt/work/output 2>&1 </dev/null
    echo $? >/mnt/work/status
    sync
    umount /mnt/work
else
    echo "kstall-init: no disk labelled kstall-work"
fi
sync
echo o >/proc/sysrq-trigger
sleep 60
"#;

/// The prepared guest: Debian's arm64 kernel, the initramfs, the root image.
pub struct Arm64Root {
    /// `uname -r` in the guest.
    pub release: String,
    /// Debian package version of the kernel, e.g. 6.1.176-1.
    pub version: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub image: PathBuf,
}

/// binfmt_misc's entry for arm64 ELF programs: qemu-user-static's, with the F flag (the kernel
/// opens the interpreter at registration, so the chroot needs no copy of it).
fn ensure_binfmt() -> Result<()> {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("register").exists() {
        run(Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc"]).arg(dir))
            .context("cannot mount binfmt_misc on /proc/sys/fs/binfmt_misc (the arm64 root's second stage runs its programs through it)")?;
    }
    let entry = dir.join("qemu-aarch64");
    if let Ok(text) = fs::read_to_string(&entry) {
        let flags = text.lines().find_map(|l| l.strip_prefix("flags: ")).unwrap_or("");
        if text.starts_with("enabled") && flags.contains('F') {
            return Ok(fs::write(dir.join("status"), "1")?);
        }
        // Without F the interpreter would be looked up inside the chroot.
        fs::write(&entry, "-1").context("cannot remove binfmt_misc's qemu-aarch64 entry")?;
    }
    let conf = Path::new("/usr/lib/binfmt.d/qemu-aarch64.conf");
    let line = fs::read_to_string(conf).with_context(|| format!("{} is missing: cargo xtask setup installs qemu-user-static", conf.display()))?;
    let line = line.lines().find(|l| l.starts_with(':')).context("no entry in qemu-aarch64.conf")?;
    let line = if line.rsplit(':').next().is_some_and(|f| f.contains('F')) { line.to_string() } else { format!("{line}F") };
    fs::write(dir.join("register"), line).context("cannot register qemu-aarch64 with binfmt_misc")?;
    Ok(fs::write(dir.join("status"), "1")?)
}

fn from_manifest(dir: &Path) -> Option<Arm64Root> {
    let m: Value = serde_json::from_slice(&fs::read(dir.join("manifest.json")).ok()?).ok()?;
    if m["recipe"].as_u64() != Some(RECIPE) {
        return None;
    }
    let release: String = m["release"].as_str()?.into();
    let (vmlinuz, _) = guest::layout(&dir.join(&release), &release)?;
    let root = Arm64Root { version: m["version"].as_str()?.into(), vmlinuz, initrd: dir.join("initramfs.img"), image: dir.join("root.img"), release };
    [&root.initrd, &root.image].iter().all(|f| f.is_file()).then_some(root)
}

/// Runs `cmd` under `timeout` (coreutils), so that a hung download or chroot cannot stall CI.
fn run_for(seconds: u64, cmd: &mut Command) -> Result<()> {
    let mut timed = Command::new("timeout");
    timed.args(["-k", "10", &seconds.to_string()]).arg(cmd.get_program()).args(cmd.get_args());
    let status = timed.status().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(124 | 137) => bail!("{cmd:?} did not finish within {seconds} s"),
        _ => bail!("{cmd:?} failed: {status}"),
    }
}

/// Debian's newest arm64 kernel of KERNEL_LINE and busybox-static, extracted (natively) as
/// `dir/<release>`: (release, package version).
fn kernel(dir: &Path) -> Result<(String, String)> {
    let apt_dir = dir.join("apt");
    for sub in ["state/lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(apt_dir.join(sub))?;
    }
    let keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    fs::write(apt_dir.join("sources.list"), SOURCES.iter().map(|s| format!("deb {keyring} {s}\n")).collect::<String>())?;
    run(guest::apt_for("arm64", &apt_dir, "apt-get").args(["update", "-qq"])).context("apt-get update of the private arm64 sources failed")?;
    let meta = guest::parse_stanzas(&output(guest::apt_for("arm64", &apt_dir, "apt-cache").args(["show", "linux-image-arm64"]))?);
    let (version, image) = guest::pick_image(&meta, KERNEL_LINE).with_context(|| format!("no linux-image-arm64 {KERNEL_LINE}.x in {SOURCES:?}"))?;
    let release = image.trim_start_matches("linux-image-").to_string();
    if guest::layout(&dir.join(&release), &release).is_none() {
        eprintln!("arm64: downloading {image} {version} and busybox-static");
        guest::extract_for("arm64", &apt_dir, dir, &release, &[format!("{image}={version}"), "busybox-static".into()])?;
    }
    Ok((release, version))
}

/// A newc cpio archive (what the kernel unpacks as initramfs) of (path, mode, data); for a
/// device, data is "major:minor".
fn cpio(entries: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(4), 0);
    let trailer = ("TRAILER!!!".to_string(), 0, Vec::new());
    for (ino, (name, mode, data)) in entries.iter().chain([&trailer]).enumerate() {
        let is_dev = mode & 0o170000 == 0o020000;
        let (rmajor, rminor) = if is_dev {
            let t = String::from_utf8_lossy(data);
            let (a, b) = t.split_once(':').unwrap_or(("0", "0"));
            (a.parse().unwrap_or(0u32), b.parse().unwrap_or(0u32))
        } else {
            (0, 0)
        };
        let size = if is_dev { 0 } else { data.len() };
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        out.extend(format!("070701{:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{rmajor:08x}{rminor:08x}{:08x}{:08x}", ino + 1, 0, 0, 0, 0, 0, name.len() + 1, 0).bytes());
        out.extend(name.bytes());
        out.push(0);
        pad(&mut out);
        if !is_dev {
            out.extend(data);
            pad(&mut out);
        }
    }
    out
}

/// The initramfs: busybox, INITRAMFS_INIT, and INITRD_MODULES with what they depend on (by
/// `modules.dep`, which goes along for modprobe), at their paths under /lib/modules.
fn make_initramfs(kernel_dir: &Path, release: &str, out: &Path) -> Result<()> {
    let (_, modules) = guest::layout(kernel_dir, release).context("no modules in the arm64 kernel package")?;
    let dep = fs::read_to_string(modules.join("modules.dep"))?;
    let deps: BTreeMap<String, (String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| {
            let (path, needs) = l.split_once(':')?;
            let name = Path::new(path).file_name()?.to_str()?.split(".ko").next()?.replace('-', "_");
            Some((name, (path.to_string(), needs.split_whitespace().map(String::from).collect())))
        })
        .collect();
    let mut files = BTreeSet::new();
    for m in INITRD_MODULES {
        if let Some((path, needs)) = deps.get(m) {
            files.insert(path.clone());
            files.extend(needs.iter().cloned());
        }
    }
    let busybox = ["bin/busybox", "usr/bin/busybox"].map(|b| kernel_dir.join(b)).into_iter().find(|b| b.is_file()).context("no busybox in busybox-static")?;
    let lib = format!("lib/modules/{release}");
    let mut dirs = BTreeSet::from(["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "root", "lib", "lib/modules"].map(String::from));
    let mut entries = vec![("dev/console".to_string(), 0o020600, b"5:1".to_vec()), ("bin/busybox".to_string(), 0o100755, fs::read(&busybox)?)];
    let init = INITRAMFS_INIT.replace("MODULES", &INITRD_MODULES.join(" "));
    entries.push(("init".into(), 0o100755, init.into_bytes()));
    let kept: String = dep.lines().filter(|l| l.split_once(':').is_some_and(|(p, _)| files.contains(p))).map(|l| format!("{l}\n")).collect();
    entries.push((format!("{lib}/modules.dep"), 0o100644, kept.into_bytes()));
    for f in &files {
        let path = format!("{lib}/{f}");
        for parent in Path::new(&path).ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            dirs.insert(parent.to_string_lossy().into_owned());
        }
        entries.push((path, 0o100644, fs::read(modules.join(f))?));
    }
    // Parents before children: BTreeSet order puts "a" before "a/b".
    let mut all: Vec<(String, u32, Vec<u8>)> = dirs.into_iter().map(|d| (d, 0o040755, Vec::new())).collect();
    all.extend(entries);
    Ok(fs::write(out, cpio(&all))?)
}

/// The arm64 root, kernel and initramfs, made on first use (see the module's comment) and read
/// from `cache_dir()/arm64` after (no network). A lock on `arm64/.lock` makes concurrent
/// callers wait for one preparation. Delete `manifest.json` to make them again.
pub fn prepare() -> Result<Arm64Root> {
    let dir = cache_dir().join("arm64");
    fs::create_dir_all(&dir)?;
    let lock = fs::File::create(dir.join(".lock"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}", dir.display());
    }
    if let Some(root) = from_manifest(&dir) {
        return Ok(root);
    }
    let _ = fs::remove_file(dir.join("manifest.json"));
    let started = Instant::now();
    let (release, version) = kernel(&dir)?;
    let kernel_dir = dir.join(&release);
    let kernel_s = started.elapsed().as_secs_f64();
    let tree = dir.join(".root");
    if tree.exists() {
        // An interrupted preparation (it mounts nothing there).
        fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    eprintln!("arm64: debootstrap --foreign {SUITE} arm64 into {}", tree.display());
    let first = Instant::now();
    run_for(900, Command::new("debootstrap").args(["--foreign", "--arch=arm64", "--variant=minbase", SUITE]).arg(&tree).arg(MIRROR))
        .context("debootstrap's first stage failed (cargo xtask setup installs debootstrap)")?;
    let first_stage_s = first.elapsed().as_secs_f64();
    ensure_binfmt()?;
    let second = Instant::now();
    eprintln!("arm64: debootstrap --second-stage in a chroot, through qemu-aarch64-static");
    run_for(1800, Command::new("chroot").arg(&tree).args(["/debootstrap/debootstrap", "--second-stage"]))
        .with_context(|| format!("debootstrap's second stage failed (its log: {}/debootstrap/debootstrap.log)", tree.display()))?;
    let second_stage_s = second.elapsed().as_secs_f64();

    let image_started = Instant::now();
    let init = tree.join("kstall-init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let (_, modules) = guest::layout(&kernel_dir, &release).context("no modules in the arm64 kernel package")?;
    fs::create_dir_all(tree.join("usr/lib/modules"))?;
    run(Command::new("cp").arg("-a").arg(&modules).arg(tree.join("usr/lib/modules")))?;
    let busybox = ["bin/busybox", "usr/bin/busybox"].map(|b| kernel_dir.join(b)).into_iter().find(|b| b.is_file()).context("no busybox in busybox-static")?;
    fs::create_dir_all(tree.join("usr/local/bin"))?;
    fs::copy(&busybox, tree.join("usr/local/bin/busybox"))?;
    // The downloaded debs and package lists are not needed to boot.
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        for f in fs::read_dir(tree.join(d))?.flatten() {
            if f.path().is_file() {
                fs::remove_file(f.path())?;
            }
        }
    }
    make_initramfs(&kernel_dir, &release, &dir.join("initramfs.img"))?;
    let image = dir.join(".root.img");
    make_ext4_image_of(&image, ROOT_MIB, Some("kstall-arm64"), Some(&tree))?;
    fs::rename(&image, dir.join("root.img"))?;
    let image_s = image_started.elapsed().as_secs_f64();
    fs::remove_dir_all(&tree)?;
    let manifest = json!({
        "recipe": RECIPE,
        "suite": SUITE,
        "release": release,
        "version": version,
        "kernel_s": kernel_s,
        "first_stage_s": first_stage_s,
        "second_stage_s": second_stage_s,
        "image_s": image_s,
    });
    eprintln!(
        "arm64: ready in {:.0} s (kernel download {kernel_s:.0} s, debootstrap first stage {first_stage_s:.0} s, second stage {second_stage_s:.0} s, initramfs and image {image_s:.0} s), kernel {release} ({version})",
        started.elapsed().as_secs_f64()
    );
    fs::write(dir.join("manifest.json.tmp"), serde_json::to_vec_pretty(&manifest)?)?;
    fs::rename(dir.join("manifest.json.tmp"), dir.join("manifest.json"))?;
    from_manifest(&dir).context("arm64 root made but not found where expected")
}

/// How long the guest may take to start its script (boot to script under emulation: ~10 s here).
const BOOT_DEADLINE: Duration = Duration::from_secs(240);

/// True when `path` is an aarch64 ELF program (e_machine 183).
fn is_aarch64_elf(path: &Path) -> bool {
    let mut head = [0u8; 20];
    fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok() && head.starts_with(b"\x7fELF") && head[18..20] == [0xb7, 0]
}

/// Boots the arm64 guest and runs `script` (sh, as root, in /mnt/work: the work disk holding
/// `files`, each copied under its name, on ext4 on virtio) until it ends or `timeout` (boot
/// included) passes, then QEMU is killed and this fails. A guest that never started the script
/// boots again, once.
pub fn run_in_guest(root: &Arm64Root, files: &[(&str, &Path)], script: &str, timeout: Duration) -> Result<GuestRun> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let dir = cache_dir().join("arm64/runs").join(format!("{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
    let _ = fs::remove_dir_all(&dir);
    let contents = dir.join("work");
    fs::create_dir_all(&contents)?;
    for (name, path) in files {
        fs::copy(path, contents.join(name)).with_context(|| format!("cannot copy {} into the arm64 guest's disk", path.display()))?;
    }
    fs::write(contents.join("run"), format!("cd /mnt/work || exit 99\n{script}"))?;
    let work = dir.join("work.img");
    make_ext4_image_of(&work, WORK_MIB, Some(WORK_LABEL), Some(&contents))?;
    let mut last = None;
    for attempt in 1..=2 {
        let (console, wall, timed_out) = boot(root, &dir, &work, timeout)?;
        let tail = console.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        let status = debugfs_cat(&work, "status").and_then(|s| s.trim().parse().ok());
        if let Some(status) = status {
            let output = debugfs_cat(&work, "output").unwrap_or_default();
            fs::remove_dir_all(&dir)?;
            return Ok(GuestRun { status, output, console, wall });
        }
        if timed_out {
            bail!("the arm64 guest did not finish within {timeout:?}, killed (kept {}); console tail:\n{tail}", dir.display());
        }
        if console.contains(STARTED) || attempt == 2 {
            bail!("the arm64 guest ended without the script's status (kept {}); console tail:\n{tail}", dir.display());
        }
        eprintln!("arm64: the guest did not start the script ({wall:?}); booting again. Console tail:\n{tail}");
        last = Some(tail);
    }
    bail!("the arm64 guest never started the script; console tail:\n{}", last.unwrap_or_default())
}

/// A file of the work disk's root, read with debugfs.
fn debugfs_cat(image: &Path, name: &str) -> Option<String> {
    let out = Command::new("debugfs").arg("-R").arg(format!("cat /{name}")).arg(image).stderr(Stdio::null()).output().ok()?;
    (out.status.success() && !out.stdout.is_empty()).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One QEMU run: the console, the wall time, whether it was killed at `timeout`. QEMU is also
/// killed when the console has not shown the script starting by BOOT_DEADLINE.
fn boot(root: &Arm64Root, dir: &Path, work: &Path, timeout: Duration) -> Result<(String, Duration, bool)> {
    let console = dir.join("console");
    let _ = fs::remove_file(&console);
    let drive = |path: &Path, id: &str, extra: &str| format!("file={},format=raw,if=none,id={id}{extra}", path.display());
    let mut qemu = Command::new("qemu-system-aarch64");
    // neoverse-n1 is what Graviton2 runs; one host thread for all vCPUs, as guest.rs explains
    // for x86 (and this machine's 2 cores are shared).
    qemu.args(["-M", "virt", "-cpu", "neoverse-n1", "-smp", "2", "-m", "2G", "-accel", "tcg,thread=single"])
        .args(["-nographic", "-monitor", "none", "-no-reboot", "-nic", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&root.vmlinuz)
        .arg("-initrd")
        .arg(&root.initrd)
        .args(["-append", "console=ttyAMA0 panic=-1"])
        // The root's writes go to a throw-away overlay: every run starts from the same root.
        .args(["-drive", &drive(&root.image, "root", ",snapshot=on"), "-device", "virtio-blk-pci,drive=root"])
        .args(["-drive", &drive(work, "work", ""), "-device", "virtio-blk-pci,drive=work"])
        .stdin(Stdio::null());
    let log = fs::File::create(dir.join("qemu.log"))?;
    qemu.stdout(log.try_clone()?).stderr(log);
    let started = Instant::now();
    let mut child = qemu.spawn().context("cannot run qemu-system-aarch64 (cargo xtask setup installs qemu-system-arm)")?;
    let read_console = || fs::read_to_string(&console).unwrap_or_default();
    let mut exit = child.try_wait()?;
    while exit.is_none() && started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(200));
        exit = child.try_wait()?;
        if exit.is_none() && started.elapsed() > BOOT_DEADLINE && !read_console().contains(STARTED) {
            break;
        }
    }
    let killed = exit.is_none();
    if killed {
        let _ = child.kill();
    }
    child.wait()?;
    let wall = started.elapsed();
    let mut log = read_console();
    let qemu_log = fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
    if !qemu_log.trim().is_empty() {
        log += &format!("\n[qemu] {qemu_log}");
    }
    Ok((log, wall, killed && wall >= timeout))
}

/// The script of the check: `kstall check`, then the functional check (xtask kernel-check),
/// each under a timeout; the data dir is on the work disk (ext4 on virtio, not tmpfs).
const CHECK_SCRIPT: &str = "echo \"guest: $(uname -m) $(uname -r)\"
timeout -k 10 300 ./kstall check --format json >check.json
echo \"kstall check exited $?\"
cat check.json
mkdir -p data
KSTALL=/mnt/work/kstall KSTALL_CHECK_DIR=/mnt/work/data timeout -k 10 1500 ./xtask kernel-check
";

/// Runs `kstall check` and the functional check in the arm64 guest with these (static aarch64)
/// binaries; returns the check's record (`kernel_check::run`'s, plus `arm64`: kernel package,
/// times, `kstall check`'s exit). Judge it with `kernel_check::failures`.
pub fn run_arm64_check(kstall: &Path, xtask: &Path) -> Result<Value> {
    for (what, path) in [("kstall", kstall), ("xtask", xtask)] {
        if !is_aarch64_elf(path) {
            bail!("{} is not an aarch64 program: the arm64 guest needs static aarch64 builds of {what} (cargo xtask dist)", path.display());
        }
    }
    let prepared = Instant::now();
    let root = prepare()?;
    let prepare_s = prepared.elapsed().as_secs_f64();
    let run = run_in_guest(&root, &[("kstall", kstall), ("xtask", xtask)], CHECK_SCRIPT, Duration::from_secs(1800))?;
    let tail: String = run.output.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let mut record = kernel_check::record_from_output(&run.output)
        .with_context(|| format!("no {RECORD_PREFIX}record from the arm64 guest (script status {}):\n{tail}", run.status))?;
    let check_exit = run.output.lines().find_map(|l| l.strip_prefix("kstall check exited ")).and_then(|s| s.trim().parse::<i64>().ok());
    record["arm64"] = json!({
        "kernel_package": root.version,
        "prepare_s": prepare_s,
        "guest_wall_s": run.wall.as_secs_f64(),
        "kstall_check_exit": check_exit,
        "script_status": run.status,
    });
    Ok(record)
}

/// The arm64 test as one matrix outcome (printed like the matrix's rows): the record through
/// `kernel_check::failures`, and `kstall check` having exited 0.
pub fn outcome(kstall: &Path, xtask: &Path) -> Outcome {
    let started = Instant::now();
    let (record, why) = match run_arm64_check(kstall, xtask) {
        Ok(r) => (Some(r), String::new()),
        Err(e) => (None, format!("{e:#}")),
    };
    let name = match &record {
        Some(r) => format!("arm64 {}", r["kernel"].as_str().unwrap_or("?")),
        None => "arm64".into(),
    };
    let mut o = matrix::outcome(name, record, why, started.elapsed().as_secs_f64());
    if let Some(r) = &o.record
        && r["arm64"]["kstall_check_exit"] != 0
    {
        o.failures.push(format!("kstall check exited {} in the arm64 guest", r["arm64"]["kstall_check_exit"]));
    }
    matrix::report(&o);
    matrix::print_table(std::slice::from_ref(&o));
    o
}

/// Boots the guest and runs programs of its arm64 root (no kstall): proves the guest, its
/// disks, tracefs and the way results come back.
pub fn smoke() -> Result<GuestRun> {
    let root = prepare()?;
    let script = "echo \"guest: $(uname -m) $(uname -r)\"
echo \"syscall enter events: $(ls /sys/kernel/tracing/events/syscalls | grep -c '^sys_enter_')\"
grep -c processor /proc/cpuinfo
busybox ip link show lo
findmnt -no FSTYPE /mnt/work
";
    run_in_guest(&root, &[], script, Duration::from_secs(600))
}
