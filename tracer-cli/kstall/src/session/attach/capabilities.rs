//! What this kernel and this process allow, found before loading anything: the kernel's
//! version, root, kprobes, BTF, fentry, the syscall tracepoints.
use anyhow::{Result, bail};
use aya::Btf;
use kstall_core::kernel::SyscallHooks;

use super::catalog::{Point, required_attachments};
use crate::session::tracefs::Tracefs;

/// Where the kernel's BTF is, when it has one (CONFIG_DEBUG_INFO_BTF).
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel has BTF: fentry and fexit need it.
pub fn kernel_has_btf() -> bool {
    std::path::Path::new(KERNEL_BTF).exists()
}

/// The oldest kernel kstall can load on: BPF ring buffers came with 5.8 (the matrix in
/// `cargo xtask test` runs 5.10 and newer).
pub(super) const OLDEST_KERNEL: (u32, u32) = (5, 8);

/// Whether this kernel attaches kprobes (a kprobe PMU, 4.17+), or why not.
pub(super) fn kprobes_allowed() -> std::result::Result<(), String> {
    if std::env::var_os("KSTALL_NO_KPROBES").is_some() {
        return Err("kprobes not used (KSTALL_NO_KPROBES is set)".into());
    }
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        Ok(())
    } else {
        Err("this kernel has no kprobes (CONFIG_KPROBES)".into())
    }
}

/// The kernel release's (major, minor), when it parses.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Fails with the fix when this kernel is older than kstall's floor.
pub(super) fn check_kernel_version() -> Result<()> {
    let release = kernel_release();
    match kernel_version(&release) {
        Some(v) if v < OLDEST_KERNEL => bail!(
            "kernel {release} is too old: kstall needs Linux {}.{} or later (BPF ring buffer); RHEL 8 and Ubuntu 20.04 have newer kernels in their HWE/UEK streams",
            OLDEST_KERNEL.0,
            OLDEST_KERNEL.1
        ),
        _ => Ok(()),
    }
}

/// This kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// Fails with the fix when this process cannot load tracing eBPF programs.
pub fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = procfs::process::Process::myself().and_then(|p| p.status()).map_or(0, |s| s.capeff);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        bail!("kstall needs root to load its eBPF probes (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN): run it with sudo")
    }
}


/// The kernel's BTF, which fentry and fexit need to name their functions: parsed when fentry
/// is tried, on this thread, after the loader dropped its own copy (aya's `EbpfLoader::new`
/// parses it too), so the two do not add up in kstall's memory (~17 MiB each).
pub(super) enum KernelBtf {
    NotRead,
    Read(std::result::Result<Btf, String>),
}

impl KernelBtf {
    pub(super) fn get(&mut self) -> std::result::Result<&Btf, String> {
        if let KernelBtf::NotRead = self {
            *self = KernelBtf::Read(Btf::from_sys_fs().map_err(|e| format!("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux): {e}")));
        }
        match self {
            KernelBtf::Read(Ok(btf)) => Ok(btf),
            KernelBtf::Read(Err(e)) => Err(e.clone()),
            KernelBtf::NotRead => unreachable!("read above"),
        }
    }
}

/// Whether this kernel refuses fentry programs outright (some builds and lockdown settings
/// answer EPERM to any), found without the kernel's BTF: a two-instruction fentry program with
/// no function named is refused with EPERM there, and with EINVAL where fentry is allowed.
pub(super) fn fentry_refused() -> Option<String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    /// The BPF_PROG_LOAD part of `union bpf_attr`, up to expected_attach_type; the kernel
    /// takes the rest as zero (attach_btf_id among it).
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    // r0 = 0; exit
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: [0; 16],
        prog_ifindex: 0,
        expected_attach_type: BPF_TRACE_FENTRY,
    };
    // SAFETY: the attr points at live instructions and license of the lengths it names.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, std::mem::size_of::<ProgLoadAttr>()) };
    if fd >= 0 {
        // SAFETY: a program fd this call just got.
        unsafe { libc::close(fd as i32) };
        return None;
    }
    match std::io::Error::last_os_error() {
        e if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            Some(format!("the kernel refuses fentry programs ({e})"))
        }
        _ => None,
    }
}

/// Why a syscall-hook mechanism cannot be used here, as far as can be told before loading.
pub(super) fn hooks_unusable(hooks: SyscallHooks, tracefs: &Tracefs) -> Option<String> {
    match hooks {
        SyscallHooks::Fentry if !kernel_has_btf() => {
            Some("the kernel has no BTF (/sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF)".into())
        }
        SyscallHooks::Fentry => fentry_refused(),
        SyscallHooks::Tracepoint => required_attachments(hooks).iter().find_map(|a| match &a.point {
            Point::Tracepoint { category: "syscalls", event } if !tracefs.has_event("syscalls", event) => Some(format!(
                "no tracepoint syscalls:{event} (syscall tracepoints need a kernel built with CONFIG_FTRACE_SYSCALLS=y)"
            )),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse_and_compare_with_the_floor() {
        assert_eq!(kernel_version("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.12.118+deb13-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("4.18.0").unwrap() < OLDEST_KERNEL);
        assert!(kernel_version("5.8.0").unwrap() >= OLDEST_KERNEL);
    }

}
