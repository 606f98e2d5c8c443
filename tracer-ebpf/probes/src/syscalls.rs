//! The traced syscalls' entry and exit: each call's time, its page-cache verdict from the
//! evidence gathered meanwhile, the per-thread histograms, and on network threads the stall
//! records and the Kafka framing.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::{fentry, fexit, raw_tracepoint, tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext, TracePointContext},
};
use kstall_common::{
    CacheResult, EvidenceSources, HistKey, SYSCALL_ID_CLOSE, SYSCALL_NR_LIMIT, Syscall, bucket_index,
    classify_file_read, counter,
};

use crate::{
    config::{CONFIG, global},
    inflight::{InFlight, broker_tid, call_of, is_network_thread, page_shift, slot},
    kafka::{follow_protocol, forget_connection},
    maps::{EXIT_PROGRAMS, IN_FLIGHT_OVERFLOW, SYSCALL_IDS, bump, histogram},
    mem::{copy_words, zero_words},
    records::send_stall,
};

/// A traced call begins: `args` are its first four arguments.
#[inline(always)]
fn on_enter(args: [u64; 4], tid: u32, syscall: Syscall) {
    let Some(s) = slot(tid) else { return };
    let now = unsafe { bpf_ktime_get_ns() };
    // The pages a file read asks for: (offset, count) of sendfile(out, in, *offset, count)
    // and pread64(fd, buf, count, offset). A sendfile from the file position (NULL
    // offset) leaves them unknown (last < first).
    let wanted = match syscall {
        Syscall::Sendfile if args[1] != 0 && args[2] != 0 => {
            unsafe { bpf_probe_read_user(args[2] as *const i64) }.ok().map(|offset| (offset as u64, args[3]))
        }
        Syscall::Pread64 => Some((args[3], args[2])),
        _ => None,
    };
    let (mut wanted_first, mut wanted_last) = (1, 0);
    if let Some((offset, count)) = wanted {
        if count > 0 {
            wanted_first = offset >> page_shift();
            wanted_last = offset.wrapping_add(count - 1) >> page_shift();
        }
    }
    unsafe {
        // A slot held by a live call of another thread: this call goes to the overflow map.
        // (A thread that died inside a call leaves its slot held; later threads overflow.)
        if (*s).tid != 0 && (*s).tid != tid {
            (*s).overflowed = 1;
            let mut call = core::mem::MaybeUninit::<InFlight>::uninit();
            begin(call.as_mut_ptr(), tid, syscall, &args, now, wanted_first, wanted_last, 0);
            if IN_FLIGHT_OVERFLOW.insert(tid, call.assume_init_ref(), 0).is_err() {
                bump(counter::IN_FLIGHT_MAP_FULL);
            }
            return;
        }
        let overflowed = (*s).overflowed;
        begin(s, tid, syscall, &args, now, wanted_first, wanted_last, overflowed);
    }
}

/// Writes every field of a call in progress (in its slot, or on the stack for the overflow
/// map): cleared a word at a time, then the fields that are not zero.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn begin(call: *mut InFlight, tid: u32, syscall: Syscall, args: &[u64; 4], now: u64, wanted_first: u64, wanted_last: u64, overflowed: u8) {
    zero_words(call);
    unsafe {
        (*call).start_ns = now;
        copy_words(&raw mut (*call).args, args);
        (*call).wanted_first = wanted_first;
        (*call).wanted_last = wanted_last;
        (*call).syscall = syscall as u8;
        (*call).overflowed = overflowed;
        (*call).tid = tid;
    }
}

/// A traced call returns `ret`: read in place (in its slot or the overflow map), then freed.
#[inline(always)]
fn on_exit(ret: i64, tid: u32, syscall: Syscall) {
    let Some(s) = slot(tid) else { return };
    let (call, in_slot) = unsafe {
        if (*s).tid == tid {
            (s, true)
        } else if (*s).overflowed != 0 {
            match IN_FLIGHT_OVERFLOW.get_ptr_mut(tid) {
                Some(held) => (held, false),
                None => return,
            }
        } else {
            return;
        }
    };
    // One call site, so the verifier walks the exit path once.
    finish(unsafe { &mut *call }, ret, tid, syscall);
    if in_slot {
        unsafe { (*s).tid = 0 };
    } else {
        let _ = IN_FLIGHT_OVERFLOW.remove(tid);
    }
}

