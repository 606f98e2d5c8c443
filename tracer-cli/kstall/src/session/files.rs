//! Naming the file a stall read, from /proc/PID/fd, while the call's fd is still open.
use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use kstall_common::events::StallEvent;
use procfs::process::{FDInfo, FDTarget, Process};

/// A file as the kernel names it in tracepoints: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// From a tracepoint's `dev_t` (the kernel's internal encoding, major << 20 | minor).
    pub fn from_kernel(dev: u32, inode: u64) -> FileId {
        FileId { major: dev >> 20, minor: dev & 0xfffff, inode }
    }

    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let dev = meta.dev();
        FileId { major: libc::major(dev), minor: libc::minor(dev), inode: meta.ino() }
    }
}

/// Names open files of the broker from their (device, inode), caching what it finds.
pub struct FileNames {
    pid: u32,
    known: HashMap<FileId, PathBuf>,
    last_scan: Option<Instant>,
}

impl FileNames {
    pub fn new(pid: u32) -> FileNames {
        FileNames { pid, known: HashMap::new(), last_scan: None }
    }

    /// The file a stall read: by (device, inode) where the kernel gave them
    /// (`mm_filemap_get_pages`, 6.12+), else by the fd the call used, if it is still open on
    /// a regular file (segments stay open for as long as they exist).
    pub fn of_stall(&mut self, e: &StallEvent) -> Option<PathBuf> {
        if e.inode != 0 {
            return self.resolve(FileId::from_kernel(e.dev, e.inode), e.file_fd);
        }
        (e.file_fd >= 0).then(|| fd_file(self.pid, e.file_fd)).flatten().map(|(_, path)| path)
    }

    fn resolve(&mut self, id: FileId, fd: i32) -> Option<PathBuf> {
        if let Some(p) = self.known.get(&id) {
            return Some(p.clone());
        }
        if self.known.len() > 65_536 {
            self.known.clear();
        }
        // The fd the call used is usually still open on the same file.
        if let Some((found, path)) = (fd >= 0).then(|| fd_file(self.pid, fd)).flatten() {
            self.known.insert(found, path);
            if found == id {
                return self.known.get(&id).cloned();
            }
        }
        // Else scan every fd, at most once a second (brokers hold thousands).
        if self.last_scan.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            self.last_scan = Some(Instant::now());
            self.known.extend(open_files(self.pid));
        }
        self.known.get(&id).cloned()
    }
}

/// The file open as `fd` in process `pid`, with its identity.
fn fd_file(pid: u32, fd: i32) -> Option<(FileId, PathBuf)> {
    identify(pid, Process::new(pid as i32).ok()?.fd_from_fd(fd).ok()?, false)
}

/// Every regular file process `pid` has open.
pub fn open_files(pid: u32) -> Vec<(FileId, PathBuf)> {
    let Ok(fds) = Process::new(pid as i32).and_then(|p| p.fd()) else { return Vec::new() };
    fds.flatten().filter_map(|info| identify(pid, info, true)).collect()
}

/// The path an fd points at (as the process sees it) and the identity of what it opened,
/// stat'ed through the fd link so a file renamed or in another mount namespace is found.
fn identify(pid: u32, info: FDInfo, regular_only: bool) -> Option<(FileId, PathBuf)> {
    let FDTarget::Path(path) = info.target else { return None };
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{}", info.fd)).ok()?;
    (!regular_only || meta.is_file()).then(|| (FileId::of(&meta), path))
}
