//! Loading the embedded probes into the kernel, pointing them at the broker, attaching them,
//! and reading their maps. The traced syscalls are hooked by the cheapest mechanism the kernel
//! allows, decided at load: fentry/fexit, else raw tracepoints `sys_enter`/`sys_exit`, else the
//! classic syscall tracepoints (`SyscallHooks`; `KSTALL_HOOKS` forces one). Evidence comes
//! from (raw) tracepoints, and for what older kernels lack as tracepoints, from kprobes where
//! the kernel allows them. Dropping [`Probes`] detaches everything; so does the kernel if
//! kstall is killed (links live only as long as kstall's file descriptors).
use std::{
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{FEntry, FExit, KProbe, RawTracePoint, TracePoint},
};
use kstall_common::{
    Config, HistKey, LatencyHist, SYSCALL_ID_CLOSE, Syscall, counter, global, map, thread_slot,
};

use kstall_core::{
    aggregate::Taken,
    kernel::{Event, Evidence, EvidenceStatus, SyscallHookStatus, SyscallHooks, decode_event},
};

use super::tracefs::{self, Tracefs};

static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kstall-probes"));

/// The oldest kernel kstall can load on: BPF ring buffers came with 5.8 (the matrix in
/// `cargo xtask test` runs 5.10 and newer).
const OLDEST_KERNEL: (u32, u32) = (5, 8);

/// Where a program goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hook {
    Tracepoint { category: &'static str, event: String },
    Kprobe { function: &'static str },
    /// A raw tracepoint; `category` only says where tracefs lists it (the kernel names raw
    /// tracepoints without it).
    RawTracepoint { category: &'static str, name: &'static str },
    FEntry { function: String },
    FExit { function: String },
    /// Loaded, not attached: raw_exit tail-calls it from EXIT_PROGRAMS[index].
    TailCall { index: u32 },
}

impl Hook {
    fn tracepoint(category: &'static str, event: &str) -> Hook {
        Hook::Tracepoint { category, event: event.to_string() }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Tracepoint { category, event } => write!(f, "{category}:{event}"),
            Hook::Kprobe { function } => write!(f, "kprobe:{function}"),
            Hook::RawTracepoint { name, .. } => write!(f, "raw_tracepoint:{name}"),
            Hook::FEntry { function } => write!(f, "fentry:{function}"),
            Hook::FExit { function } => write!(f, "fexit:{function}"),
            Hook::TailCall { index } => write!(f, "tail call {index}"),
        }
    }
}

/// A probe program and the hook it goes on.
#[derive(Clone, Debug)]
struct Attachment {
    program: String,
    hook: Hook,
}

/// The kernel function of a syscall (`__x64_sys_read`): what fentry and fexit attach to. The
/// syscall wrappers take the caller's `struct pt_regs`, on x86_64 since 4.17, on arm64 since 4.19.
fn syscall_function(tracepoint_name: &str) -> String {
    #[cfg(target_arch = "x86_64")]
    const PREFIX: &str = "__x64_sys_";
    #[cfg(target_arch = "aarch64")]
    const PREFIX: &str = "__arm64_sys_";
    format!("{PREFIX}{tracepoint_name}")
}

/// What kstall cannot work without: syscall latency (by `hooks`), off-CPU and D-state time,
/// pages added. In attach order: an exit hook before its entry hook, so no call is entered
/// without its exit being seen (the raw path's exit programs even before that).
fn required_attachments(hooks: SyscallHooks) -> Vec<Attachment> {
    let mut plan = Vec::new();
    let tp = |program: &str, category, event: &str| Attachment { program: program.into(), hook: Hook::tracepoint(category, event) };
    match hooks {
        SyscallHooks::Fentry => {
            for &syscall in Syscall::TRACED {
                let function = syscall_function(syscall.tracepoint_name());
                plan.push(Attachment { program: format!("fexit_{}", syscall.name()), hook: Hook::FExit { function: function.clone() } });
                plan.push(Attachment { program: format!("fentry_{}", syscall.name()), hook: Hook::FEntry { function } });
            }
            plan.push(Attachment { program: "fentry_close".into(), hook: Hook::FEntry { function: syscall_function("close") } });
        }
        SyscallHooks::RawTracepoint => {
            for &syscall in Syscall::TRACED {
                plan.push(Attachment { program: format!("raw_exit_{}", syscall.name()), hook: Hook::TailCall { index: syscall as u32 } });
            }
            plan.push(Attachment { program: "raw_exit".into(), hook: Hook::RawTracepoint { category: "raw_syscalls", name: "sys_exit" } });
            plan.push(Attachment { program: "raw_enter".into(), hook: Hook::RawTracepoint { category: "raw_syscalls", name: "sys_enter" } });
        }
        SyscallHooks::Tracepoint => {
            // One entry program for every syscall, one exit program per syscall (this architecture's).
            for &syscall in Syscall::TRACED {
                let event = |phase: &str| format!("sys_{phase}_{}", syscall.tracepoint_name());
                plan.push(tp(&format!("exit_{}", syscall.name()), "syscalls", &event("exit")));
                plan.push(tp("enter_syscall", "syscalls", &event("enter")));
            }
            plan.push(tp("enter_close", "syscalls", "sys_enter_close"));
        }
    }
    plan.push(tp("sched_switch", "sched", "sched_switch"));
    plan.push(tp("page_cache_add", "filemap", "mm_filemap_add_to_page_cache"));
    plan
}

/// The syscall hooks to try, best first: `KSTALL_HOOKS` names one (to compare them, or to
/// step around a kernel that misbehaves with the better one).
fn syscall_hook_candidates() -> Result<Vec<SyscallHooks>> {
    match std::env::var("KSTALL_HOOKS") {
        Ok(name) if !name.is_empty() => match SyscallHooks::from_name(&name) {
            Some(hooks) => Ok(vec![hooks]),
            None => bail!(
                "KSTALL_HOOKS={name} is not a hook mechanism: use {} (or unset it for the best this kernel allows)",
                SyscallHooks::BEST_FIRST.map(|h| h.as_str()).join(", ")
            ),
        },
        _ => Ok(SyscallHooks::BEST_FIRST.to_vec()),
    }
}

