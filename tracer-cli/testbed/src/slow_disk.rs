//! A real slow disk for tests and demos: ext4 on a loop device whose backing file is served
//! by a small FUSE filesystem (`slow_disk.py`) that delays every read. Page-cache misses on
//! it wait for real block I/O, as on a busy spinning disk; nothing in kstall is faked.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{output, run};

const FUSE_SCRIPT: &str = include_str!("slow_disk.py");

/// Mounted at `mount_point` until dropped; dropping unmounts and detaches everything.
pub struct SlowDisk {
    pub mount_point: PathBuf,
    fuse_dir: PathBuf,
    loop_device: Option<String>,
    fuse: Option<Child>,
    mounted: bool,
}

impl SlowDisk {
    /// A `size_mib` ext4 filesystem under `dir`, every read of which takes `read_delay`.
    pub fn create(dir: &Path, size_mib: u64, read_delay: Duration) -> Result<SlowDisk> {
        fs::create_dir_all(dir)?;
        let fuse_dir = dir.join("fuse");
        let mount_point = dir.join("mnt");
        fs::create_dir_all(&fuse_dir)?;
        fs::create_dir_all(&mount_point)?;
        let backing = dir.join("backing.img");
        fs::File::create(&backing)?.set_len(size_mib << 20)?;
        let script = dir.join("slow_disk.py");
        fs::write(&script, FUSE_SCRIPT)?;
        let mut disk = SlowDisk { mount_point, fuse_dir, loop_device: None, fuse: None, mounted: false };
        let fuse = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&backing)
            .arg(&disk.fuse_dir)
            .arg((read_delay.as_secs_f64() * 1000.0).to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the FUSE slow disk (apt-get install python3-fusepy)")?;
        disk.fuse = Some(fuse);
        let image = disk.fuse_dir.join("disk.img");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !image.exists() {
            if Instant::now() > deadline {
                bail!("the FUSE slow disk did not mount {} within 20 s", disk.fuse_dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let device = output(Command::new("losetup").args(["--find", "--show"]).arg(&image))?;
        disk.loop_device = Some(device.trim().to_string());
        let device = disk.loop_device.clone().unwrap_or_default();
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", &device]))?;
        run(Command::new("mount").arg(&device).arg(&disk.mount_point))?;
        disk.mounted = true;
        Ok(disk)
    }

    fn teardown(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount_point).status();
            self.mounted = false;
        }
        if let Some(device) = self.loop_device.take() {
            let _ = Command::new("losetup").args(["-d", &device]).status();
        }
        if let Some(mut fuse) = self.fuse.take() {
            let _ = Command::new("umount").arg(&self.fuse_dir).stderr(Stdio::null()).status();
            let _ = fuse.kill();
            let _ = fuse.wait();
        }
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        self.teardown();
    }
}
