//! The tests of what was built: the .deb installed with `dpkg -i` into a clean Debian 12 root
//! (debootstrap, cached as a tarball), the .rpm read back and installed into an empty root, the
//! image read back and, for this machine's architecture, run under podman against the stand-in
//! broker until `/metrics` says `kstall_target_up 1`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use kstall_testbed::{cache_dir, output, run};

use super::{Arch, oci::IMAGE_CMD, size_mib, staging::*, version};

/// The files every package must hold (beyond directories), as `dpkg -L` / `rpm -qlp` list them.
pub(super) fn expected_files(unit_dir: &str) -> Vec<String> {
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

pub(super) fn missing_files(listed: &str, expected: &[String]) -> Vec<String> {
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
pub(super) fn in_chroot(root: &Path, args: &[&str]) -> Result<std::process::Output> {
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

pub(super) fn in_chroot_ok(root: &Path, args: &[&str]) -> Result<String> {
    let out = in_chroot(root, args)?;
    if !out.status.success() {
        bail!("`{}` in the Debian root failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when something is mounted at or under `dir` (what must never be deleted recursively).
pub(super) fn mounts_under(dir: &Path) -> bool {
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
pub(super) fn version_of(m: &Meta) -> String {
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
pub(super) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The body of `GET /metrics`, or None while nothing answers.
pub(super) fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then(|| response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The value of an unlabelled metric in a scrape (`kstall_target_up 1` or `1.0`).
pub(super) fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Flags that make podman run on these machines (a VM without systemd as init): cgroupfs, and
/// events to a file instead of journald; runc, because crun refuses the hybrid cgroup layout
/// here (v1 controllers, plus hugetlb on the v2 mount: "crun: cgroups in hybrid mode not
/// supported, drop all controllers from cgroupv2").
pub(super) const PODMAN: [&str; 3] = ["--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime=runc"];

/// Resource limits for `podman run`: podman's defaults (nofile 1048576, nproc 4194304) exceed
/// the hard limits of a process without CAP_SYS_RESOURCE, as on these machines, where the
/// runtime then fails with "error setting rlimit type 6: operation not permitted". Open files:
/// this process's hard limit; processes: a fixed number well above what kstall starts (its
/// threads, jcmd's JVM), which runc can set (it could not set the hard limit itself here).
pub(super) fn podman_ulimits() -> [String; 4] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_in_both_spellings() {
        let scrape = "# TYPE kstall_target_up gauge\nkstall_target_up 1.0\nkstall_target_pid 42\nkstall_target_pid_other 7\n";
        assert_eq!(metric(scrape, "kstall_target_up"), Some(1.0));
        assert_eq!(metric(scrape, "kstall_target_pid"), Some(42.0));
        assert_eq!(metric(scrape, "kstall_attaches_total"), None);
    }
}