/// Ways to get it, best first (the kernel that brought the tracepoints; kprobes need
/// CONFIG_KPROBES and a kernel that allows them).
fn sources(evidence: Evidence) -> Vec<(&'static str, Vec<Attachment>)> {
    let tp = |program: &str, category, event: &str| Attachment { program: program.into(), hook: Hook::tracepoint(category, event) };
    let kp = |program: &str, function| Attachment { program: program.into(), hook: Hook::Kprobe { function } };
    let raw = |program: &str, category: &'static str, name: &'static str| Attachment {
        program: program.into(),
        hook: Hook::RawTracepoint { category, name },
    };
    match evidence {
        Evidence::FileLookups => {
            vec![("6.12", vec![tp("page_cache_get_pages", "filemap", "mm_filemap_get_pages")])]
        }
        Evidence::Readahead => vec![
            (
                "6.18",
                vec![
                    tp("sync_readahead", "readahead", "page_cache_sync_ra"),
                    tp("async_readahead", "readahead", "page_cache_async_ra"),
                ],
            ),
            (
                "",
                vec![
                    kp("sync_readahead_kprobe", "page_cache_sync_ra"),
                    kp("async_readahead_kprobe", "page_cache_async_ra"),
                ],
            ),
        ],
        // The socket events as raw tracepoints (no perf record per event: they run several
        // times per request, sk_data_ready for every socket of the host), else classic.
        Evidence::SocketReads => vec![
            ("6.3", vec![raw("sock_recv_raw", "sock", "sock_recv_length")]),
            ("6.3", vec![tp("sock_recv", "sock", "sock_recv_length")]),
            ("", vec![kp("sock_recv_kprobe", "tcp_recvmsg")]),
        ],
        Evidence::DataArrival => vec![
            ("6.3", vec![raw("sock_data_ready_raw", "sock", "sk_data_ready")]),
            ("6.3", vec![tp("sock_data_ready", "sock", "sk_data_ready")]),
            ("", vec![kp("sock_data_ready_kprobe", "sock_def_readable")]),
        ],
    }
}

