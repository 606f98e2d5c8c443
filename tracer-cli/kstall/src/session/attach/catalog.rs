//! The hook catalog and the plan: which program goes on which hook for each syscall-hook
//! mechanism and each kind of evidence, and which of them this kernel gets, from what tracefs
//! lists. Pure: nothing here loads or attaches (tests below run without root).
use anyhow::{Result, bail};
use kstall_common::Syscall;
use kstall_core::kernel::{Evidence, EvidenceStatus, Hook, Mechanism, Probe, SyscallHooks};

use crate::session::tracefs::Tracefs;

/// Where a program goes: a hook, as the loader needs it (a tracepoint's category apart, where
/// tracefs lists a raw tracepoint), or a tail-call slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Point {
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

impl Point {
    fn tracepoint(category: &'static str, event: &str) -> Point {
        Point::Tracepoint { category, event: event.to_string() }
    }

    /// The hook, as the status reports it; None for a tail-call slot, which is no hook.
    pub(super) fn hook(&self) -> Option<Hook> {
        Some(match self {
            Point::Tracepoint { category, event } => Hook::tracepoint(category, event),
            Point::Kprobe { function } => Hook::new(Mechanism::Kprobe, *function),
            Point::RawTracepoint { name, .. } => Hook::new(Mechanism::RawTracepoint, *name),
            Point::FEntry { function } => Hook::new(Mechanism::Fentry, function.clone()),
            Point::FExit { function } => Hook::new(Mechanism::Fexit, function.clone()),
            Point::TailCall { .. } => return None,
        })
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.hook(), self) {
            (Some(hook), _) => hook.fmt(f),
            (None, Point::TailCall { index }) => write!(f, "tail call {index}"),
            (None, _) => unreachable!("only a tail call has no hook"),
        }
    }
}

/// A probe program and the hook it goes on.
#[derive(Clone, Debug)]
pub(super) struct Attachment {
    pub(super) program: String,
    pub(super) point: Point,
}

impl Attachment {
    /// The probe it makes once attached; None for a tail call.
    pub(super) fn probe(&self) -> Option<Probe> {
        Some(Probe { hook: self.point.hook()?, program: self.program.clone() })
    }
}

/// The kernel function of a syscall (`__x64_sys_read`): what fentry and fexit attach to. The
/// syscall wrappers take the caller's `struct pt_regs`, on x86_64 since 4.17, on arm64 since 4.19.
pub(super) fn syscall_function(tracepoint_name: &str) -> String {
    #[cfg(target_arch = "x86_64")]
    const PREFIX: &str = "__x64_sys_";
    #[cfg(target_arch = "aarch64")]
    const PREFIX: &str = "__arm64_sys_";
    format!("{PREFIX}{tracepoint_name}")
}

/// What kstall cannot work without: syscall latency (by `hooks`), off-CPU and D-state time,
/// pages added. In attach order: an exit hook before its entry hook, so no call is entered
/// without its exit being seen (the raw path's exit programs even before that).
pub(super) fn required_attachments(hooks: SyscallHooks) -> Vec<Attachment> {
    let mut plan = Vec::new();
    let tp = |program: &str, category, event: &str| Attachment { program: program.into(), point: Point::tracepoint(category, event) };
    match hooks {
        SyscallHooks::Fentry => {
            for &syscall in Syscall::TRACED {
                let function = syscall_function(syscall.tracepoint_name());
                plan.push(Attachment { program: format!("fexit_{}", syscall.name()), point: Point::FExit { function: function.clone() } });
                plan.push(Attachment { program: format!("fentry_{}", syscall.name()), point: Point::FEntry { function } });
            }
            plan.push(Attachment { program: "fentry_close".into(), point: Point::FEntry { function: syscall_function("close") } });
        }
        SyscallHooks::RawTracepoint => {
            for &syscall in Syscall::TRACED {
                plan.push(Attachment { program: format!("raw_exit_{}", syscall.name()), point: Point::TailCall { index: syscall as u32 } });
            }
            plan.push(Attachment { program: "raw_exit".into(), point: Point::RawTracepoint { category: "raw_syscalls", name: "sys_exit" } });
            plan.push(Attachment { program: "raw_enter".into(), point: Point::RawTracepoint { category: "raw_syscalls", name: "sys_enter" } });
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
pub(super) fn syscall_hook_candidates() -> Result<Vec<SyscallHooks>> {
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
pub(super) fn sources(evidence: Evidence) -> Vec<(&'static str, Vec<Attachment>)> {
    let tp = |program: &str, category, event: &str| Attachment { program: program.into(), point: Point::tracepoint(category, event) };
    let kp = |program: &str, function| Attachment { program: program.into(), point: Point::Kprobe { function } };
    let raw = |program: &str, category: &'static str, name: &'static str| Attachment {
        program: program.into(),
        point: Point::RawTracepoint { category, name },
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


/// The evidence each optional kind gets on this kernel: the first source whose hooks all
/// exist, as far as can be told before loading.
pub(super) fn plan_evidence(
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
                    .filter(|a| match &a.point {
                        Point::Tracepoint { category, event } => !tracefs.has_event(category, event),
                        Point::RawTracepoint { category, name } => !tracefs.has_event(category, name),
                        Point::Kprobe { .. } => kprobes.is_err(),
                        // Evidence comes from tracepoints, raw tracepoints and kprobes only.
                        _ => true,
                    })
                    .collect();
                match absent.first() {
                    None => {
                        status.hooks = attachments.iter().filter_map(|a| a.point.hook()).collect();
                        return (status, attachments);
                    }
                    Some(a) if matches!(a.point, Point::Kprobe { .. }) => {
                        reasons.push(kprobes.clone().err().unwrap_or_default());
                    }
                    Some(a) => {
                        let event = match &a.point {
                            Point::RawTracepoint { category, name } => format!("{category}:{name}"),
                            point => point.to_string(),
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


/// This architecture's number of a syscall (libc's for the target kstall is built for), None
/// for one the architecture does not have (arm64 has no epoll_wait: see `Syscall::TRACED`).
pub(super) fn syscall_number(syscall: Syscall) -> Option<libc::c_long> {
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
            .filter_map(|a| match &a.point {
                Point::Tracepoint { category: "syscalls", event } if event != "sys_enter_close" => Some(event.clone()),
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
                .filter(|a| matches!(&a.point, Point::Tracepoint { category, .. } if *category != "syscalls"))
                .map(|a| a.point.to_string())
                .collect()
        };
        let tracepoints = required_attachments(SyscallHooks::Tracepoint);
        for hooks in SyscallHooks::BEST_FIRST {
            let plan = required_attachments(hooks);
            assert_eq!(common(&plan), ["sched:sched_switch", "filemap:mm_filemap_add_to_page_cache"], "{hooks:?}");
            let position = |hook: &str| plan.iter().position(|a| a.point.to_string() == hook);
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
                        .filter_map(|a| match a.point {
                            Point::TailCall { index } => Some(index),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(tail_calls, Syscall::TRACED.iter().map(|&s| s as u32).collect::<Vec<_>>());
                    let last_tail_call = plan.iter().rposition(|a| matches!(a.point, Point::TailCall { .. }));
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
            assert!(plan.len() > tracepoints.len() - Syscall::TRACED.len());
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
        assert_eq!(status.hooks, attachments.iter().filter_map(|a| a.point.hook()).collect::<Vec<_>>());
        (status.hooks.iter().map(|h| h.to_string()).collect(), status.missing.clone())
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

