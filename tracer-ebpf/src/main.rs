//! kstall's kernel side: latency histograms of the broker's syscalls, per thread, with a
//! page-cache hit/miss verdict for every file read, aggregated in the kernel. No per-syscall
//! event reaches user space. Only the classic and syscall tracepoints are used, so it loads on
//! kernels without kprobes or fentry; field offsets come from user space (tracefs `format`).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod probes {
    use aya_ebpf::{
        bindings::BPF_NOEXIST,
        helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
        macros::{map, tracepoint},
        maps::{Array, HashMap, PerCpuArray},
        programs::TracePointContext,
    };
    use kstall_ebpf::{
        CallEvidence, HIST_MAX_ENTRIES, HistKey, IN_FLIGHT_MAX_ENTRIES, LatencyHist, Syscall,
        bucket_index, classify_file_read, counter,
    };

    // Set by user space at load time (see kstall_ebpf::global).
    #[unsafe(no_mangle)]
    static TARGET_TGID: u32 = 0;
    #[unsafe(no_mangle)]
    static HAVE_READAHEAD_EVENTS: u8 = 0;
    #[unsafe(no_mangle)]
    static SWITCH_PREV_PID_OFFSET: u32 = 24;
    #[unsafe(no_mangle)]
    static SWITCH_PREV_STATE_OFFSET: u32 = 32;
    #[unsafe(no_mangle)]
    static SWITCH_NEXT_PID_OFFSET: u32 = 56;
    /// u32::MAX: the event has no `order` field (one page per event).
    #[unsafe(no_mangle)]
    static ADD_TO_CACHE_ORDER_OFFSET: u32 = u32::MAX;
    #[unsafe(no_mangle)]
    static SYS_EXIT_RET_OFFSET: u32 = 16;

    /// TASK_UNINTERRUPTIBLE as reported in sched_switch's prev_state.
    const TASK_UNINTERRUPTIBLE: i64 = 0x2;

    /// A traced syscall in progress on one thread, and the evidence gathered during it.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct InFlight {
        start_ns: u64,
        /// Set while the thread sleeps in D state, 0 otherwise.
        blocked_since_ns: u64,
        evidence: CallEvidence,
        syscall: u8,
        _pad: [u8; 7],
    }

    #[map]
    static IN_FLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(IN_FLIGHT_MAX_ENTRIES, 0);

    /// Created on first use per (thread, syscall, verdict); BPF_F_NO_PREALLOC keeps memory
    /// proportional to what the broker actually does.
    #[map]
    static HISTOGRAMS: HashMap<HistKey, LatencyHist> =
        HashMap::with_max_entries(HIST_MAX_ENTRIES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

    /// Source of a zeroed histogram for inserts: too large for the 512-byte BPF stack.
    #[map]
    static ZERO_HIST: Array<LatencyHist> = Array::with_max_entries(1, 0);

    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

    #[inline(always)]
    fn global<T: Copy>(v: &T) -> T {
        // Volatile so the compiler keeps the load; the loader rewrites the value in .rodata.
        unsafe { core::ptr::read_volatile(v) }
    }

    /// This thread's tid when it belongs to the broker, else None.
    #[inline(always)]
    fn broker_tid() -> Option<u32> {
        let pid_tgid = bpf_get_current_pid_tgid();
        if (pid_tgid >> 32) as u32 == global(&TARGET_TGID) { Some(pid_tgid as u32) } else { None }
    }

    #[inline(always)]
    fn bump(counter: u32) {
        if let Some(c) = COUNTERS.get_ptr_mut(counter) {
            unsafe { *c += 1 };
        }
    }

    #[inline(always)]
    fn on_enter(syscall: Syscall) {
        let Some(tid) = broker_tid() else { return };
        let call = InFlight {
            start_ns: unsafe { bpf_ktime_get_ns() },
            blocked_since_ns: 0,
            evidence: CallEvidence {
                get_pages: 0,
                sync_readahead: 0,
                async_readahead: 0,
                pages_added: 0,
                blocked_ns: 0,
            },
            syscall: syscall as u8,
            _pad: [0; 7],
        };
        if IN_FLIGHT.insert(tid, call, 0).is_err() {
            bump(counter::IN_FLIGHT_MAP_FULL);
        }
    }

    #[inline(always)]
    fn on_exit(ctx: &TracePointContext, syscall: Syscall) {
        let Some(tid) = broker_tid() else { return };
        let Some(call) = IN_FLIGHT.get_ptr(tid) else { return };
        let call = unsafe { *call };
        let _ = IN_FLIGHT.remove(tid);
        // A call entered before we attached, or an exit we did not see: nothing to measure.
        if call.syscall != syscall as u8 {
            return;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        let duration_ns = now.saturating_sub(call.start_ns);
        let ret: i64 = unsafe { ctx.read_at(global(&SYS_EXIT_RET_OFFSET) as usize) }.unwrap_or(0);
        let cache = classify_file_read(syscall, &call.evidence, global(&HAVE_READAHEAD_EVENTS) != 0);
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
    }

    #[inline(always)]
    fn histogram(key: &HistKey) -> Option<*mut LatencyHist> {
        if let Some(h) = HISTOGRAMS.get_ptr_mut(key) {
            return Some(h);
        }
        let zero = ZERO_HIST.get_ptr(0)?;
        let _ = HISTOGRAMS.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
        HISTOGRAMS.get_ptr_mut(key)
    }

    /// Applies `f` to the evidence of the broker thread's call in progress, if any.
    #[inline(always)]
    fn with_current_call(f: impl FnOnce(&mut CallEvidence)) {
        let Some(tid) = broker_tid() else { return };
        if let Some(call) = IN_FLIGHT.get_ptr_mut(tid) {
            f(unsafe { &mut (*call).evidence });
        }
    }

    macro_rules! syscall_probes {
        ($($syscall:ident => $enter:ident, $exit:ident;)*) => {$(
            #[tracepoint]
            pub fn $enter(_ctx: TracePointContext) -> u32 {
                on_enter(Syscall::$syscall);
                0
            }
            #[tracepoint]
            pub fn $exit(ctx: TracePointContext) -> u32 {
                on_exit(&ctx, Syscall::$syscall);
                0
            }
        )*};
    }

    syscall_probes! {
        Sendfile => enter_sendfile, exit_sendfile;
        Read => enter_read, exit_read;
        Readv => enter_readv, exit_readv;
        Pread64 => enter_pread64, exit_pread64;
        Write => enter_write, exit_write;
        Writev => enter_writev, exit_writev;
        Pwrite64 => enter_pwrite64, exit_pwrite64;
        EpollWait => enter_epoll_wait, exit_epoll_wait;
        EpollPwait => enter_epoll_pwait, exit_epoll_pwait;
        Fsync => enter_fsync, exit_fsync;
        Fdatasync => enter_fdatasync, exit_fdatasync;
    }

    /// sched:sched_switch. Measures D-state sleep of broker threads inside a traced call.
    #[tracepoint]
    pub fn sched_switch(ctx: TracePointContext) -> u32 {
        let now = unsafe { bpf_ktime_get_ns() };
        // `current` is the task switched out.
        if broker_tid().is_some() {
            let prev_state: i64 =
                unsafe { ctx.read_at(global(&SWITCH_PREV_STATE_OFFSET) as usize) }.unwrap_or(0);
            if prev_state & TASK_UNINTERRUPTIBLE != 0 {
                let prev_pid: i32 =
                    unsafe { ctx.read_at(global(&SWITCH_PREV_PID_OFFSET) as usize) }.unwrap_or(0);
                if let Some(call) = IN_FLIGHT.get_ptr_mut(prev_pid as u32) {
                    unsafe { (*call).blocked_since_ns = now };
                }
            }
        }
        let next_pid: i32 =
            unsafe { ctx.read_at(global(&SWITCH_NEXT_PID_OFFSET) as usize) }.unwrap_or(0);
        if next_pid == 0 {
            return 0;
        }
        if let Some(call) = IN_FLIGHT.get_ptr_mut(next_pid as u32) {
            let call = unsafe { &mut *call };
            if call.blocked_since_ns != 0 {
                call.evidence.blocked_ns += now.saturating_sub(call.blocked_since_ns);
                call.blocked_since_ns = 0;
            }
        }
        0
    }

    /// filemap:mm_filemap_add_to_page_cache: this thread brought pages into the page cache.
    #[tracepoint]
    pub fn page_cache_add(ctx: TracePointContext) -> u32 {
        let offset = global(&ADD_TO_CACHE_ORDER_OFFSET);
        let pages = if offset == u32::MAX {
            1
        } else {
            let order: u8 = unsafe { ctx.read_at(offset as usize) }.unwrap_or(0);
            1u32 << (order & 15)
        };
        with_current_call(|ev| ev.pages_added += pages);
        0
    }

    /// filemap:mm_filemap_get_pages: the call reads a file through the page cache.
    #[tracepoint]
    pub fn page_cache_get_pages(_ctx: TracePointContext) -> u32 {
        with_current_call(|ev| ev.get_pages += 1);
        0
    }

    /// readahead:page_cache_sync_ra: a page the call needs is not in the page cache.
    #[tracepoint]
    pub fn sync_readahead(_ctx: TracePointContext) -> u32 {
        with_current_call(|ev| ev.sync_readahead += 1);
        0
    }

    /// readahead:page_cache_async_ra: prefetch after a hit on a readahead mark.
    #[tracepoint]
    pub fn async_readahead(_ctx: TracePointContext) -> u32 {
        with_current_call(|ev| ev.async_readahead += 1);
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
