//! Loading the embedded probes into the kernel, pointing them at the broker, attaching them
//! to tracepoints, and reading their maps. Dropping [`Probes`] detaches everything; so does the
//! kernel if kstall is killed (links live only as long as kstall's file descriptors).
use std::{
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use kstall_ebpf::{
    HistKey, LatencyHist, Syscall, counter,
    events::{RequestEvent, StallEvent, kind},
    global, map, thread_slot,
};

use crate::tracefs::{self, Tracefs};

static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kstall-probes"));

/// A probe program and the tracepoint it goes on.
struct Attachment {
    program: String,
    category: &'static str,
    event: String,
    /// Without a required event kstall cannot work and says so; optional ones refine results.
    required: bool,
}

fn attachments() -> Vec<Attachment> {
    let mut plan = Vec::new();
    // One entry program for every syscall, one exit program per syscall.
    for syscall in Syscall::ALL {
        for (phase, program) in [("enter", "enter_syscall".to_string()), ("exit", format!("exit_{}", syscall.name()))] {
            plan.push(Attachment {
                program,
                category: "syscalls",
                event: format!("sys_{phase}_{}", syscall.tracepoint_name()),
                required: true,
            });
        }
    }
    let mut other = |program: &str, category, event: &str, required| {
        plan.push(Attachment { program: program.into(), category, event: event.into(), required })
    };
    other("enter_close", "syscalls", "sys_enter_close", true);
    other("sched_switch", "sched", "sched_switch", true);
    other("page_cache_add", "filemap", "mm_filemap_add_to_page_cache", true);
    other("page_cache_get_pages", "filemap", "mm_filemap_get_pages", false);
    other("sync_readahead", "readahead", "page_cache_sync_ra", false);
    other("async_readahead", "readahead", "page_cache_async_ra", false);
    // Socket-wait timing (kernel 6.3+); without them request latency starts at the read.
    other("sock_recv", "sock", "sock_recv_length", false);
    other("sock_data_ready", "sock", "sk_data_ready", false);
    plan
}

/// Fails with the fix when this process cannot load tracing eBPF programs.
pub fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        bail!("kstall needs root to load its eBPF probes (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN): run it with sudo")
    }
}

/// A record from the kernel's ring buffer.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Request(RequestEvent),
    Stall(StallEvent),
}

/// The probes, attached to one broker.
pub struct Probes {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    /// Network threads the kernel parses Kafka framing for, as last set.
    network_threads: Vec<u32>,
    /// The kernel has the sock tracepoints: requests get their socket-wait time.
    pub have_socket_wait: bool,
    /// `category:event` of every tracepoint attached.
    pub attached: Vec<String>,
    /// Optional tracepoints this kernel lacks.
    pub unavailable: Vec<String>,
    /// From load start to the last tracepoint attached.
    pub attach_time: Duration,
}

