//! kstall's kernel side: latency histograms of the broker's syscalls, per thread, with a
//! page-cache hit/miss verdict for every file read, aggregated in the kernel. On network
//! threads it also follows Kafka's framing through the socket reads and writes, and sends one
//! small record per answered request and per stall (a page-cache miss or a slow call) through
//! a ring buffer; nothing else reaches user space per call. The required hooks are classic and
//! syscall tracepoints, so it loads on kernels without kprobes or fentry; field offsets come
//! from user space (tracefs `format`). Evidence that newer kernels give as tracepoints
//! (readahead 6.18, socket reads and data arrival 6.3) comes from kprobes on older kernels
//! that allow them: the same logic behind either hook.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Inline BPF assembly (see `bounded_len`); the build runs Debian's rustc with RUSTC_BOOTSTRAP.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod probes {
    use aya_ebpf::{
        bindings::BPF_NOEXIST,
        helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
        macros::{kprobe, map, tracepoint},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
        programs::{ProbeContext, TracePointContext},
    };
    use kstall_common::{
        CONNECTIONS_MAX_ENTRIES, CacheResult, CallEvidence, EVENTS_BYTES, HIST_MAX_ENTRIES, HistKey,
        IN_FLIGHT_MAX_ENTRIES, IN_FLIGHT_SLOTS, LatencyHist, PENDING_MAX_ENTRIES,
        SOCKETS_MAX_ENTRIES, SYSCALL_NR_LIMIT, Syscall, bucket_index, classify_file_read, counter, thread_slot,
        EvidenceSources,
        events::{
            ConnKey, Connection, PendingKey, PendingRequest, RequestEvent, RequestId, StallEvent,
            kind,
        },
        framing::{
            self, ByteSource, Feed, RequestFraming, RequestHeader,
            parse_response_start,
        },
    };

    // Set by user space at load time (see kstall_common::global).
    #[unsafe(no_mangle)]
    static TARGET_TGID: u32 = 0;
    #[unsafe(no_mangle)]
    static HAVE_READAHEAD_EVENTS: u8 = 0;
    #[unsafe(no_mangle)]
    static HAVE_GET_PAGES_EVENTS: u8 = 0;
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
    static ADD_TO_CACHE_INDEX_OFFSET: u32 = 24;
    #[unsafe(no_mangle)]
    static SYS_EXIT_RET_OFFSET: u32 = 16;
    #[unsafe(no_mangle)]
    static SYS_ENTER_ARGS_OFFSET: u32 = 16;
    /// `__syscall_nr` in sys_enter_* records.
    #[unsafe(no_mangle)]
    static SYSCALL_NR_OFFSET: u32 = 8;
    #[unsafe(no_mangle)]
    static GET_PAGES_INODE_OFFSET: u32 = 8;
    #[unsafe(no_mangle)]
    static GET_PAGES_DEV_OFFSET: u32 = 16;
    #[unsafe(no_mangle)]
    static GET_PAGES_INDEX_OFFSET: u32 = 24;
    #[unsafe(no_mangle)]
    static GET_PAGES_LAST_INDEX_OFFSET: u32 = 32;
    #[unsafe(no_mangle)]
    static RECV_SK_OFFSET: u32 = 8;
    #[unsafe(no_mangle)]
    static DATA_READY_SK_OFFSET: u32 = 8;
    #[unsafe(no_mangle)]
    static HAVE_SOCK_EVENTS: u8 = 0;
    #[unsafe(no_mangle)]
    static STALL_THRESHOLD_NS: u64 = 1_000_000;

    /// log2 of the page size: 4 KiB on x86_64 and on the arm64 kernels of the distributions
    /// kstall supports (the stall records' byte ranges assume it too).
    const PAGE_SHIFT: u32 = 12;

    /// TASK_UNINTERRUPTIBLE as reported in sched_switch's prev_state.
    const TASK_UNINTERRUPTIBLE: i64 = 0x2;

    /// A traced syscall in progress on one thread, and the evidence gathered during it.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct InFlight {
        start_ns: u64,
        /// Set while the thread is switched out, 0 otherwise.
        switched_out_ns: u64,
        off_cpu_ns: u64,
        evidence: CallEvidence,
        /// The first four syscall arguments, raw.
        args: [u64; 4],
        /// The socket read, from sock:sock_recv_length; 0 when none.
        sk: u64,
        /// When the data this read consumed reached the socket, 0 when unknown.
        arrival_ns: u64,
        /// Pages the call asks for (sendfile and pread64 name their offset), inclusive;
        /// wanted_last < wanted_first when unknown.
        wanted_first: u64,
        wanted_last: u64,
        /// First file the call looked up in the page cache, and the page range it asked for.
        inode: u64,
        first_index: u64,
        last_index: u64,
        dev: u32,
        syscall: u8,
        /// Switched out in D state (waiting for I/O), not preempted or sleeping.
        switched_out_blocked: u8,
        /// In an IN_FLIGHT slot: another thread's call went to IN_FLIGHT_OVERFLOW from this
        /// slot once, so lookups that miss here look there too (sticky).
        overflowed: u8,
        _pad: u8,
        /// The thread whose call this is; 0 in a free slot.
        tid: u32,
    }

    /// Data arrival on a socket the broker's network threads read.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SocketState {
        /// First sk_data_ready since the last read, 0 when none.
        unread_since_ns: u64,
    }

    #[map]
    static IN_FLIGHT: Array<InFlight> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

    /// Calls of threads whose slot was taken by another thread's call (tids equal modulo
    /// IN_FLIGHT_SLOTS, both inside a syscall).
    #[map]
    static IN_FLIGHT_OVERFLOW: HashMap<u32, InFlight> = HashMap::with_max_entries(IN_FLIGHT_MAX_ENTRIES, 0);

    /// One entry per (thread, syscall, verdict), created on first use. Preallocated: a tracing
    /// program that allocates map memory at run time (BPF_F_NO_PREALLOC) makes 5.7-6.0 print a
    /// kernel WARNING with a call trace at load (which taints the kernel and panics a host
    /// with panic_on_warn), and is refused on PREEMPT_RT.
    #[map]
    static HISTOGRAMS: HashMap<HistKey, LatencyHist> = HashMap::with_max_entries(HIST_MAX_ENTRIES, 0);

    /// Source of a zeroed histogram for inserts: too large for the 512-byte BPF stack.
    #[map]
    static ZERO_HIST: Array<LatencyHist> = Array::with_max_entries(1, 0);

    /// Syscall number -> kstall_common::Syscall as u8 + 1 (0: not traced), filled by user
    /// space: one program serves the entry of every traced syscall, which the kernel then
    /// verifies once instead of once per syscall.
    #[map]
    static SYSCALL_IDS: Array<u8> = Array::with_max_entries(SYSCALL_NR_LIMIT, 0);

    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

    /// Network threads by slot (tid modulo IN_FLIGHT_SLOTS): the tid, 0 when none. An array
    /// because every traced call asks; a broker starts its network threads together, so their
    /// tids do not share a slot.
    #[map]
    static NETWORK_THREADS: Array<u32> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

    #[map]
    static CONNECTIONS: LruHashMap<ConnKey, Connection> =
        LruHashMap::with_max_entries(CONNECTIONS_MAX_ENTRIES, 0);

    #[map]
    static PENDING: LruHashMap<PendingKey, PendingRequest> =
        LruHashMap::with_max_entries(PENDING_MAX_ENTRIES, 0);

    #[map]
    static SOCKETS: LruHashMap<u64, SocketState> =
        LruHashMap::with_max_entries(SOCKETS_MAX_ENTRIES, 0);

    /// Source of a fresh connection state for inserts: too large for the BPF stack.
    #[map]
    static NEW_CONNECTION: Array<Connection> = Array::with_max_entries(1, 0);

    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

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

    /// The slot of thread `tid`.
    #[inline(always)]
    fn slot(tid: u32) -> Option<*mut InFlight> {
        IN_FLIGHT.get_ptr_mut(thread_slot(tid))
    }

    #[inline(always)]
    fn is_network_thread(tid: u32) -> bool {
        NETWORK_THREADS.get(thread_slot(tid)).is_some_and(|t| *t == tid)
    }

    /// Thread `tid`'s call in progress, if any: in its slot, or in the overflow map.
    #[inline(always)]
    fn call_of(tid: u32) -> Option<*mut InFlight> {
        let s = slot(tid)?;
        unsafe {
            if (*s).tid == tid {
                return Some(s);
            }
            if (*s).overflowed == 0 {
                return None;
            }
        }
        IN_FLIGHT_OVERFLOW.get_ptr_mut(tid)
    }

    #[inline(always)]
    fn on_enter(ctx: &TracePointContext, tid: u32, syscall: Syscall) {
        let Some(s) = slot(tid) else { return };
        let s = unsafe { &mut *s };
        // One read for the four arguments: each read is a helper call.
        let args: [u64; 4] = unsafe { ctx.read_at(global(&SYS_ENTER_ARGS_OFFSET) as usize) }.unwrap_or([0; 4]);
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
                call.wanted_first = offset >> PAGE_SHIFT;
                call.wanted_last = offset.wrapping_add(count - 1) >> PAGE_SHIFT;
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
        let ret: i64 = unsafe { ctx.read_at(global(&SYS_EXIT_RET_OFFSET) as usize) }.unwrap_or(0);
        let sources = EvidenceSources {
            readahead: global(&HAVE_READAHEAD_EVENTS) != 0,
            file_lookups: global(&HAVE_GET_PAGES_EVENTS) != 0,
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
        if (network && !idle_wait && (miss || duration_ns >= global(&STALL_THRESHOLD_NS)))
            || (miss && syscall == Syscall::Sendfile)
        {
            send_stall(tid, syscall, cache, &call, duration_ns, ret);
        }
        // File reads are not protocol, except sendfile: it reads the file *and* writes the socket.
        if network && ret > 0 && (cache == CacheResult::NoFileRead || syscall == Syscall::Sendfile) {
            follow_protocol(tid, syscall, &call, ret as u64, now);
        }
    }

    /// Kafka framing on a network thread's socket: requests in through reads, responses out
    /// through writes and sendfile.
    #[inline(always)]
    fn follow_protocol(tid: u32, syscall: Syscall, call: &InFlight, ret: u64, now: u64) {
        let fd = call.args[0] as u32;
        match syscall {
            Syscall::Read | Syscall::Readv => {
                // Without socket-read evidence, eventfd wakeups are fed too; they never parse.
                if call.sk == 0 && global(&HAVE_SOCK_EVENTS) != 0 {
                    return;
                }
                let Some(conn) = connection(fd) else { return };
                let conn = unsafe { &mut *conn };
                if call.sk != 0 && conn.sk != call.sk {
                    if conn.sk != 0 {
                        // Another socket behind the fd (a close we did not see): start over.
                        conn.requests = RequestFraming::NEW;
                        conn.responding = 0;
                        conn.response_left = 0;
                    }
                    conn.sk = call.sk;
                }
                // readv: the first iovec only (a second parser would double the program past
                // the verifier's budget). A JVM reads a socket with read(); if a readv spills into
                // a second iovec, the parser resyncs at a later read.
                let (base, len) = if syscall == Syscall::Read {
                    (call.args[1], ret)
                } else {
                    let Ok(v) = (unsafe { bpf_probe_read_user(call.args[1] as *const [u64; 2]) }) else {
                        return;
                    };
                    (v[0], if v[1] < ret { v[1] } else { ret })
                };
                feed(tid, fd, conn, &UserBytes { base }, len, call, now);
                if len < ret {
                    conn.requests.state = framing::state::HUNTING;
                }
            }
            Syscall::Write | Syscall::Writev => {
                let Some(conn) = CONNECTIONS.get_ptr_mut(ConnKey { tgid: global(&TARGET_TGID), fd })
                else {
                    return;
                };
                let conn = unsafe { &mut *conn };
                let start = if conn.responding != 0 {
                    None
                } else if syscall == Syscall::Write {
                    read_user_8(call.args[1], ret)
                } else {
                    writev_first_8(call.args[1], call.args[2])
                };
                progress_response(tid, fd, conn, start, ret, call.start_ns, now);
            }
            Syscall::Sendfile => {
                if let Some(conn) = CONNECTIONS.get_ptr_mut(ConnKey { tgid: global(&TARGET_TGID), fd }) {
                    // A response's records go out by sendfile after its header was written.
                    progress_response(tid, fd, unsafe { &mut *conn }, None, ret, call.start_ns, now);
                }
            }
            _ => {}
        }
    }

    /// Connection state for a socket fd of the broker, created on its first read.
    #[inline(always)]
    fn connection(fd: u32) -> Option<*mut Connection> {
        let key = ConnKey { tgid: global(&TARGET_TGID), fd };
        if let Some(c) = CONNECTIONS.get_ptr_mut(key) {
            return Some(c);
        }
        let fresh = NEW_CONNECTION.get_ptr(0)?;
        let _ = CONNECTIONS.insert(key, unsafe { &*fresh }, BPF_NOEXIST as u64);
        CONNECTIONS.get_ptr_mut(key)
    }

    /// One read's bytes in the broker's memory.
    struct UserBytes {
        base: u64,
    }

    impl ByteSource for UserBytes {
        #[inline(always)]
        fn copy(&self, offset: u32, dst: &mut [u8], len: u32) -> bool {
            if len as usize > dst.len() {
                return false;
            }
            let len = bounded_len(len);
            let src = (self.base + offset as u64) as *const core::ffi::c_void;
            unsafe { generated::bpf_probe_read_user(dst.as_mut_ptr().cast(), len, src) == 0 }
        }
    }

    /// `len & COPY_MASK`, computed where the verifier sees it. The framing parser already
    /// bounds every copy (`min(4 - have, avail)`, `min(64 - have, take)`), so LLVM drops a mask
    /// written in Rust; but the verifiers before 6.12 cannot bound a register by comparing it
    /// with another register, and reject the copy as an unbounded memory access (5.10, 6.1).
    /// The mask in assembly survives compilation; with the destination offset (< 64) it keeps
    /// every copy inside the connection's header buffer (HEADER_BUFFER).
    #[inline(always)]
    fn bounded_len(len: u32) -> u32 {
        let mut len = len as u64;
        unsafe { core::arch::asm!("{0} &= 127", inout(reg) len, options(pure, nomem, nostack)) };
        len as u32
    }
    /// The mask in `bounded_len`: a copy is at most HEADER_CAPTURE bytes, at an offset below
    /// HEADER_CAPTURE, so the buffer must hold offset + mask.
    const COPY_MASK: usize = 127;
    const _: () = assert!(COPY_MASK >= framing::HEADER_CAPTURE);
    const _: () = assert!(framing::HEADER_CAPTURE - 1 + COPY_MASK <= framing::HEADER_BUFFER);


    #[inline(always)]
    fn feed(tid: u32, fd: u32, conn: &mut Connection, src: &UserBytes, len: u64, call: &InFlight, now: u64) {
        let len = if len > u32::MAX as u64 { u32::MAX } else { len as u32 };
        let was_tls = conn.requests.tls;
        let outcome = framing::feed_request_bytes(
            &mut conn.requests,
            src,
            len,
            call.start_ns,
            call.arrival_ns,
            |f, header| remember_request(tid, fd, f, header, now),
        );
        match outcome {
            Feed::Ok => {}
            Feed::Tls => {
                if was_tls == 0 {
                    bump(counter::TLS_CONNECTIONS);
                }
            }
            _ => bump(counter::FRAMING_ERRORS),
        }
    }

    /// A request was read completely: keep it until its response is written.
    #[inline(always)]
    fn remember_request(tid: u32, fd: u32, f: &RequestFraming, header: &RequestHeader, now: u64) {
        let mut id = RequestId::NONE;
        let (len, cut) = framing::client_id(f, header, &mut id.client_id);
        id.correlation_id = header.correlation_id;
        id.api_key = header.api_key;
        id.api_version = header.api_version;
        id.client_id_len = len;
        id.client_id_cut = cut as u8;
        id.known = 1;
        let pending = PendingRequest {
            id,
            tid,
            request_bytes: f.body_len + 4,
            arrival_ns: f.arrival_ns,
            read_start_ns: f.started_ns,
            read_done_ns: now,
            response_start_ns: 0,
        };
        let key = PendingKey { tgid: global(&TARGET_TGID), fd, correlation_id: header.correlation_id, _pad: 0 };
        let _ = PENDING.insert(key, pending, 0);
        bump(counter::REQUESTS_PARSED);
    }

    #[inline(always)]
    fn read_user_8(addr: u64, available: u64) -> Option<[u8; 8]> {
        if available < 8 {
            return None;
        }
        unsafe { bpf_probe_read_user(addr as *const [u8; 8]) }.ok()
    }

    /// The first 8 bytes a writev sends: from the first iovec, or from the first two when the
    /// first holds only the 4-byte size (as Kafka's responses do).
    #[inline(always)]
    fn writev_first_8(iov: u64, count: u64) -> Option<[u8; 8]> {
        let v: [u64; 4] = if count >= 2 {
            unsafe { bpf_probe_read_user(iov as *const [u64; 4]) }.ok()?
        } else {
            let first: [u64; 2] = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
            [first[0], first[1], 0, 0]
        };
        if v[1] >= 8 {
            return read_user_8(v[0], v[1]);
        }
        if v[1] == 4 && v[3] >= 4 {
            let size: [u8; 4] = unsafe { bpf_probe_read_user(v[0] as *const [u8; 4]) }.ok()?;
            let corr: [u8; 4] = unsafe { bpf_probe_read_user(v[2] as *const [u8; 4]) }.ok()?;
            return Some([size[0], size[1], size[2], size[3], corr[0], corr[1], corr[2], corr[3]]);
        }
        None
    }

    /// `sent` more bytes of a response went out on `fd`; `start` holds a response's first 8
    /// bytes when this write begins one.
    #[inline(always)]
    fn progress_response(
        tid: u32,
        fd: u32,
        conn: &mut Connection,
        start: Option<[u8; 8]>,
        sent: u64,
        call_start_ns: u64,
        now: u64,
    ) {
        let tgid = global(&TARGET_TGID);
        if conn.responding == 0 {
            let Some((total, correlation_id)) = start.and_then(parse_response_start) else { return };
            conn.responding = 1;
            conn.response_total = total as u64;
            conn.response_left = total as u64;
            conn.response_correlation_id = correlation_id;
            let key = PendingKey { tgid, fd, correlation_id, _pad: 0 };
            if let Some(p) = PENDING.get_ptr_mut(key) {
                unsafe { (*p).response_start_ns = call_start_ns };
            }
        }
        conn.response_left = conn.response_left.saturating_sub(sent);
        if conn.response_left != 0 {
            return;
        }
        conn.responding = 0;
        let key = PendingKey { tgid, fd, correlation_id: conn.response_correlation_id, _pad: 0 };
        let Some(p) = PENDING.get_ptr(key) else {
            bump(counter::RESPONSES_UNMATCHED);
            return;
        };
        let Some(mut entry) = EVENTS.reserve::<RequestEvent>(0) else {
            bump(counter::EVENTS_LOST);
            return;
        };
        let e = entry.as_mut_ptr();
        unsafe {
            let p = &*p;
            (*e).kind = kind::REQUEST;
            (*e).tid = tid;
            (*e).fd = fd;
            (*e).request_bytes = p.request_bytes;
            (*e).response_bytes = conn.response_total;
            (*e).arrival_ns = p.arrival_ns;
            (*e).read_start_ns = p.read_start_ns;
            (*e).read_done_ns = p.read_done_ns;
            (*e).response_start_ns = p.response_start_ns;
            (*e).response_done_ns = now;
            (*e).id = p.id;
        }
        entry.submit(0);
        let _ = PENDING.remove(key);
    }

    /// The request whose response is being written on `fd`, if known.
    #[inline(always)]
    fn request_on(fd: u32) -> RequestId {
        let tgid = global(&TARGET_TGID);
        let Some(conn) = CONNECTIONS.get_ptr(ConnKey { tgid, fd }) else { return RequestId::NONE };
        let conn = unsafe { &*conn };
        if conn.responding == 0 {
            return RequestId::NONE;
        }
        let key = PendingKey { tgid, fd, correlation_id: conn.response_correlation_id, _pad: 0 };
        match PENDING.get_ptr(key) {
            Some(p) => unsafe { (*p).id },
            None => RequestId::NONE,
        }
    }

    #[inline(always)]
    fn send_stall(tid: u32, syscall: Syscall, cache: CacheResult, call: &InFlight, duration_ns: u64, ret: i64) {
        let fd = call.args[0] as i32;
        let (socket_fd, file_fd) = match syscall {
            Syscall::Sendfile => (fd, call.args[1] as i32),
            _ if cache != CacheResult::NoFileRead => (-1, fd),
            Syscall::Read | Syscall::Readv | Syscall::Write | Syscall::Writev => (fd, -1),
            Syscall::Pwrite64 | Syscall::Fsync | Syscall::Fdatasync => (-1, fd),
            _ => (-1, -1),
        };
        let Some(mut entry) = EVENTS.reserve::<StallEvent>(0) else {
            bump(counter::EVENTS_LOST);
            return;
        };
        let e = entry.as_mut_ptr();
        unsafe {
            (*e).kind = kind::STALL;
            (*e).tid = tid;
            (*e).syscall = syscall as u8;
            (*e).cache = cache as u8;
            (*e)._pad = [0; 2];
            (*e).socket_fd = socket_fd;
            (*e).file_fd = file_fd;
            (*e).dev = call.dev;
            (*e).inode = call.inode;
            // The pages looked up (6.12+), else the pages asked for (sendfile, pread64).
            let (first, last) = if call.inode != 0 {
                (call.first_index, call.last_index)
            } else {
                (call.wanted_first, call.wanted_last)
            };
            (*e).first_byte = first << PAGE_SHIFT;
            (*e).end_byte = if first <= last { (last + 1) << PAGE_SHIFT } else { 0 };
            (*e).start_ns = call.start_ns;
            (*e).duration_ns = duration_ns;
            (*e).off_cpu_ns = call.off_cpu_ns;
            (*e).blocked_ns = call.evidence.blocked_ns;
            (*e).pages_added = call.evidence.pages_added as u64;
            (*e).bytes = ret;
            (*e).request = if socket_fd >= 0 { request_on(socket_fd as u32) } else { RequestId::NONE };
        }
        entry.submit(0);
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

    /// Applies `f` to the broker thread's call in progress, if any.
    #[inline(always)]
    fn with_current_call(f: impl FnOnce(&mut InFlight)) {
        let Some(tid) = broker_tid() else { return };
        if let Some(call) = call_of(tid) {
            f(unsafe { &mut *call });
        }
    }

    /// The traced syscall a sys_enter_* or sys_exit_* event is for.
    #[inline(always)]
    fn traced_syscall(ctx: &TracePointContext) -> Option<Syscall> {
        let nr: i32 = unsafe { ctx.read_at(global(&SYSCALL_NR_OFFSET) as usize) }.ok()?;
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
        ($($syscall:ident => $name:ident;)*) => {$(
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
        EpollWait => exit_epoll_wait;
        EpollPwait => exit_epoll_pwait;
        Fsync => exit_fsync;
        Fdatasync => exit_fdatasync;
    }

    /// sched:sched_switch. Measures off-CPU time, and D-state sleep within it, of broker
    /// threads inside a traced call.
    #[tracepoint]
    pub fn sched_switch(ctx: TracePointContext) -> u32 {
        let now = unsafe { bpf_ktime_get_ns() };
        // `current` is the task switched out.
        if broker_tid().is_some() {
            let prev_pid: i32 =
                unsafe { ctx.read_at(global(&SWITCH_PREV_PID_OFFSET) as usize) }.unwrap_or(0);
            if let Some(call) = call_of(prev_pid as u32) {
                let prev_state: i64 =
                    unsafe { ctx.read_at(global(&SWITCH_PREV_STATE_OFFSET) as usize) }.unwrap_or(0);
                unsafe {
                    (*call).switched_out_ns = now;
                    (*call).switched_out_blocked = (prev_state & TASK_UNINTERRUPTIBLE != 0) as u8;
                }
            }
        }
        let next_pid: i32 =
            unsafe { ctx.read_at(global(&SWITCH_NEXT_PID_OFFSET) as usize) }.unwrap_or(0);
        if next_pid == 0 {
            return 0;
        }
        if let Some(call) = call_of(next_pid as u32) {
            let call = unsafe { &mut *call };
            if call.switched_out_ns != 0 {
                let away = now.saturating_sub(call.switched_out_ns);
                call.off_cpu_ns += away;
                if call.switched_out_blocked != 0 {
                    call.evidence.blocked_ns += away;
                }
                call.switched_out_ns = 0;
            }
        }
        0
    }

    /// filemap:mm_filemap_add_to_page_cache: this thread brought pages into the page cache.
    #[tracepoint]
    pub fn page_cache_add(ctx: TracePointContext) -> u32 {
        let Some(tid) = broker_tid() else { return 0 };
        let Some(call) = call_of(tid) else { return 0 };
        let call = unsafe { &mut *call };
        let offset = global(&ADD_TO_CACHE_ORDER_OFFSET);
        let pages = if offset == u32::MAX {
            1
        } else {
            let order: u8 = unsafe { ctx.read_at(offset as usize) }.unwrap_or(0);
            1u32 << (order & 15)
        };
        call.evidence.pages_added += pages;
        if call.wanted_first <= call.wanted_last {
            let first: u64 = unsafe { ctx.read_at(global(&ADD_TO_CACHE_INDEX_OFFSET) as usize) }.unwrap_or(u64::MAX);
            let last = first.saturating_add(pages as u64 - 1);
            if first <= call.wanted_last && last >= call.wanted_first {
                call.evidence.wanted_pages_added += pages;
            }
        }
        0
    }

    /// filemap:mm_filemap_get_pages: the call reads a file through the page cache.
    #[tracepoint]
    pub fn page_cache_get_pages(ctx: TracePointContext) -> u32 {
        with_current_call(|call| {
            call.evidence.get_pages += 1;
            let field = |offset: &u32| unsafe { ctx.read_at::<u64>(global(offset) as usize) }.unwrap_or(0);
            let last = field(&GET_PAGES_LAST_INDEX_OFFSET);
            if call.inode == 0 {
                call.inode = field(&GET_PAGES_INODE_OFFSET);
                call.dev = unsafe { ctx.read_at::<u32>(global(&GET_PAGES_DEV_OFFSET) as usize) }.unwrap_or(0);
                call.first_index = field(&GET_PAGES_INDEX_OFFSET);
                call.last_index = last;
            } else if last > call.last_index {
                call.last_index = last;
            }
        });
        0
    }

    /// readahead:page_cache_sync_ra (6.18+): a page the call needs is not in the page cache.
    #[tracepoint]
    pub fn sync_readahead(_ctx: TracePointContext) -> u32 {
        with_current_call(|call| call.evidence.sync_readahead += 1);
        0
    }

    /// The same evidence from a kprobe on page_cache_sync_ra() (5.10+), where the tracepoint
    /// is missing and kprobes are allowed.
    #[kprobe]
    pub fn sync_readahead_kprobe(_ctx: ProbeContext) -> u32 {
        with_current_call(|call| call.evidence.sync_readahead += 1);
        0
    }

    /// readahead:page_cache_async_ra (6.18+): prefetch after a hit on a readahead mark.
    #[tracepoint]
    pub fn async_readahead(_ctx: TracePointContext) -> u32 {
        with_current_call(|call| call.evidence.async_readahead += 1);
        0
    }

    /// The same evidence from a kprobe on page_cache_async_ra() (5.10+).
    #[kprobe]
    pub fn async_readahead_kprobe(_ctx: ProbeContext) -> u32 {
        with_current_call(|call| call.evidence.async_readahead += 1);
        0
    }

    /// sys_enter_close of the broker: a closed fd's connection state goes, so a new connection
    /// that gets the same fd starts from a clean parser (a client may leave mid-request).
    #[tracepoint]
    pub fn enter_close(ctx: TracePointContext) -> u32 {
        if broker_tid().is_none() {
            return 0;
        }
        let fd: u64 = unsafe { ctx.read_at(global(&SYS_ENTER_ARGS_OFFSET) as usize) }.unwrap_or(u64::MAX);
        let _ = CONNECTIONS.remove(ConnKey { tgid: global(&TARGET_TGID), fd: fd as u32 });
        0
    }

    /// sock:sock_recv_length (6.3+): the read in progress on a network thread is a socket read.
    #[tracepoint]
    pub fn sock_recv(ctx: TracePointContext) -> u32 {
        on_socket_read(unsafe { ctx.read_at(global(&RECV_SK_OFFSET) as usize) }.unwrap_or(0));
        0
    }

    /// The same from a kprobe on tcp_recvmsg(sk, ...), where the tracepoint is missing.
    #[kprobe]
    pub fn sock_recv_kprobe(ctx: ProbeContext) -> u32 {
        on_socket_read(ctx.arg::<u64>(0).unwrap_or(0));
        0
    }

    /// Socket `sk` is read by the call in progress: if that is a network thread's, take the
    /// time the unread data arrived, and restart the clock for the next data.
    #[inline(always)]
    fn on_socket_read(sk: u64) {
        let Some(tid) = broker_tid() else { return };
        if sk == 0 || !is_network_thread(tid) {
            return;
        }
        let mut arrival_ns = 0;
        match SOCKETS.get_ptr_mut(sk) {
            Some(s) => unsafe {
                arrival_ns = (*s).unread_since_ns;
                (*s).unread_since_ns = 0;
            },
            None => {
                let _ = SOCKETS.insert(sk, SocketState { unread_since_ns: 0 }, 0);
            }
        }
        with_current_call(|call| {
            if call.sk == 0 {
                call.sk = sk;
                call.arrival_ns = arrival_ns;
            }
        });
    }

    /// sock:sk_data_ready (6.3+): data reached a socket.
    #[tracepoint]
    pub fn sock_data_ready(ctx: TracePointContext) -> u32 {
        on_data_ready(unsafe { ctx.read_at(global(&DATA_READY_SK_OFFSET) as usize) }.unwrap_or(0));
        0
    }

    /// The same from a kprobe on sock_def_readable(sk), the data-ready callback of TCP
    /// sockets, where the tracepoint is missing.
    #[kprobe]
    pub fn sock_data_ready_kprobe(ctx: ProbeContext) -> u32 {
        on_data_ready(ctx.arg::<u64>(0).unwrap_or(0));
        0
    }

    /// Data reached socket `sk`. Runs for every socket on the host (often in the sender's
    /// context), so it only touches sockets a network thread has read.
    #[inline(always)]
    fn on_data_ready(sk: u64) {
        if let Some(s) = SOCKETS.get_ptr_mut(sk) {
            unsafe {
                if (*s).unread_since_ns == 0 {
                    (*s).unread_since_ns = bpf_ktime_get_ns();
                }
            }
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