#[inline(always)]
fn finish(call: &mut InFlight, ret: i64, tid: u32, syscall: Syscall) {
    // A call entered before we attached, or an exit we did not see: nothing to measure.
    if call.syscall != syscall as u8 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let duration_ns = now.saturating_sub(call.start_ns);
    // Switched out, and running again (it returns), but its switch back in was not seen: on
    // 6.18 beside raw syscall tracepoints the kernel now and then runs no sched_switch program
    // for it and counts no skipped run (a sendfile that waited 8 ms for readahead in D state
    // came out on-CPU and a hit). It was away from its switch out until about now: counted so
    // (blocked, if it went out in D), and counted as missed.
    if call.switched_in(now) {
        bump(counter::SWITCH_INS_MISSED);
    }
    let sources = EvidenceSources {
        readahead: global(&CONFIG.have_readahead_events) != 0,
        file_lookups: global(&CONFIG.have_get_pages_events) != 0,
    };
    let cache = classify_file_read(syscall, &call.evidence, sources, ret > 0);
    let key = HistKey { tid, syscall: syscall as u8, cache: cache as u8, _pad: [0; 2] };
    let Some(hist) = histogram(&key) else {
        bump(counter::HIST_MAP_FULL);
        return;
    };
    // Only this thread writes this key, so plain adds do not race.
    let hist = unsafe { &mut *hist };
    let bucket = bucket_index(duration_ns);
    if let Some(b) = hist.buckets.get_mut(bucket) {
        *b += 1;
    }
    hist.count += 1;
    hist.total_ns += duration_ns;
    if duration_ns > hist.max_ns {
        hist.max_ns = duration_ns;
    }
    if ret > 0 && syscall.returns_bytes() {
        hist.bytes += ret as u64;
    }
    hist.pages_added += call.evidence.pages_added as u64;
    hist.blocked_ns += call.evidence.blocked_ns;

    let network = is_network_thread(tid);
    let idle_wait = matches!(syscall, Syscall::EpollWait | Syscall::EpollPwait);
    let miss = cache == CacheResult::Miss;
    if (network && !idle_wait && (miss || duration_ns >= global(&CONFIG.stall_threshold_ns)))
        || (miss && syscall == Syscall::Sendfile)
    {
        send_stall(tid, syscall, cache, call, duration_ns, ret);
    }
    // File reads are not protocol, except sendfile: it reads the file *and* writes the socket.
    if network && ret > 0 && (cache == CacheResult::NoFileRead || syscall == Syscall::Sendfile) {
        follow_protocol(tid, syscall, call, ret as u64, now);
    }
}

// Three ways to reach the same two functions, one per hook mechanism (user space picks the
// cheapest the kernel allows, see tracer-cli/kstall's attach.rs):
// - fentry/fexit on each syscall's own kernel function (`__x64_sys_read`): run only for that
//   syscall, set no global flag, and fexit has the arguments and the return value;
// - raw tracepoints `sys_enter`/`sys_exit`: no perf record built per event, but they run for
//   every syscall of every task (and make every task take the syscall slow path), so the
//   broker filter comes first, and the exit tail-calls the traced syscall's own exit program;
// - the classic `syscalls:sys_{enter,exit}_<name>` tracepoints, on every kernel.

/// A traced syscall by the syscall-id map: Some(Ok) a traced one, Some(Err(())) close.
#[inline(always)]
fn syscall_of_nr(nr: u64) -> Option<Result<Syscall, ()>> {
    if nr >= SYSCALL_NR_LIMIT as u64 {
        return None;
    }
    let id = *SYSCALL_IDS.get(nr as u32)?;
    if id == SYSCALL_ID_CLOSE {
        return Some(Err(()));
    }
    Syscall::from_u8(id.wrapping_sub(1)).map(Ok)
}

/// The first four arguments of a syscall from the registers it was entered with (`struct
/// pt_regs`: the ptrace ABI on x86_64; on arm64 it begins with `user_pt_regs`, x0-x30), in one
/// helper call.
#[inline(always)]
fn entry_args(regs: u64) -> [u64; 4] {
    #[cfg(bpf_target_arch = "aarch64")]
    {
        unsafe { bpf_probe_read_kernel(regs as *const [u64; 4]) }.unwrap_or([0; 4])
    }
    #[cfg(not(bpf_target_arch = "aarch64"))]
    {
        // r10 at 56, r9, r8, ax, cx, dx, si, di at 112: arguments 4, -, -, -, -, 3, 2, 1.
        let r: [u64; 8] = unsafe { bpf_probe_read_kernel((regs + 56) as *const [u64; 8]) }.unwrap_or([0; 8]);
        [r[7], r[6], r[5], r[0]]
    }
}

/// The `struct pt_regs *` a syscall function (`__x64_sys_read(regs)`) was called with, from an
/// fentry program's context. Read with a helper, not loaded: where the function's BTF has
/// pt_regs only as a forward declaration (5.10's `__x64_sys_epoll_wait`), kernels before 5.13
/// refuse a direct load of the argument ("arg0 type FWD is not a struct").
#[inline(always)]
fn regs_arg(ctx: *mut core::ffi::c_void) -> u64 {
    unsafe { bpf_probe_read_kernel(ctx as *const u64) }.unwrap_or(0)
}

/// sys_enter_* of every traced syscall (classic tracepoints).
#[tracepoint]
pub fn enter_syscall(ctx: TracePointContext) -> u32 {
    if let Some(tid) = broker_tid() {
        let nr: i32 = unsafe { ctx.read_at(global(&CONFIG.syscall_nr_offset) as usize) }.unwrap_or(-1);
        if let Some(Ok(syscall)) = syscall_of_nr(nr as u64) {
            // One read for the four arguments: each read is a helper call.
            let args: [u64; 4] = unsafe { ctx.read_at(global(&CONFIG.sys_enter_args_offset) as usize) }.unwrap_or([0; 4]);
            on_enter(args, tid, syscall);
        }
    }
    0
}