pub fn attach(broker_pid: u32, stall_threshold: Duration) -> Result<Probes> {
    let started = Instant::now();
    let tracefs = Tracefs::new(tracefs::locate_or_mount()?);
    // Check every tracepoint before loading anything: a missing required one is the error.
    let (plan, missing): (Vec<Attachment>, Vec<Attachment>) =
        attachments().into_iter().partition(|a| tracefs.has_event(a.category, &a.event));
    if let Some(a) = missing.iter().find(|a| a.required) {
        let fix = match a.category {
            "syscalls" => "syscall tracepoints need a kernel built with CONFIG_FTRACE_SYSCALLS=y",
            _ => "it needs a kernel built with CONFIG_TRACING=y",
        };
        bail!("this kernel has no tracepoint {}:{}; kstall needs it ({fix})", a.category, a.event);
    }
    let unavailable: Vec<String> = missing.iter().map(|a| format!("{}:{}", a.category, a.event)).collect();
    let have_readahead = !missing.iter().any(|a| a.category == "readahead");

    let switch = tracefs.format("sched", "sched_switch")?;
    let add = tracefs.format("filemap", "mm_filemap_add_to_page_cache")?;
    let exit = tracefs.format("syscalls", "sys_exit_read")?;
    let prev_pid = switch.offset_of("sched_switch", "prev_pid", 4)?;
    let prev_state = switch.offset_of("sched_switch", "prev_state", 8)?;
    let next_pid = switch.offset_of("sched_switch", "next_pid", 4)?;
    let order = add.field("order").filter(|f| f.size == 1).map_or(u32::MAX, |f| f.offset as u32);
    let ret = exit.offset_of("sys_exit_read", "ret", 8)?;
    let readahead_flag = have_readahead as u8;
    let enter = tracefs.format("syscalls", "sys_enter_read")?;
    let args = enter.offset_of("sys_enter_read", "fd", 8)?;
    let syscall_nr = enter.offset_of("sys_enter_read", "__syscall_nr", 4)?;
    // Optional events keep the defaults when absent; their programs are then not attached.
    let optional_offset = |category: &str, event: &str, field: &str, size: usize, default: u32| {
        tracefs
            .format(category, event)
            .ok()
            .and_then(|f| f.field(field).filter(|f| f.size == size).map(|f| f.offset as u32))
            .unwrap_or(default)
    };
    let ino = optional_offset("filemap", "mm_filemap_get_pages", "i_ino", 8, 8);
    let dev = optional_offset("filemap", "mm_filemap_get_pages", "s_dev", 4, 16);
    let index = optional_offset("filemap", "mm_filemap_get_pages", "index", 8, 24);
    let last_index = optional_offset("filemap", "mm_filemap_get_pages", "last_index", 8, 32);
    let recv_sk = optional_offset("sock", "sock_recv_length", "sk", 8, 8);
    let ready_sk = optional_offset("sock", "sk_data_ready", "skaddr", 8, 8);
    let have_sock = !missing.iter().any(|a| a.category == "sock");
    let sock_flag = have_sock as u8;
    let threshold_ns = stall_threshold.as_nanos().min(u64::MAX as u128) as u64;

    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new()
        // No CO-RE relocations or BTF-typed programs: skip parsing the kernel's BTF (~100 ms).
        .btf(None)
        .override_global(global::TARGET_TGID, &broker_pid, true)
        .override_global(global::HAVE_READAHEAD_EVENTS, &readahead_flag, true)
        .override_global(global::SWITCH_PREV_PID_OFFSET, &prev_pid, true)
        .override_global(global::SWITCH_PREV_STATE_OFFSET, &prev_state, true)
        .override_global(global::SWITCH_NEXT_PID_OFFSET, &next_pid, true)
        .override_global(global::ADD_TO_CACHE_ORDER_OFFSET, &order, true)
        .override_global(global::SYS_EXIT_RET_OFFSET, &ret, true)
        .override_global(global::SYS_ENTER_ARGS_OFFSET, &args, true)
        .override_global(global::SYSCALL_NR_OFFSET, &syscall_nr, true)
        .override_global(global::GET_PAGES_INODE_OFFSET, &ino, true)
        .override_global(global::GET_PAGES_DEV_OFFSET, &dev, true)
        .override_global(global::GET_PAGES_INDEX_OFFSET, &index, true)
        .override_global(global::GET_PAGES_LAST_INDEX_OFFSET, &last_index, true)
        .override_global(global::RECV_SK_OFFSET, &recv_sk, true)
        .override_global(global::DATA_READY_SK_OFFSET, &ready_sk, true)
        .override_global(global::HAVE_SOCK_EVENTS, &sock_flag, true)
        .override_global(global::STALL_THRESHOLD_NS, &threshold_ns, true)
        .load(PROBES_OBJECT)
        .map_err(|e| anyhow!("cannot load kstall's eBPF probes: {e} (needs root and a kernel with BPF tracepoint programs, 4.18+)"))?;

    set_syscall_ids(&mut ebpf)?;
    load_programs(&mut ebpf, &plan)?;
    let mut attached = Vec::new();
    for a in &plan {
        let program: &mut TracePoint = ebpf
            .program_mut(&a.program)
            .with_context(|| format!("probe {} missing from the embedded object", a.program))?
            .try_into()?;
        program
            .attach(a.category, &a.event)
            .map_err(|e| anyhow!("cannot attach to tracepoint {}:{}: {e}", a.category, a.event))?;
        attached.push(format!("{}:{}", a.category, a.event));
    }
    let events = ebpf.take_map(map::EVENTS).context("event ring buffer missing")?;
    let events = RingBuf::try_from(events)?;
    Ok(Probes {
        ebpf,
        events,
        network_threads: Vec::new(),
        have_socket_wait: have_sock,
        attached,
        unavailable,
        attach_time: started.elapsed(),
    })
}

/// This architecture's number of each traced syscall.
fn syscall_number(syscall: Syscall) -> libc::c_long {
    match syscall {
        Syscall::Sendfile => libc::SYS_sendfile,
        Syscall::Read => libc::SYS_read,
        Syscall::Readv => libc::SYS_readv,
        Syscall::Pread64 => libc::SYS_pread64,
        Syscall::Write => libc::SYS_write,
        Syscall::Writev => libc::SYS_writev,
        Syscall::Pwrite64 => libc::SYS_pwrite64,
        Syscall::EpollWait => libc::SYS_epoll_wait,
        Syscall::EpollPwait => libc::SYS_epoll_pwait,
        Syscall::Fsync => libc::SYS_fsync,
        Syscall::Fdatasync => libc::SYS_fdatasync,
    }
}