/// Whether this kernel attaches kprobes (a kprobe PMU, 4.17+), or why not.
fn kprobes_allowed() -> std::result::Result<(), String> {
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
fn check_kernel_version() -> Result<()> {
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

impl Drop for Probes {
    /// Detaches every program, all at once: each tracepoint's detach waits for an RCU grace
    /// period (tens of ms), so one after the other took 2 s for 30 hooks, which is how long a
    /// Ctrl-C took to answer. (Whatever fails here is released when the fds close anyway.)
    fn drop(&mut self) {
        let programs: Vec<&mut aya::programs::Program> = self.ebpf.programs_mut().map(|(_, p)| p).collect();
        std::thread::scope(|scope| {
            for program in programs {
                scope.spawn(move || unload(program));
            }
        });
    }
}

/// The probes, attached to one broker.
pub struct Probes {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    /// Network threads the kernel parses Kafka framing for, as last set.
    network_threads: Vec<u32>,
    /// How the traced syscalls are hooked, and why not better.
    pub syscall_hooks: SyscallHookStatus,
    /// The kernel shows which socket a read takes and when its data arrived.
    pub have_socket_wait: bool,
    /// Every hook attached (`category:event` for tracepoints, `kprobe:function`,
    /// `raw_tracepoint:name`, `fentry:function`, `fexit:function`).
    pub attached: Vec<String>,
    /// Optional tracepoints this kernel lacks.
    pub unavailable: Vec<String>,
    /// How each kind of optional evidence is gathered here, or why not.
    pub evidence: Vec<EvidenceStatus>,
    /// From load start to the last hook attached.
    pub attach_time: Duration,
}

/// The evidence each optional kind gets on this kernel: the first source whose hooks all
/// exist, as far as can be told before loading.
fn plan_evidence(
    tracefs: &Tracefs,
    kprobes: &std::result::Result<(), String>,
    skip: &[(Evidence, String)],
) -> Vec<(EvidenceStatus, Vec<Attachment>)> {
    Evidence::ALL
        .iter()
        .map(|&evidence| {
            let mut status = EvidenceStatus { evidence, hooks: Vec::new(), missing: None, cost: evidence.cost() };
            if let Some((_, why)) = skip.iter().find(|(e, _)| *e == evidence) {
                status.missing = Some(why.clone());
                return (status, Vec::new());
            }
            let mut reasons = Vec::new();
            for (since, attachments) in sources(evidence) {
                let absent: Vec<&Attachment> = attachments
                    .iter()
                    .filter(|a| match &a.hook {
                        Hook::Tracepoint { category, event } => !tracefs.has_event(category, event),
                        Hook::RawTracepoint { category, name } => !tracefs.has_event(category, name),
                        Hook::Kprobe { .. } => kprobes.is_err(),
                        // Evidence comes from tracepoints, raw tracepoints and kprobes only.
                        _ => true,
                    })
                    .collect();
                match absent.first() {
                    None => {
                        status.hooks = attachments.iter().map(|a| a.hook.to_string()).collect();
                        return (status, attachments);
                    }
                    Some(a) if matches!(a.hook, Hook::Kprobe { .. }) => {
                        reasons.push(kprobes.clone().err().unwrap_or_default());
                    }
                    Some(a) => {
                        let event = match &a.hook {
                            Hook::RawTracepoint { category, name } => format!("{category}:{name}"),
                            hook => hook.to_string(),
                        };
                        let reason = format!("no tracepoint {event} (Linux {since}+)");
                        // A raw and a classic tracepoint of one event are missing together.
                        if !reasons.contains(&reason) {
                            reasons.push(reason);
                        }
                    }
                }
            }
            status.missing = Some(reasons.join("; "));
            (status, Vec::new())
        })
        .collect()
}

/// The kernel's BTF, which fentry and fexit need to name their functions: parsed when fentry
/// is tried, on this thread, after the loader dropped its own copy (aya's `EbpfLoader::new`
/// parses it too), so the two do not add up in kstall's memory (~17 MiB each).
enum KernelBtf {
    NotRead,
    Read(std::result::Result<Btf, String>),
}

impl KernelBtf {
    fn get(&mut self) -> std::result::Result<&Btf, String> {
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
fn fentry_refused() -> Option<String> {
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
fn hooks_unusable(hooks: SyscallHooks, tracefs: &Tracefs) -> Option<String> {
    match hooks {
        SyscallHooks::Fentry if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() => {
            Some("the kernel has no BTF (/sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF)".into())
        }
        SyscallHooks::Fentry => fentry_refused(),
        SyscallHooks::Tracepoint => required_attachments(hooks).iter().find_map(|a| match &a.hook {
            Hook::Tracepoint { category: "syscalls", event } if !tracefs.has_event("syscalls", event) => Some(format!(
                "no tracepoint syscalls:{event} (syscall tracepoints need a kernel built with CONFIG_FTRACE_SYSCALLS=y)"
            )),
            _ => None,
        }),
        _ => None,
    }
}

/// Loads the probes for the broker `target_tgid` (u32::MAX for none: `kstall check`) and
/// attaches them, the traced syscalls by the best mechanism the kernel allows. An optional hook
/// that the kernel refuses after all (a kprobe on a function this build renamed or inlined)
/// costs its evidence, not the run: the probes are loaded again without it, once per kind at
/// most. A syscall-hook mechanism the kernel refuses gives way to the next one.
pub fn attach(target_tgid: u32, stall_threshold: Duration) -> Result<Probes> {
    let started = Instant::now();
    check_kernel_version()?;
    let tracefs = Tracefs::new(tracefs::locate_or_mount()?);
    let candidates = syscall_hook_candidates()?;
    // Check every required tracepoint before loading anything: a missing one is the error.
    for a in required_attachments(SyscallHooks::RawTracepoint) {
        if let Hook::Tracepoint { category, event } = &a.hook {
            if !tracefs.has_event(category, event) {
                bail!("this kernel has no tracepoint {category}:{event}; kstall needs it (it needs a kernel built with CONFIG_TRACING=y)");
            }
        }
    }
    let mut refused_hooks: Vec<(SyscallHooks, String)> =
        candidates.iter().filter_map(|&h| hooks_unusable(h, &tracefs).map(|why| (h, why))).collect();
    let mut btf = KernelBtf::NotRead;
    let unavailable: Vec<String> = Evidence::ALL
        .iter()
        .flat_map(|&e| sources(e))
        .flat_map(|(_, attachments)| attachments)
        .filter_map(|a| match &a.hook {
            Hook::Tracepoint { category, event } if !tracefs.has_event(category, event) => Some(a.hook.to_string()),
            _ => None,
        })
        .collect();
    let kprobes = kprobes_allowed();
    let mut skip: Vec<(Evidence, String)> = Vec::new();
    loop {
        let plan = plan_evidence(&tracefs, &kprobes, &skip);
        match load_and_attach(&tracefs, target_tgid, stall_threshold, &candidates, &mut refused_hooks, &mut btf, &plan)? {
            Loaded::Refused(evidence, why) => skip.push((evidence, why)),
            Loaded::Attached(mut ebpf, hooks, attached) => {
                let evidence: Vec<EvidenceStatus> = plan.into_iter().map(|(status, _)| status).collect();
                let has = |e: Evidence| evidence.iter().any(|s| s.evidence == e && s.available());
                let have_socket_wait = has(Evidence::SocketReads) && has(Evidence::DataArrival);
                let events = ebpf.take_map(map::EVENTS).context("event ring buffer missing")?;
                let events = RingBuf::try_from(events)?;
                // Only the better ones than what is in use: a worse one was never tried.
                refused_hooks.retain(|(h, _)| *h < hooks);
                return Ok(Probes {
                    ebpf,
                    events,
                    network_threads: Vec::new(),
                    syscall_hooks: SyscallHookStatus { hooks, not_used: refused_hooks },
                    have_socket_wait,
                    attached,
                    unavailable,
                    evidence,
                    attach_time: started.elapsed(),
                });
            }
        }
    }
}

/// What one attempt at loading gave.
enum Loaded {
    /// Everything attached: the object, how the syscalls are hooked, and the hooks.
    Attached(Ebpf, SyscallHooks, Vec<String>),
    /// The kernel refused an optional hook: try again without this evidence.
    Refused(Evidence, String),
}

/// What attaching with one syscall-hook mechanism gave.
enum Attempt {
    Attached(Vec<String>),
    /// The kernel refused the mechanism (a program or a hook of it): try the next one.
    HooksRefused(String),
    /// The kernel refused an optional hook.
    EvidenceRefused(Evidence, String),
}

/// Loads the object with this plan's settings and attaches every planned program, the syscalls
/// by the first of `candidates` the kernel takes (`refused` gains the others' reasons).
fn load_and_attach(
    tracefs: &Tracefs,
    target_tgid: u32,
    stall_threshold: Duration,
    candidates: &[SyscallHooks],
    refused: &mut Vec<(SyscallHooks, String)>,
    btf: &mut KernelBtf,
    plan: &[(EvidenceStatus, Vec<Attachment>)],
) -> Result<Loaded> {
    let has = |e: Evidence| plan.iter().any(|(s, _)| s.evidence == e && s.available());
    let switch = tracefs.format("sched", "sched_switch")?;
    let add = tracefs.format("filemap", "mm_filemap_add_to_page_cache")?;
    // The syscall tracepoints' offsets (the classic path); defaults where they are missing.
    let syscall_offset = |event: &str, field: &str, default: u32| {
        tracefs.format("syscalls", event).ok().and_then(|f| f.field(field).map(|f| f.offset as u32)).unwrap_or(default)
    };
    // Optional events keep the defaults when absent; their programs are then not attached.
    let optional_offset = |category: &str, event: &str, field: &str, size: usize, default: u32| {
        tracefs
            .format(category, event)
            .ok()
            .and_then(|f| f.field(field).filter(|f| f.size == size).map(|f| f.offset as u32))
            .unwrap_or(default)
    };
    let default = Config::DEFAULT;
    // Everything the probes are told, written into their .rodata once, at load.
    let config = Config {
        stall_threshold_ns: stall_threshold.as_nanos().min(u64::MAX as u128) as u64,
        target_tgid,
        switch_prev_pid_offset: switch.offset_of("sched_switch", "prev_pid", 4)?,
        switch_prev_state_offset: switch.offset_of("sched_switch", "prev_state", 8)?,
        switch_next_pid_offset: switch.offset_of("sched_switch", "next_pid", 4)?,
        add_to_cache_order_offset: add.field("order").filter(|f| f.size == 1).map_or(u32::MAX, |f| f.offset as u32),
        add_to_cache_index_offset: add.offset_of("mm_filemap_add_to_page_cache", "index", 8)?,
        sys_exit_ret_offset: syscall_offset("sys_exit_read", "ret", default.sys_exit_ret_offset),
        sys_enter_args_offset: syscall_offset("sys_enter_read", "fd", default.sys_enter_args_offset),
        syscall_nr_offset: syscall_offset("sys_enter_read", "__syscall_nr", default.syscall_nr_offset),
        get_pages_inode_offset: optional_offset("filemap", "mm_filemap_get_pages", "i_ino", 8, default.get_pages_inode_offset),
        get_pages_dev_offset: optional_offset("filemap", "mm_filemap_get_pages", "s_dev", 4, default.get_pages_dev_offset),
        get_pages_index_offset: optional_offset("filemap", "mm_filemap_get_pages", "index", 8, default.get_pages_index_offset),
        get_pages_last_index_offset: optional_offset("filemap", "mm_filemap_get_pages", "last_index", 8, default.get_pages_last_index_offset),
        recv_sk_offset: optional_offset("sock", "sock_recv_length", "sk", 8, default.recv_sk_offset),
        data_ready_sk_offset: optional_offset("sock", "sk_data_ready", "skaddr", 8, default.data_ready_sk_offset),
        have_readahead_events: has(Evidence::Readahead) as u8,
        have_get_pages_events: has(Evidence::FileLookups) as u8,
        have_sock_events: has(Evidence::SocketReads) as u8,
        page_shift: procfs::page_size().trailing_zeros() as u8,
    };

    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new()
        // No CO-RE relocations: the kernel's BTF that new() parsed goes (fentry's attach
        // points are looked up in a copy of KernelBtf's, when fentry is tried).
        .btf(None)
        // must_exist, and aya checks the size against the symbol's: a probes object that does
        // not define CONFIG as this Config fails the load instead of running on defaults.
        .override_global(global::CONFIG, &config, true)
        .load(PROBES_OBJECT)
        .map_err(|e| {
            anyhow!(
                "cannot load kstall's eBPF probes: {e} (kstall needs root and Linux {}.{}+ with BPF, tested on 5.10 to 7.2; `kstall check` tells what this kernel lacks)",
                OLDEST_KERNEL.0,
                OLDEST_KERNEL.1
            )
        })?;

    set_syscall_ids(&mut ebpf)?;
    let evidence: Vec<(Evidence, &Attachment)> =
        plan.iter().flat_map(|(status, attachments)| attachments.iter().map(move |a| (status.evidence, a))).collect();
    for &hooks in candidates {
        if refused.iter().any(|(h, _)| *h == hooks) {
            continue;
        }
        match attach_with(&mut ebpf, hooks, &evidence, btf)? {
            Attempt::Attached(attached) => return Ok(Loaded::Attached(ebpf, hooks, attached)),
            Attempt::EvidenceRefused(evidence, why) => return Ok(Loaded::Refused(evidence, why)),
            Attempt::HooksRefused(why) => {
                // Detach and unload what this mechanism got; the next starts clean.
                for (_, program) in ebpf.programs_mut() {
                    unload(program);
                }
                refused.push((hooks, why));
            }
        }
    }
    let reasons: Vec<String> = refused.iter().map(|(h, why)| format!("{}: {why}", h.as_str())).collect();
    let hint = if candidates.len() == 1 { " (KSTALL_HOOKS chose it: unset KSTALL_HOOKS to let kstall pick)" } else { "" };
    bail!("cannot hook the broker's syscalls on this kernel{hint}: {}", reasons.join("; "))
}

/// Loads and attaches the programs of one syscall-hook mechanism and the planned evidence.
fn attach_with(ebpf: &mut Ebpf, hooks: SyscallHooks, evidence: &[(Evidence, &Attachment)], btf: &mut KernelBtf) -> Result<Attempt> {
    let required = required_attachments(hooks);
    let btf = match hooks {
        SyscallHooks::Fentry => match btf.get() {
            Ok(btf) => Some(btf),
            Err(why) => return Ok(Attempt::HooksRefused(why)),
        },
        _ => None,
    };
    // A kernel that refuses the mechanism refuses its smallest program as well: one first,
    // before the parallel load of all.
    if hooks != SyscallHooks::Tracepoint {
        let first = required.iter().find(|a| !matches!(a.hook, Hook::TailCall { .. })).expect("a syscall hook");
        if let Err(e) = load_programs(ebpf, &[first], btf) {
            return Ok(Attempt::HooksRefused(format!("{e:#}")));
        }
    }
    // Each attachment with the evidence it serves (None: required).
    let all: Vec<(Option<Evidence>, &Attachment)> =
        required.iter().map(|a| (None, a)).chain(evidence.iter().map(|&(e, a)| (Some(e), a))).collect();
    if let Err(e) = load_programs(ebpf, &all.iter().map(|(_, a)| *a).collect::<Vec<_>>(), btf) {
        if hooks == SyscallHooks::Tracepoint {
            bail!("{e:#}; please report it with the output of `kstall check --format json`");
        }
        return Ok(Attempt::HooksRefused(format!("{e:#}")));
    }
    let mut attached = Vec::new();
    for &(evidence, a) in &all {
        let result = match &a.hook {
            Hook::Tracepoint { category, event } => {
                let program: &mut TracePoint = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach(category, event).map(drop)
            }
            Hook::Kprobe { function } => {
                let program: &mut KProbe = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach(*function, 0).map(drop)
            }
            Hook::RawTracepoint { name, .. } => {
                let program: &mut RawTracePoint = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach(name).map(drop)
            }
            Hook::FEntry { .. } => {
                let program: &mut FEntry = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach().map(drop)
            }
            Hook::FExit { .. } => {
                let program: &mut FExit = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach().map(drop)
            }
            Hook::TailCall { index } => {
                let fd = program_mut(ebpf, &a.program)?.fd()?.try_clone()?;
                let m = ebpf.map_mut(map::EXIT_PROGRAMS).context("exit program map missing")?;
                let mut exits: ProgramArray<&mut MapData> = ProgramArray::try_from(m)?;
                exits.set(*index, &fd, 0).with_context(|| format!("cannot set exit program {index}"))?;
                continue;
            }
        };
        match (result, evidence) {
            (Ok(()), _) => attached.push(a.hook.to_string()),
            (Err(e), Some(evidence)) => return Ok(Attempt::EvidenceRefused(evidence, format!("the kernel refused {}: {e}", a.hook))),
            (Err(e), None) if hooks != SyscallHooks::Tracepoint => {
                return Ok(Attempt::HooksRefused(format!("the kernel refused {}: {e}", a.hook)));
            }
            (Err(e), None) => bail!("cannot attach to {}: {e}", a.hook),
        }
    }
    Ok(Attempt::Attached(attached))
}

/// Detaches and unloads a program, if loaded.
fn unload(program: &mut aya::programs::Program) {
    use aya::programs::Program as P;
    let _ = match program {
        P::TracePoint(p) => p.unload(),
        P::KProbe(p) => p.unload(),
        P::RawTracePoint(p) => p.unload(),
        P::FEntry(p) => p.unload(),
        P::FExit(p) => p.unload(),
        _ => Ok(()),
    };
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).with_context(|| format!("probe {name} missing from the embedded object: rebuild kstall"))
}

/// This architecture's number of a syscall (libc's for the target kstall is built for), None
/// for one the architecture does not have (arm64 has no epoll_wait: see `Syscall::TRACED`).
fn syscall_number(syscall: Syscall) -> Option<libc::c_long> {
    Some(match syscall {
        Syscall::Sendfile => libc::SYS_sendfile,
        Syscall::Read => libc::SYS_read,
        Syscall::Readv => libc::SYS_readv,
        Syscall::Pread64 => libc::SYS_pread64,
        Syscall::Write => libc::SYS_write,
        Syscall::Writev => libc::SYS_writev,
        Syscall::Pwrite64 => libc::SYS_pwrite64,
        #[cfg(target_arch = "x86_64")]
        Syscall::EpollWait => libc::SYS_epoll_wait,
        #[cfg(not(target_arch = "x86_64"))]
        Syscall::EpollWait => return None,
        Syscall::EpollPwait => libc::SYS_epoll_pwait,
        Syscall::Fsync => libc::SYS_fsync,
        Syscall::Fdatasync => libc::SYS_fdatasync,
    })
}

/// Tells the shared programs which syscall a number is.
fn set_syscall_ids(ebpf: &mut Ebpf) -> Result<()> {
    let m = ebpf.map_mut(map::SYSCALL_IDS).context("syscall id map missing")?;
    let mut ids: Array<&mut MapData, u8> = Array::try_from(m)?;
    for &syscall in Syscall::TRACED {
        let nr = syscall_number(syscall).with_context(|| format!("no syscall number for {} on this architecture", syscall.name()))?;
        ids.set(nr as u32, syscall as u8 + 1, 0)?;
    }
    ids.set(libc::SYS_close as u32, SYSCALL_ID_CLOSE, 0)?;
    Ok(())
}

/// Loads the planned programs not loaded yet on every CPU at once. Loading is mostly the
/// kernel's verifier, which checks each program on its own (the framing parsers of the read
/// and readv exits take tens of ms each): in parallel, startup takes about the longest of
/// them, not their sum. fentry and fexit programs are bound to their function at load (`btf`).
fn load_programs(ebpf: &mut Ebpf, plan: &[&Attachment], btf: Option<&Btf>) -> Result<()> {
    // Each program once, with the hook it is loaded for.
    let mut wanted: Vec<(&str, &Hook)> = Vec::new();
    for a in plan {
        if !wanted.iter().any(|(name, _)| *name == a.program) {
            wanted.push((a.program.as_str(), &a.hook));
        }
    }
    let mut programs: Vec<(&str, &Hook, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter_map(|(name, p)| wanted.iter().find(|(w, _)| *w == name).map(|&(w, hook)| (w, hook, p)))
        .collect();
    if programs.len() != wanted.len() {
        bail!("the embedded object lacks some of kstall's probes: rebuild kstall");
    }
    programs.retain(|(_, _, p)| p.fd().is_err());
    // The exit programs of reads, writes and sendfile hold the parsers and take longest:
    // first, so none starts last.
    let parsers = ["read", "readv", "sendfile", "write", "writev"];
    programs.sort_by_key(|(name, _, _)| !parsers.iter().any(|p| name.strip_suffix(p).is_some_and(|head| head.ends_with("exit_"))));
    let queue = std::sync::Mutex::new(programs.into_iter());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some((name, hook, program)) = queue.lock().expect("not poisoned").next() else {
                            return Ok(());
                        };
                        let function = match hook {
                            Hook::FEntry { function } | Hook::FExit { function } => function.as_str(),
                            _ => "",
                        };
                        let btf = || btf.context("fentry without the kernel's BTF");
                        let loaded = match program {
                            aya::programs::Program::TracePoint(p) => p.load(),
                            aya::programs::Program::KProbe(p) => p.load(),
                            aya::programs::Program::RawTracePoint(p) => p.load(),
                            aya::programs::Program::FEntry(p) => p.load(function, btf()?),
                            aya::programs::Program::FExit(p) => p.load(function, btf()?),
                            _ => bail!("probe {name} is of a kind kstall does not load"),
                        };
                        loaded.map_err(|e| anyhow!("the kernel refused probe {name} ({e})"))?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow!("a probe loader thread panicked"))?)
    })
}

/// BPF_MAP_LOOKUP_AND_DELETE_ELEM on a hash map (Linux 5.14+), which aya offers only for
/// queues and stacks; before 5.14, a lookup then a delete. Ok(None): the entry was already
/// gone; Err: it could not be taken (it stays in the map, and is counted as unread).
fn lookup_and_delete(fd: i32, key: &HistKey) -> std::io::Result<Option<LatencyHist>> {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    /// The kernel's own "not supported", which bpf(2) passes through.
    const ENOTSUPP: i32 = 524;
    /// The map-element part of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut value = LatencyHist::ZERO;
    let with_value = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key as *const HistKey as u64,
        value: &mut value as *mut LatencyHist as u64,
        flags: 0,
    };
    // The kernel refuses (EINVAL) an attr with anything set past the command's last field:
    // for BPF_MAP_DELETE_ELEM that is the key, so its value pointer must be zero. (Sent with
    // the value, the pre-5.14 delete failed on every call: 5.10 dropped the calls of every
    // thread that exited.)
    let key_only = ElemAttr { value: 0, ..with_value };
    let bpf = |cmd: libc::c_long, attr: &ElemAttr| {
        // SAFETY: the attr points at a live key (and value) of the map's sizes.
        match unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const ElemAttr, std::mem::size_of::<ElemAttr>()) } {
            0 => Ok(true),
            _ => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
                e => Err(e),
            },
        }
    };
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &with_value) {
        Ok(found) => return Ok(found.then_some(value)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP)) => {}
        Err(e) => return Err(e),
    }
    if !bpf(BPF_MAP_LOOKUP_ELEM, &with_value)? {
        return Ok(None);
    }
    // Gone between the lookup and the delete (a new thread with the tid cannot delete it):
    // the value read is what there was.
    bpf(BPF_MAP_DELETE_ELEM, &key_only)?;
    Ok(Some(value))
}