/// Raw tracepoint sys_enter(regs, id): every syscall of every task.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_enter(ctx: RawTracePointContext) -> i32 {
    let Some(tid) = broker_tid() else { return 0 };
    match syscall_of_nr(ctx.arg::<u64>(1)) {
        Some(Ok(syscall)) => on_enter(entry_args(ctx.arg(0)), tid, syscall),
        other => {
            // Any other syscall: a call still in this thread's slot is one whose exit was
            // not seen (a run the kernel skipped), and must not be taken for this one's.
            if let Some(s) = slot(tid) {
                unsafe {
                    if (*s).tid == tid {
                        (*s).tid = 0;
                    } else if (*s).overflowed != 0 {
                        let _ = IN_FLIGHT_OVERFLOW.remove(tid);
                    }
                }
            }
            if other.is_some() {
                forget_connection(entry_args(ctx.arg(0))[0]);
            }
        }
    }
    0
}

/// Raw tracepoint sys_exit(regs, ret): every syscall of every task. A broker thread with a
/// traced call in progress goes on in that syscall's exit program (EXIT_PROGRAMS), so each
/// program holds one syscall's path, as on the other mechanisms.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_exit(ctx: RawTracePointContext) -> i32 {
    let Some(tid) = broker_tid() else { return 0 };
    let Some(call) = call_of(tid) else { return 0 };
    let syscall = unsafe { (*call).syscall };
    // The call in the slot is this syscall's: sys_exit is attached before sys_enter, and
    // raw_enter frees a slot whose exit was not seen at the thread's next syscall.
    // Does not return: user space fills every traced syscall's entry before attaching, and
    // fails if it cannot.
    unsafe { EXIT_PROGRAMS.tail_call(&ctx, syscall as u32) };
    0
}

/// Each traced syscall's exit on each mechanism, the syscall a constant, so each program holds
/// only its own path (a program shared by read and readv would make the verifier walk the
/// parser twice); and its fentry program.
macro_rules! syscall_probes {
    ($($(#[$attr:meta])* $syscall:ident => $exit:ident, $raw_exit:ident, $fentry:ident, $fexit:ident;)*) => {$(
        /// sys_exit_* (classic tracepoint).
        $(#[$attr])*
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            if let Some(tid) = broker_tid() {
                let ret: i64 = unsafe { ctx.read_at(global(&CONFIG.sys_exit_ret_offset) as usize) }.unwrap_or(0);
                on_exit(ret, tid, Syscall::$syscall);
            }
            0
        }

        /// Tail-called by raw_exit (EXIT_PROGRAMS[syscall]).
        $(#[$attr])*
        #[raw_tracepoint]
        pub fn $raw_exit(ctx: RawTracePointContext) -> i32 {
            if let Some(tid) = broker_tid() {
                on_exit(ctx.arg(1), tid, Syscall::$syscall);
            }
            0
        }

        /// fentry on the syscall's function (`__x64_sys_*(const struct pt_regs *regs)`).
        $(#[$attr])*
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> i32 {
            if let Some(tid) = broker_tid() {
                on_enter(entry_args(regs_arg(ctx.as_ptr())), tid, Syscall::$syscall);
            }
            0
        }

        /// fexit on the syscall's function: (regs, ret).
        $(#[$attr])*
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            if let Some(tid) = broker_tid() {
                on_exit(ctx.arg(1), tid, Syscall::$syscall);
            }
            0
        }
    )*};
}

syscall_probes! {
    Sendfile => exit_sendfile, raw_exit_sendfile, fentry_sendfile, fexit_sendfile;
    Read => exit_read, raw_exit_read, fentry_read, fexit_read;
    Readv => exit_readv, raw_exit_readv, fentry_readv, fexit_readv;
    Write => exit_write, raw_exit_write, fentry_write, fexit_write;
    Writev => exit_writev, raw_exit_writev, fentry_writev, fexit_writev;
    Pread64 => exit_pread64, raw_exit_pread64, fentry_pread64, fexit_pread64;
    Pwrite64 => exit_pwrite64, raw_exit_pwrite64, fentry_pwrite64, fexit_pwrite64;
    // Syscall::TRACED: arm64 has no epoll_wait.
    #[cfg(not(bpf_target_arch = "aarch64"))]
    EpollWait => exit_epoll_wait, raw_exit_epoll_wait, fentry_epoll_wait, fexit_epoll_wait;
    EpollPwait => exit_epoll_pwait, raw_exit_epoll_pwait, fentry_epoll_pwait, fexit_epoll_pwait;
    Fsync => exit_fsync, raw_exit_fsync, fentry_fsync, fexit_fsync;
    Fdatasync => exit_fdatasync, raw_exit_fdatasync, fentry_fdatasync, fexit_fdatasync;
}

/// fentry on close's function: the fd's connection state goes.
#[fentry]
pub fn fentry_close(ctx: FEntryContext) -> i32 {
    if broker_tid().is_some() {
        forget_connection(entry_args(regs_arg(ctx.as_ptr()))[0]);
    }
    0
}