/// Tells the shared programs which syscall a number is.
fn set_syscall_ids(ebpf: &mut Ebpf) -> Result<()> {
    let m = ebpf.map_mut(map::SYSCALL_IDS).context("syscall id map missing")?;
    let mut ids: Array<&mut MapData, u8> = Array::try_from(m)?;
    for syscall in Syscall::ALL {
        ids.set(syscall_number(syscall) as u32, syscall as u8 + 1, 0)?;
    }
    Ok(())
}

/// Loads the planned programs on every CPU at once. Loading is mostly the kernel's verifier,
/// which checks each program on its own (the framing parsers of exit_read and exit_readv take
/// tens of ms each): in parallel, startup takes about the longest of them, not their sum.
fn load_programs(ebpf: &mut Ebpf, plan: &[Attachment]) -> Result<()> {
    let mut wanted: Vec<&str> = plan.iter().map(|a| a.program.as_str()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut programs: Vec<(&str, &mut aya::programs::Program)> =
        ebpf.programs_mut().filter(|(name, _)| wanted.contains(name)).collect();
    if programs.len() != wanted.len() {
        bail!("the embedded object lacks some of kstall's probes: rebuild kstall");
    }
    // The exit programs of reads, writes and sendfile hold the parsers and take longest:
    // first, so none starts last.
    programs.sort_by_key(|(name, _)| !["exit_read", "exit_readv", "exit_sendfile", "exit_write", "exit_writev"].contains(name));
    let queue = std::sync::Mutex::new(programs.into_iter());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some((name, program)) = queue.lock().expect("not poisoned").next() else {
                            return Ok(());
                        };
                        let program: &mut TracePoint = program.try_into()?;
                        program.load().map_err(|e| anyhow!("the kernel refused probe {name}: {e}"))?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow!("a probe loader thread panicked"))?)
    })
}

/// BPF_MAP_LOOKUP_AND_DELETE_ELEM on a hash map (Linux 5.14+), which aya offers only for
/// queues and stacks; before 5.14, a lookup then a delete.
fn lookup_and_delete(fd: i32, key: &HistKey) -> Option<LatencyHist> {
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
    let attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key as *const HistKey as u64,
        value: &mut value as *mut LatencyHist as u64,
        flags: 0,
    };
    let bpf = |cmd: libc::c_long| {
        // SAFETY: the attr points at a live key and value of the map's sizes.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, &attr as *const ElemAttr, std::mem::size_of::<ElemAttr>()) == 0 }
    };
    if bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM) {
        return Some(value);
    }
    let unsupported = matches!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP));
    (unsupported && bpf(BPF_MAP_LOOKUP_ELEM) && bpf(BPF_MAP_DELETE_ELEM)).then_some(value)
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

    /// Every (thread, syscall, verdict) histogram the kernel holds now.
    pub fn histograms(&self) -> Result<Vec<(HistKey, LatencyHist)>> {
        // An entry deleted while iterating is skipped, not an error.
        Ok(self.histograms_map()?.iter().filter_map(|e| e.ok()).collect())
    }

    /// Takes histograms out of the kernel: each entry's value as it was when deleted, so a call
    /// counted between an earlier read and the delete (a new thread that reused the tid) is
    /// kept. Entries already gone are skipped.
    pub fn take_histograms(&mut self, keys: &[HistKey]) -> Result<Vec<(HistKey, LatencyHist)>> {
        let Some(aya::maps::Map::HashMap(m)) = self.ebpf.map(map::HISTOGRAMS) else {
            bail!("histogram map missing")
        };
        let fd = m.fd().as_fd().as_raw_fd();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(hist) = lookup_and_delete(fd, key) {
                taken.push((*key, hist));
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

    /// Diagnostic counters summed over CPUs, indexed by `kstall_ebpf::counter`.
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

/// A ring-buffer record as the kernel wrote it; None for a record of unknown kind or size.
fn decode_event(bytes: &[u8]) -> Option<Event> {
    fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
        // SAFETY: the length is checked and T is plain #[repr(C)] data valid for any bytes.
        (bytes.len() >= std::mem::size_of::<T>())
            .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
    match read::<u32>(bytes)? {
        kind::REQUEST => read(bytes).map(Event::Request),
        kind::STALL => read(bytes).map(Event::Stall),
        _ => None,
    }
}
