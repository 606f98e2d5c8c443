//! The traced syscalls' entry and exit: each call's time, its page-cache verdict from the
//! evidence gathered meanwhile, the per-thread histograms, and on network threads the stall
//! records and the Kafka framing.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use kstall_common::{
    CacheResult, CallEvidence, EvidenceSources, HistKey, Syscall, bucket_index, classify_file_read, counter,
};

use crate::{
    config::{CONFIG, global},
    inflight::{InFlight, broker_tid, is_network_thread, page_shift, slot},
    kafka::follow_protocol,
    maps::{IN_FLIGHT_OVERFLOW, SYSCALL_IDS, bump, histogram},
    records::send_stall,
};

#[inline(always)]
fn on_enter(ctx: &TracePointContext, tid: u32, syscall: Syscall) {
    let Some(s) = slot(tid) else { return };
    let s = unsafe { &mut *s };
    // One read for the four arguments: each read is a helper call.
    let args: [u64; 4] = unsafe { ctx.read_at(global(&CONFIG.sys_enter_args_offset) as usize) }.unwrap_or([0; 4]);
    let call = InFlight {
        start_ns: unsafe { bpf_ktime_get_ns() },
        switched_out_ns: 0,
        off_cpu_ns: 0,
        evidence: CallEvidence {
            get_pages: 0,
            sync_readahead: 0,
            async_readahead: 0,
            pages_added: 0,
            wanted_pages_added: 0,
            _pad: 0,
            blocked_ns: 0,
        },
        wanted_first: 1,
        wanted_last: 0,
        args,
        sk: 0,
        arrival_ns: 0,
        inode: 0,
        first_index: 0,
        last_index: 0,
        dev: 0,
        syscall: syscall as u8,
        switched_out_blocked: 0,
        overflowed: s.overflowed,
        _pad: 0,
        tid,
    };
    let mut call = call;
    // The pages a file read asks for: (offset, count) of sendfile(out, in, *offset, count)
    // and pread64(fd, buf, count, offset). A sendfile from the file position (NULL
    // offset) leaves them unknown.
    let wanted = match syscall {
        Syscall::Sendfile if args[1] != 0 && args[2] != 0 => {
            unsafe { bpf_probe_read_user(args[2] as *const i64) }.ok().map(|offset| (offset as u64, args[3]))
        }
        Syscall::Pread64 => Some((args[3], args[2])),
        _ => None,
    };
    if let Some((offset, count)) = wanted {
        if count > 0 {
            call.wanted_first = offset >> page_shift();
            call.wanted_last = offset.wrapping_add(count - 1) >> page_shift();
        }
    }
    // A slot held by a live call of another thread: this call goes to the overflow map.
    // (A thread that died inside a call leaves its slot held; later threads overflow.)
    if s.tid != 0 && s.tid != tid {
        s.overflowed = 1;
        if IN_FLIGHT_OVERFLOW.insert(tid, call, 0).is_err() {
            bump(counter::IN_FLIGHT_MAP_FULL);
        }
        return;
    }
    *s = call;
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, tid: u32, syscall: Syscall) {
    let Some(s) = slot(tid) else { return };
    let call = unsafe {
        if (*s).tid == tid {
            (*s).tid = 0;
            *s
        } else if (*s).overflowed != 0 {
            let Some(held) = IN_FLIGHT_OVERFLOW.get_ptr(tid) else { return };
            let call = *held;
            let _ = IN_FLIGHT_OVERFLOW.remove(tid);
            call
        } else {
            return;
        }
    };
    // A call entered before we attached, or an exit we did not see: nothing to measure.
    if call.syscall != syscall as u8 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let duration_ns = now.saturating_sub(call.start_ns);
    let ret: i64 = unsafe { ctx.read_at(global(&CONFIG.sys_exit_ret_offset) as usize) }.unwrap_or(0);
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
        send_stall(tid, syscall, cache, &call, duration_ns, ret);
    }
    // File reads are not protocol, except sendfile: it reads the file *and* writes the socket.
    if network && ret > 0 && (cache == CacheResult::NoFileRead || syscall == Syscall::Sendfile) {
        follow_protocol(tid, syscall, &call, ret as u64, now);
    }
}

/// The traced syscall a sys_enter_* or sys_exit_* event is for.
#[inline(always)]
fn traced_syscall(ctx: &TracePointContext) -> Option<Syscall> {
    let nr: i32 = unsafe { ctx.read_at(global(&CONFIG.syscall_nr_offset) as usize) }.ok()?;
    let id = *SYSCALL_IDS.get(nr as u32)?;
    Syscall::from_u8(id.wrapping_sub(1))
}

/// sys_enter_* of every traced syscall.
#[tracepoint]
pub fn enter_syscall(ctx: TracePointContext) -> u32 {
    if let Some(tid) = broker_tid() {
        if let Some(syscall) = traced_syscall(&ctx) {
            on_enter(&ctx, tid, syscall);
        }
    }
    0
}

/// sys_exit_*: one program per syscall, the syscall a constant, so each program holds only
/// its own path (a program shared by read and readv would make the verifier walk the
/// parser twice).
macro_rules! exit_probes {
    ($($(#[$attr:meta])* $syscall:ident => $name:ident;)*) => {$(
        $(#[$attr])*
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            if let Some(tid) = broker_tid() {
                on_exit(&ctx, tid, Syscall::$syscall);
            }
            0
        }
    )*};
}

exit_probes! {
    Sendfile => exit_sendfile;
    Read => exit_read;
    Readv => exit_readv;
    Write => exit_write;
    Writev => exit_writev;
    Pread64 => exit_pread64;
    Pwrite64 => exit_pwrite64;
    // Syscall::TRACED: arm64 has no epoll_wait.
    #[cfg(not(bpf_target_arch = "aarch64"))]
    EpollWait => exit_epoll_wait;
    EpollPwait => exit_epoll_pwait;
    Fsync => exit_fsync;
    Fdatasync => exit_fdatasync;
}
