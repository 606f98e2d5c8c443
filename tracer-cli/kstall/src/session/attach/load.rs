//! Loading the embedded probes and attaching them: the object's settings for this kernel,
//! the parallel load (the verifier), and the fallbacks: a syscall-hook mechanism the kernel
//! refuses gives way to the next, an optional hook it refuses costs its evidence.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, ProgramArray, RingBuf},
    programs::{FEntry, FExit, KProbe, RawTracePoint, TracePoint},
};
use kstall_common::{Config, SYSCALL_ID_CLOSE, Syscall, global, map};
use kstall_core::kernel::{Evidence, EvidenceStatus, Hook, Probe, ProbeStatus, SyscallHookStatus, SyscallHooks};

use super::{
    Probes,
    capabilities::{KernelBtf, OLDEST_KERNEL, check_kernel_version, hooks_unusable, kprobes_allowed},
    catalog::{Attachment, Point, plan_evidence, required_attachments, sources, syscall_hook_candidates, syscall_number},
};
use crate::session::tracefs::{self, Tracefs};

static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kstall-probes"));

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
        if let Point::Tracepoint { category, event } = &a.point
            && !tracefs.has_event(category, event)
        {
            bail!("this kernel has no tracepoint {category}:{event}; kstall needs it (it needs a kernel built with CONFIG_TRACING=y)");
        }
    }
    let mut refused_hooks: Vec<(SyscallHooks, String)> =
        candidates.iter().filter_map(|&h| hooks_unusable(h, &tracefs).map(|why| (h, why))).collect();
    let mut btf = KernelBtf::NotRead;
    let unavailable: Vec<Hook> = Evidence::ALL
        .iter()
        .flat_map(|&e| sources(e))
        .flat_map(|(_, attachments)| attachments)
        .filter_map(|a| match &a.point {
            Point::Tracepoint { category, event } if !tracefs.has_event(category, event) => a.point.hook(),
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
                let events = ebpf.take_map(map::EVENTS).context("event ring buffer missing")?;
                let events = RingBuf::try_from(events)?;
                // Only the better ones than what is in use: a worse one was never tried.
                refused_hooks.retain(|(h, _)| *h < hooks);
                return Ok(Probes {
                    ebpf,
                    events,
                    network_threads: Vec::new(),
                    status: ProbeStatus {
                        syscall_hooks: SyscallHookStatus { hooks, not_used: refused_hooks },
                        attached,
                        unavailable,
                        evidence,
                        attach_ms: started.elapsed().as_secs_f64() * 1e3,
                    },
                });
            }
        }
    }
}

/// What one attempt at loading gave.
enum Loaded {
    /// Everything attached: the object, how the syscalls are hooked, and the probes.
    Attached(Ebpf, SyscallHooks, Vec<Probe>),
    /// The kernel refused an optional hook: try again without this evidence.
    Refused(Evidence, String),
}

/// What attaching with one syscall-hook mechanism gave.
enum Attempt {
    Attached(Vec<Probe>),
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
        let first = required.iter().find(|a| !matches!(a.point, Point::TailCall { .. })).expect("a syscall hook");
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
        let result = match &a.point {
            Point::Tracepoint { category, event } => {
                let program: &mut TracePoint = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach(category, event).map(drop)
            }
            Point::Kprobe { function } => {
                let program: &mut KProbe = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach(*function, 0).map(drop)
            }
            Point::RawTracepoint { name, .. } => {
                let program: &mut RawTracePoint = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach(name).map(drop)
            }
            Point::FEntry { .. } => {
                let program: &mut FEntry = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach().map(drop)
            }
            Point::FExit { .. } => {
                let program: &mut FExit = program_mut(ebpf, &a.program)?.try_into()?;
                program.attach().map(drop)
            }
            Point::TailCall { index } => {
                let fd = program_mut(ebpf, &a.program)?.fd()?.try_clone()?;
                let m = ebpf.map_mut(map::EXIT_PROGRAMS).context("exit program map missing")?;
                let mut exits: ProgramArray<&mut MapData> = ProgramArray::try_from(m)?;
                exits.set(*index, &fd, 0).with_context(|| format!("cannot set exit program {index}"))?;
                continue;
            }
        };
        match (result, evidence) {
            (Ok(()), _) => attached.extend(a.probe()),
            (Err(e), Some(evidence)) => return Ok(Attempt::EvidenceRefused(evidence, format!("the kernel refused {}: {e}", a.point))),
            (Err(e), None) if hooks != SyscallHooks::Tracepoint => {
                return Ok(Attempt::HooksRefused(format!("the kernel refused {}: {e}", a.point)));
            }
            (Err(e), None) => bail!("cannot attach to {}: {e}", a.point),
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
    let mut wanted: Vec<(&str, &Point)> = Vec::new();
    for a in plan {
        if !wanted.iter().any(|(name, _)| *name == a.program) {
            wanted.push((a.program.as_str(), &a.point));
        }
    }
    let mut programs: Vec<(&str, &Point, &mut aya::programs::Program)> = ebpf
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
                            Point::FEntry { function } | Point::FExit { function } => function.as_str(),
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


fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
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