/// BPF_OBJ_GET_INFO_BY_FD on a program: its recursion_misses, 0 where unknown.
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// The info part of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: a plain C struct of integers; all zero is its empty value. Kernels that know
    // fewer fields take the zero tail and fill what they know.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: the attr points at a live, writable info of the length it names.
    let ok = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr as *const InfoAttr, std::mem::size_of::<InfoAttr>()) == 0 };
    if ok { info.recursion_misses } else { 0 }
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl Probes {
    fn histograms_map(&self) -> Result<BpfHashMap<&MapData, HistKey, LatencyHist>> {
        let m = self.ebpf.map(map::HISTOGRAMS).context("histogram map missing")?;
        Ok(BpfHashMap::try_from(m)?)
    }

    /// Every (thread, syscall, verdict) histogram the kernel holds now, and how many entries
    /// could not be read (an entry deleted while iterating is skipped, not counted).
    pub fn histograms(&self) -> Result<(Vec<(HistKey, LatencyHist)>, u64)> {
        let (mut entries, mut unread) = (Vec::new(), 0);
        for entry in self.histograms_map()?.iter() {
            match entry {
                Ok(entry) => entries.push(entry),
                // A failed key walk ends the iteration: what it did not reach counts as one.
                Err(_) => unread += 1,
            }
        }
        Ok((entries, unread))
    }

    /// Takes histograms out of the kernel: each entry's value as it was when deleted, so a call
    /// counted between an earlier read and the delete (a new thread that reused the tid) is
    /// kept. Entries already gone are skipped; those that could not be taken stay in the map
    /// (the next refresh tries again) and are listed as failed.
    pub fn take_histograms(&mut self, keys: &[HistKey]) -> Result<Taken> {
        let Some(aya::maps::Map::HashMap(m)) = self.ebpf.map(map::HISTOGRAMS) else {
            bail!("histogram map missing")
        };
        let fd = m.fd().as_fd().as_raw_fd();
        let mut taken = Taken { entries: Vec::with_capacity(keys.len()), failed: Vec::new() };
        for key in keys {
            match lookup_and_delete(fd, key) {
                Ok(Some(hist)) => taken.entries.push((*key, hist)),
                Ok(None) => {}
                Err(_) => taken.failed.push(*key),
            }
        }
        Ok(taken)
    }

    /// Tells the kernel which threads are network threads: their socket reads and writes are
    /// parsed as Kafka requests and responses, and their slow calls reported as stalls.
    pub fn set_network_threads(&mut self, tids: &[u32]) -> Result<()> {
        let mut tids = tids.to_vec();
        tids.sort_unstable();
        if tids == self.network_threads {
            return Ok(());
        }
        let m = self.ebpf.map_mut(map::NETWORK_THREADS).context("network thread map missing")?;
        // A thread's slot holds its tid: cleared slots first, then the live ones.
        let mut threads: Array<&mut MapData, u32> = Array::try_from(m)?;
        for &gone in self.network_threads.iter().filter(|t| tids.binary_search(t).is_err()) {
            threads.set(thread_slot(gone), 0, 0)?;
        }
        for &tid in &tids {
            threads.set(thread_slot(tid), tid, 0)?;
        }
        self.network_threads = tids;
        Ok(())
    }

    /// Hands every record waiting in the ring buffer to `f`, oldest first.
    pub fn drain_events(&mut self, mut f: impl FnMut(Event)) {
        while let Some(item) = self.events.next() {
            if let Some(event) = decode_event(&item) {
                f(event);
            }
        }
    }

    /// Runs of the probes the kernel skipped, summed over programs (bpf_prog_info's
    /// recursion_misses, 5.12+; 0 before). A tracepoint or kprobe program does not run on a CPU
    /// where another one runs or where a bpf() map syscall is in progress; on a preemptible
    /// kernel (full or lazy preemption, the default of recent ones) such a syscall can be
    /// preempted by a broker thread, whose calls on that CPU then go untraced. Each skipped run
    /// may miss a call, a request or a stall.
    pub fn probe_runs_skipped(&self) -> u64 {
        self.ebpf.programs().filter_map(|(_, p)| p.fd().ok()).map(|fd| recursion_misses(fd.as_fd())).sum()
    }

    /// Diagnostic counters summed over CPUs, indexed by `kstall_common::counter`.
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize]> {
        let m = self.ebpf.map(map::COUNTERS).context("counter map missing")?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(m)?;
        let mut sums = [0u64; counter::COUNT as usize];
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = counters.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers the kernel gives the traced syscalls on each architecture, from its tables
    /// (arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h for arm64),
    /// against what the probes are told: libc's for the target kstall was built for.
    #[test]
    fn syscall_numbers_are_this_architectures_kernels() {
        #[cfg(target_arch = "x86_64")]
        let kernel: &[(Syscall, libc::c_long)] = &[
            (Syscall::Sendfile, 40),
            (Syscall::Read, 0),
            (Syscall::Readv, 19),
            (Syscall::Pread64, 17),
            (Syscall::Write, 1),
            (Syscall::Writev, 20),
            (Syscall::Pwrite64, 18),
            (Syscall::EpollWait, 232),
            (Syscall::EpollPwait, 281),
            (Syscall::Fsync, 74),
            (Syscall::Fdatasync, 75),
        ];
        #[cfg(target_arch = "aarch64")]
        let kernel: &[(Syscall, libc::c_long)] = &[
            (Syscall::Sendfile, 71),
            (Syscall::Read, 63),
            (Syscall::Readv, 65),
            (Syscall::Pread64, 67),
            (Syscall::Write, 64),
            (Syscall::Writev, 66),
            (Syscall::Pwrite64, 68),
            (Syscall::EpollPwait, 22),
            (Syscall::Fsync, 82),
            (Syscall::Fdatasync, 83),
        ];
        let ours: Vec<(Syscall, libc::c_long)> = Syscall::TRACED.iter().map(|&s| (s, syscall_number(s).unwrap())).collect();
        assert_eq!(ours, kernel);
        // Untraced ones have no number, and every number fits the probes' id map.
        for s in Syscall::ALL {
            assert_eq!(syscall_number(s).is_some(), Syscall::TRACED.contains(&s), "{s:?}");
        }
        assert!(ours.iter().all(|&(_, nr)| (0..kstall_common::SYSCALL_NR_LIMIT as libc::c_long).contains(&nr)));
        // Every traced syscall gets its enter and exit tracepoint, and nothing else is planned.
        let syscall_hooks: Vec<String> = required_attachments(SyscallHooks::Tracepoint)
            .iter()
            .filter_map(|a| match &a.hook {
                Hook::Tracepoint { category: "syscalls", event } if event != "sys_enter_close" => Some(event.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(syscall_hooks.len(), 2 * Syscall::TRACED.len());
        #[cfg(target_arch = "aarch64")]
        assert!(!syscall_hooks.iter().any(|h| h.contains("epoll_wait")), "{syscall_hooks:?}");
        assert!(syscall_hooks.contains(&"sys_exit_epoll_pwait".to_string()));
    }

    /// Each mechanism hooks every traced syscall's entry and exit (and close), an exit before
    /// its entry; the rest of the plan is the same for all.
    #[test]
    fn every_mechanism_hooks_every_syscall_exit_first() {
        let common = |plan: &[Attachment]| -> Vec<String> {
            plan.iter()
                .filter(|a| matches!(&a.hook, Hook::Tracepoint { category, .. } if *category != "syscalls"))
                .map(|a| a.hook.to_string())
                .collect()
        };
        let tracepoints = required_attachments(SyscallHooks::Tracepoint);
        for hooks in SyscallHooks::BEST_FIRST {
            let plan = required_attachments(hooks);
            assert_eq!(common(&plan), ["sched:sched_switch", "filemap:mm_filemap_add_to_page_cache"], "{hooks:?}");
            let position = |hook: &str| plan.iter().position(|a| a.hook.to_string() == hook);
            match hooks {
                SyscallHooks::Fentry => {
                    for &s in Syscall::TRACED {
                        let function = syscall_function(s.tracepoint_name());
                        let (exit, entry) = (position(&format!("fexit:{function}")), position(&format!("fentry:{function}")));
                        assert!(exit.is_some() && exit < entry, "{s:?}");
                    }
                    assert!(position(&format!("fentry:{}", syscall_function("close"))).is_some());
                    #[cfg(target_arch = "x86_64")]
                    assert!(position("fentry:__x64_sys_sendfile64").is_some());
                }
                SyscallHooks::RawTracepoint => {
                    // Every exit program is in EXIT_PROGRAMS before sys_exit is attached.
                    let tail_calls: Vec<u32> = plan
                        .iter()
                        .filter_map(|a| match a.hook {
                            Hook::TailCall { index } => Some(index),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(tail_calls, Syscall::TRACED.iter().map(|&s| s as u32).collect::<Vec<_>>());
                    let last_tail_call = plan.iter().rposition(|a| matches!(a.hook, Hook::TailCall { .. }));
                    assert!(last_tail_call < position("raw_tracepoint:sys_exit"));
                    assert!(position("raw_tracepoint:sys_exit") < position("raw_tracepoint:sys_enter"));
                }
                SyscallHooks::Tracepoint => {
                    for &s in Syscall::TRACED {
                        let event = |phase: &str| format!("syscalls:sys_{phase}_{}", s.tracepoint_name());
                        assert!(position(&event("exit")).is_some() && position(&event("exit")) < position(&event("enter")), "{s:?}");
                    }
                    assert!(position("syscalls:sys_enter_close").is_some());
                }
            }
            // The programs named exist for every mechanism: the same names as the probes'
            // macro generates (checked against the object when loaded, in the system tests).
            assert!(plan.len() >= tracepoints.len() - Syscall::TRACED.len() + 1);
        }
    }

    #[test]
    fn kstall_hooks_picks_one_mechanism_or_says_what_it_takes() {
        // SAFETY: this test alone reads KSTALL_HOOKS.
        unsafe { std::env::set_var("KSTALL_HOOKS", "raw_tracepoint") };
        assert_eq!(syscall_hook_candidates().unwrap(), [SyscallHooks::RawTracepoint]);
        unsafe { std::env::set_var("KSTALL_HOOKS", "kprobe") };
        let e = syscall_hook_candidates().unwrap_err().to_string();
        assert!(e.contains("fentry, raw_tracepoint, tracepoint"), "{e}");
        unsafe { std::env::remove_var("KSTALL_HOOKS") };
        assert_eq!(syscall_hook_candidates().unwrap(), SyscallHooks::BEST_FIRST);
    }

    #[test]
    fn kernel_versions_parse_and_compare_with_the_floor() {
        assert_eq!(kernel_version("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.12.118+deb13-amd64"), Some((6, 12)));
        assert_eq!(kernel_version("4.18.0-553.el8_10.x86_64"), Some((4, 18)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("4.18.0").unwrap() < OLDEST_KERNEL);
        assert!(kernel_version("5.8.0").unwrap() >= OLDEST_KERNEL);
    }

    /// A tracefs with only the given events (an `id` file each, as the kernel's).
    fn fake_tracefs(events: &[(&str, &str)]) -> (std::path::PathBuf, Tracefs) {
        let root = std::env::temp_dir().join(format!("kstall-tracefs-{}-{}", std::process::id(), events.len()));
        let _ = std::fs::remove_dir_all(&root);
        for (category, event) in events {
            let dir = root.join("events").join(category).join(event);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("id"), "1\n").unwrap();
        }
        (root.clone(), Tracefs::new(root))
    }

    fn plan_of(plan: &[(EvidenceStatus, Vec<Attachment>)], e: Evidence) -> (Vec<String>, Option<String>) {
        let (status, attachments) = plan.iter().find(|(s, _)| s.evidence == e).unwrap();
        assert_eq!(status.hooks, attachments.iter().map(|a| a.hook.to_string()).collect::<Vec<_>>());
        (status.hooks.clone(), status.missing.clone())
    }

    #[test]
    fn evidence_takes_tracepoints_then_kprobes_then_says_what_is_missing() {
        // 6.18: every tracepoint; kprobes are never planned.
        let (root, all) = fake_tracefs(&[
            ("filemap", "mm_filemap_get_pages"),
            ("readahead", "page_cache_sync_ra"),
            ("readahead", "page_cache_async_ra"),
            ("sock", "sock_recv_length"),
            ("sock", "sk_data_ready"),
        ]);
        let plan = plan_evidence(&all, &Ok(()), &[]);
        assert_eq!(plan_of(&plan, Evidence::Readahead).0, ["readahead:page_cache_sync_ra", "readahead:page_cache_async_ra"]);
        assert_eq!(plan_of(&plan, Evidence::SocketReads).0, ["raw_tracepoint:sock_recv_length"]);
        assert_eq!(plan_of(&plan, Evidence::DataArrival).0, ["raw_tracepoint:sk_data_ready"]);
        std::fs::remove_dir_all(root).unwrap();

        // 5.10 with kprobes: none of those tracepoints.
        let (root, bare) = fake_tracefs(&[]);
        let plan = plan_evidence(&bare, &Ok(()), &[]);
        assert_eq!(plan_of(&plan, Evidence::Readahead).0, ["kprobe:page_cache_sync_ra", "kprobe:page_cache_async_ra"]);
        assert_eq!(plan_of(&plan, Evidence::SocketReads).0, ["kprobe:tcp_recvmsg"]);
        assert_eq!(plan_of(&plan, Evidence::DataArrival).0, ["kprobe:sock_def_readable"]);
        let (hooks, missing) = plan_of(&plan, Evidence::FileLookups);
        assert!(hooks.is_empty());
        assert_eq!(missing.unwrap(), "no tracepoint filemap:mm_filemap_get_pages (Linux 6.12+)");

        // 5.10 where kprobes are not allowed: each reason named.
        let no = Err("this kernel has no kprobes (CONFIG_KPROBES)".to_string());
        let plan = plan_evidence(&bare, &no, &[]);
        let (hooks, missing) = plan_of(&plan, Evidence::DataArrival);
        assert!(hooks.is_empty());
        assert_eq!(missing.unwrap(), "no tracepoint sock:sk_data_ready (Linux 6.3+); this kernel has no kprobes (CONFIG_KPROBES)");

        // A kprobe the kernel refused at attach: planned again without it.
        let refused = [(Evidence::SocketReads, "the kernel refused kprobe:tcp_recvmsg: ENOENT".to_string())];
        let plan = plan_evidence(&bare, &Ok(()), &refused);
        assert_eq!(plan_of(&plan, Evidence::SocketReads).1.unwrap(), refused[0].1);
        assert_eq!(plan_of(&plan, Evidence::DataArrival).0, ["kprobe:sock_def_readable"]);
        let _ = std::fs::remove_dir_all(root);
    }
}
