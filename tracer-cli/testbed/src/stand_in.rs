//! A stand-in broker for the kernel matrix: one network thread (comm `kafka-network-t`) that
//! serves, syscall by syscall as Kafka's does, a Fetch client with `sendfile` from a segment
//! file and a synchronous Produce client on the same thread, behind `epoll_wait`. It runs with
//! `kafka.Kafka` among its arguments, so kstall takes it for a broker. A JVM broker would
//! take minutes to start under software emulation; this starts at once and behaves the same
//! for what the kernel sees.
//!
//! The clients are threads of the same process and use send/recv, which kstall does not trace;
//! the network thread uses read, write and sendfile, which it does.
//!
//! Control on stdin, one phase a line; each answers one JSON line on stdout with what the
//! stand-in itself saw (the ground truth kstall is checked against):
//!   `cold`      a segment written and dropped from the page cache, read with readahead off
//!               (POSIX_FADV_RANDOM): every sendfile waits for the disk;
//!   `prefetch`  another such segment read with readahead on, paced so that each async
//!               readahead finishes before the next Fetch: after the first, the sendfiles hit
//!               pages that prefetch brought in (and that add pages in the reading thread);
//!   `warm`      the `cold` segment again, locked in memory: every sendfile hits;
//!   `readahead` a larger segment written and dropped, read with the kernel's default
//!               readahead and no pacing, as a cold consumer reads: some sendfiles find their
//!               pages, some wait for a readahead still in flight, some read them in. Around
//!               each call the network thread records what the kernel says (pages cached and
//!               uptodate before, its own I/O waits during: [`ChunkTruth`]);
//!   `burst`     a second network thread, alive a few seconds (kstall lists it), serves a
//!               short burst from the locked `cold` segment and exits: its calls must survive
//!               its exit into a trace stopped right after.
use std::{
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    kafka_protocol::{API_FETCH, API_PRODUCE, request_frame},
    synthetic_broker::name_this_thread,
};

pub const FETCH_CLIENT: &str = "cold-reader";
pub const PRODUCE_CLIENT: &str = "sync-producer";
/// Bytes one Fetch response sends from the segment.
const CHUNK: usize = 64 << 10;
const SEGMENT_BYTES: usize = 8 << 20;
/// Gap between Fetches in the prefetch phase: time for one readahead to complete, with room
/// for an emulated disk.
const PREFETCH_PACE: Duration = Duration::from_millis(40);
/// Fetches in the prefetch phase.
const PREFETCH_FETCHES: usize = 48;
/// The `readahead` phase's segment: 512 Fetches.
const READAHEAD_SEGMENT_BYTES: usize = 32 << 20;
/// Fetches of the `burst` phase.
pub const BURST_FETCHES: usize = 16;
/// How long the burst's thread lives before it serves: kstall lists the broker's threads at
/// each refresh (every second, slower under emulation), and must have seen it alive to know
/// it as a network thread.
const BURST_THREAD_WAITS: Duration = Duration::from_secs(5);
/// Gap between a Produce response and the next request.
const PRODUCE_GAP: Duration = Duration::from_micros(500);


fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec given. CLOCK_MONOTONIC is bpf_ktime_get_ns's clock.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn check(ret: isize, what: &str) -> Result<usize> {
    if ret < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(ret as usize)
}

/// Reads exactly `buf.len()` bytes with read(2), as a network thread does; false when the
/// peer closed the connection before the first byte.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> Result<bool> {
    let mut have = 0;
    while have < buf.len() {
        // SAFETY: reads into the unfilled part of `buf`.
        let n = check(unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) }, "read")?;
        if n == 0 {
            if have == 0 {
                return Ok(false);
            }
            bail!("connection closed mid-request");
        }
        have += n;
    }
    Ok(true)
}

fn send_all(fd: RawFd, buf: &[u8]) -> Result<()> {
    // SAFETY: send(2) of a buffer we own; a blocking socket sends it all.
    let n = check(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) }, "send")?;
    if n != buf.len() {
        bail!("short send");
    }
    Ok(())
}

fn recv_all(fd: RawFd, buf: &mut [u8]) -> Result<()> {
    // SAFETY: recv(2) into a buffer we own, all of it (MSG_WAITALL).
    let n = check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_WAITALL) }, "recv")?;
    if n != buf.len() {
        bail!("short recv");
    }
    Ok(())
}


/// Waits until this process has at most `n` threads (the main one and the network thread).
fn wait_for_threads(n: usize) -> Result<()> {
    let started = Instant::now();
    while std::fs::read_dir("/proc/self/task")?.count() > n {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("a thread of the stand-in did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Writes a segment of `bytes` and drops it from the page cache.
fn cold_segment(path: &Path, fill: u8, bytes: usize) -> Result<std::fs::File> {
    std::fs::write(path, vec![fill; bytes])?;
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    // SAFETY: fadvise on a file we own; the pages are clean after the sync.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(file)
}

/// What the kernel says of one sendfile's chunk and thread, read by the network thread
/// around the call with syscalls kstall does not trace (cachestat, mincore, send, recv): the
/// ground truth of a readahead-on cold pass.
#[derive(Clone, Copy, Debug)]
struct ChunkTruth {
    /// Pages of the chunk in the page cache before the call, uptodate or still being read in
    /// (cachestat(2), Linux 6.5+; None before).
    cached_before: Option<u64>,
    /// Pages of the chunk in the page cache and uptodate before the call (mincore(2) on a
    /// mapping of the segment; a page still being read in is not uptodate).
    uptodate_before: u64,
    /// Times the thread slept waiting for block I/O during the call: the kernel's own per-task
    /// count (delay accounting's `blkio_count`, which every wait on a page being read in
    /// raises); None where the kernel does not count it.
    io_waits: Option<u64>,
    duration_ns: u64,
}

/// cachestat(2)'s syscall number, the same on x86_64 and arm64.
const SYS_CACHESTAT: libc::c_long = 451;

/// Reads the page-cache state of a segment's chunks and the calling thread's I/O waits.
/// Made on the network thread, whose waits it counts.
struct TruthReader {
    fd: RawFd,
    map: *mut libc::c_void,
    len: usize,
    page: usize,
    tid: u32,
    io: Option<TaskStats>,
}

impl TruthReader {
    fn new(segment: &std::fs::File) -> Result<TruthReader> {
        let len = segment.metadata()?.len() as usize;
        // SAFETY: a read-only shared mapping of the whole file, never touched (mincore only
        // asks the kernel about it), unmapped on drop.
        let map = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, segment.as_raw_fd(), 0) };
        if map == libc::MAP_FAILED {
            bail!("cannot map the segment: {}", std::io::Error::last_os_error());
        }
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: gettid has no memory effects.
        let tid = unsafe { libc::gettid() } as u32;
        Ok(TruthReader { fd: segment.as_raw_fd(), map, len, page, tid, io: TaskStats::open() })
    }

    /// (pages cached, pages uptodate) of [offset, offset + len).
    fn page_state(&self, offset: usize, len: usize) -> (Option<u64>, u64) {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Cachestat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        let range = Range { off: offset as u64, len: len as u64 };
        let mut stat = Cachestat::default();
        // SAFETY: cachestat reads the range and writes the stat given; ENOSYS before 6.5.
        let cached = (unsafe { libc::syscall(SYS_CACHESTAT, self.fd, &range, &mut stat, 0) } == 0).then_some(stat.nr_cache);
        let len = len.min(self.len.saturating_sub(offset));
        let mut resident = vec![0u8; len.div_ceil(self.page)];
        // SAFETY: a page-aligned range inside our mapping, and one byte per page to write.
        let ok = unsafe { libc::mincore(self.map.cast::<u8>().add(offset).cast(), len, resident.as_mut_ptr()) } == 0;
        let uptodate = if ok { resident.iter().filter(|b| *b & 1 != 0).count() as u64 } else { 0 };
        (cached, uptodate)
    }

    /// The calling thread's block-I/O waits so far (taskstats' `blkio_count`).
    fn io_waits(&self) -> Option<u64> {
        self.io.as_ref()?.blkio_count(self.tid)
    }
}

impl Drop for TruthReader {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.map, self.len) };
    }
}

/// The kernel's per-task delay accounting, asked through taskstats (generic netlink, with
/// send and recv, which kstall does not trace): `blkio_count` is how many times a thread slept
/// waiting for block I/O, which every wait on a page still being read in is.
struct TaskStats {
    socket: RawFd,
    family: u16,
}

/// Delay accounting on while alive (`kernel.task_delayacct`, 5.14+, off by default), as it
/// was after. Before 5.14 it is on unless the kernel was booted with `nodelayacct`. Only
/// tasks created while it is on are counted.
struct DelayAccounting {
    previous: Option<String>,
}

const TASK_DELAYACCT: &str = "/proc/sys/kernel/task_delayacct";

impl DelayAccounting {
    fn on() -> DelayAccounting {
        let previous = std::fs::read_to_string(TASK_DELAYACCT).ok();
        if previous.is_some() {
            let _ = std::fs::write(TASK_DELAYACCT, "1");
        }
        DelayAccounting { previous }
    }

    /// The kernel counts each task's block-I/O waits now.
    fn counting() -> bool {
        match std::fs::read_to_string(TASK_DELAYACCT) {
            Ok(on) => on.trim() == "1",
            Err(_) => !std::fs::read_to_string("/proc/cmdline").unwrap_or_default().split_whitespace().any(|w| w == "nodelayacct"),
        }
    }
}

impl Drop for DelayAccounting {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            let _ = std::fs::write(TASK_DELAYACCT, previous.trim());
        }
    }
}

impl TaskStats {
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const TASKSTATS_CMD_GET: u8 = 1;
    const TASKSTATS_CMD_ATTR_PID: u16 = 1;
    const TASKSTATS_TYPE_STATS: u16 = 3;
    const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
    /// Offset of `blkio_count` in `struct taskstats` (fields are only ever appended).
    const BLKIO_COUNT: usize = 32;

    /// None where the kernel has no taskstats or does not count delays now.
    fn open() -> Option<TaskStats> {
        if !DelayAccounting::counting() {
            return None;
        }
        // SAFETY: a netlink socket we own, closed on drop.
        let socket = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC) };
        if socket < 0 {
            return None;
        }
        let mut stats = TaskStats { socket, family: Self::GENL_ID_CTRL };
        let reply = stats.ask(Self::CTRL_CMD_GETFAMILY, Self::CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")?;
        let id = attributes(&reply).find(|(kind, _)| *kind == Self::CTRL_ATTR_FAMILY_ID)?.1;
        stats.family = u16::from_ne_bytes(id.get(..2)?.try_into().ok()?);
        Some(stats)
    }

    /// One generic-netlink request with one attribute; the reply's attributes.
    fn ask(&self, cmd: u8, attr: u16, value: &[u8]) -> Option<Vec<u8>> {
        let attr_len = 4 + value.len();
        let len = 16 + 4 + attr_len.next_multiple_of(4);
        let mut msg = vec![0u8; len];
        msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&self.family.to_ne_bytes());
        msg[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg[16] = cmd;
        msg[17] = 1;
        msg[20..22].copy_from_slice(&(attr_len as u16).to_ne_bytes());
        msg[22..24].copy_from_slice(&attr.to_ne_bytes());
        msg[24..24 + value.len()].copy_from_slice(value);
        // SAFETY: sends our buffer on our socket (to the kernel: the default destination).
        if unsafe { libc::send(self.socket, msg.as_ptr().cast(), msg.len(), 0) } != len as isize {
            return None;
        }
        let mut reply = vec![0u8; 4096];
        // SAFETY: receives into our buffer.
        let n = unsafe { libc::recv(self.socket, reply.as_mut_ptr().cast(), reply.len(), 0) };
        let n = usize::try_from(n).ok()?;
        let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
        if n < 20 || kind == libc::NLMSG_ERROR as u16 {
            return None;
        }
        reply.truncate(n.min(u32::from_ne_bytes(reply[0..4].try_into().ok()?) as usize));
        Some(reply.split_off(20))
    }

    fn blkio_count(&self, tid: u32) -> Option<u64> {
        let reply = self.ask(Self::TASKSTATS_CMD_GET, Self::TASKSTATS_CMD_ATTR_PID, &tid.to_ne_bytes())?;
        let aggregate = attributes(&reply).find(|(kind, _)| *kind == Self::TASKSTATS_TYPE_AGGR_PID)?.1;
        let stats = attributes(aggregate).find(|(kind, _)| *kind == Self::TASKSTATS_TYPE_STATS)?.1;
        Some(u64::from_ne_bytes(stats.get(Self::BLKIO_COUNT..Self::BLKIO_COUNT + 8)?.try_into().ok()?))
    }
}

impl Drop for TaskStats {
    fn drop(&mut self) {
        // SAFETY: our socket.
        unsafe { libc::close(self.socket) };
    }
}

/// The netlink attributes in `buf`: (type, payload).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(buf.get(0..2)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?) & 0x3fff;
        let payload = buf.get(4..len)?;
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, payload))
    })
}

/// What the network thread did in one phase.
#[derive(Default)]
struct Served {
    fetches: u64,
    produces: u64,
    /// [start, end) of every sendfile, CLOCK_MONOTONIC ns.
    sendfiles: Vec<(u64, u64)>,
    /// Each sendfile's ground truth, when asked for.
    truths: Vec<ChunkTruth>,
}

/// The network thread: answers both connections until both clients have closed them.
/// `observe`: record each sendfile's [`ChunkTruth`].
fn serve(fetch_fd: RawFd, produce_fd: RawFd, segment: &std::fs::File, observe: bool) -> Result<Served> {
    let truth = if observe { Some(TruthReader::new(segment)?) } else { None };
    // SAFETY: epoll on fds we own; the events array outlives the calls.
    let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize, "epoll_create1")? as RawFd;
    for fd in [fetch_fd, produce_fd] {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize, "epoll_ctl")?;
    }
    let mut served = Served::default();
    let mut offset: i64 = 0;
    let mut body = vec![0u8; 4096];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let result = (|| -> Result<()> {
        let mut open = 2;
        while open > 0 {
            let n = check(unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 4, 10_000) } as isize, "epoll_wait")?;
            if n == 0 {
                bail!("no request for 10 s");
            }
            for ev in &events[..n] {
                let fd = ev.u64 as RawFd;
                let mut size = [0u8; 4];
                if !read_exact(fd, &mut size)? {
                    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } as isize, "epoll_ctl")?;
                    open -= 1;
                    continue;
                }
                let len = (i32::from_be_bytes(size) as usize).min(body.len());
                read_exact(fd, &mut body[..len])?;
                let api = i16::from_be_bytes([body[0], body[1]]);
                let corr = [body[4], body[5], body[6], body[7]];
                match api {
                    API_FETCH => {
                        let mut header = [0u8; 16];
                        header[..4].copy_from_slice(&((12 + CHUNK) as i32).to_be_bytes());
                        header[4..8].copy_from_slice(&corr);
                        check(unsafe { libc::write(fd, header.as_ptr().cast(), 16) }, "write")?;
                        let before = truth.as_ref().map(|t| (t.page_state(offset as usize, CHUNK), t.io_waits()));
                        let start = now_ns();
                        let sent = check(
                            unsafe { libc::sendfile(fd, segment.as_raw_fd(), &mut offset, CHUNK) },
                            "sendfile",
                        )?;
                        let end = now_ns();
                        served.sendfiles.push((start, end));
                        if let (Some(t), Some(((cached_before, uptodate_before), waits))) = (&truth, before) {
                            let io_waits = waits.zip(t.io_waits()).map(|(a, b)| b.saturating_sub(a));
                            served.truths.push(ChunkTruth { cached_before, uptodate_before, io_waits, duration_ns: end - start });
                        }
                        if sent != CHUNK {
                            bail!("sendfile sent {sent} of {CHUNK}");
                        }
                        served.fetches += 1;
                    }
                    API_PRODUCE => {
                        let mut response = [0u8; 12];
                        response[..4].copy_from_slice(&8i32.to_be_bytes());
                        response[4..8].copy_from_slice(&corr);
                        check(unsafe { libc::write(fd, response.as_ptr().cast(), 12) }, "write")?;
                        served.produces += 1;
                    }
                    other => bail!("unexpected api_key {other}"),
                }
            }
        }
        Ok(())
    })();
    unsafe { libc::close(epoll) };
    result.map(|()| served)
}

/// One phase's work for a network thread: the fetch and produce connections, the segment, and
/// whether to record each sendfile's ground truth.
type Job = (TcpStream, TcpStream, std::fs::File, bool);

/// The broker's network thread, alive for the whole run as a broker's is (kstall learns its
/// role when it attaches); each phase hands it a pair of connections and a segment.
struct NetworkThread {
    jobs: std::sync::mpsc::Sender<Job>,
    done: std::sync::mpsc::Receiver<Result<Served>>,
}

impl NetworkThread {
    fn start() -> Result<NetworkThread> {
        NetworkThread::spawn(Duration::ZERO, usize::MAX)
    }

    /// A network thread that waits `first` before it takes its first job, and ends after
    /// `jobs` of them.
    fn spawn(first: Duration, jobs: usize) -> Result<NetworkThread> {
        let (jobs_tx, inbox) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("kafka-network-t".into()).spawn(move || {
            name_this_thread("kafka-network-t");
            std::thread::sleep(first);
            for (fetch, produce, segment, observe) in inbox.into_iter().take(jobs) {
                if done_tx.send(serve(fetch.as_raw_fd(), produce.as_raw_fd(), &segment, observe)).is_err() {
                    break;
                }
            }
        })?;
        Ok(NetworkThread { jobs: jobs_tx, done })
    }
}

/// One phase: the network thread serves `fetches` Fetches (paced by `pace`) from `segment`
/// while the producer produces one request at a time. Returns the JSON line of ground truth.
/// `observe`: the network thread records each sendfile's ground truth ([`ChunkTruth`]).
fn phase(network: &NetworkThread, name: &str, segment: &std::fs::File, fetches: usize, pace: Duration, observe: bool) -> Result<serde_json::Value> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let fetcher = TcpStream::connect(listener.local_addr()?)?;
    let (fetch_server, _) = listener.accept()?;
    let producer = TcpStream::connect(listener.local_addr()?)?;
    let (produce_server, _) = listener.accept()?;
    for s in [&fetcher, &fetch_server, &producer, &produce_server] {
        s.set_nodelay(true)?;
    }
    network.jobs.send((fetch_server, produce_server, segment.try_clone()?, observe))?;

    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<Vec<(u64, u64)>> {
            let mut requests = Vec::new();
            let mut response = [0u8; 12];
            let mut corr = 0;
            while !stop.load(Ordering::Relaxed) {
                corr += 1;
                let frame = request_frame(API_PRODUCE, 3, corr, PRODUCE_CLIENT, &[0u8; 32]);
                let sent = now_ns();
                send_all(producer.as_raw_fd(), &frame)?;
                recv_all(producer.as_raw_fd(), &mut response)?;
                requests.push((sent, now_ns()));
                std::thread::sleep(PRODUCE_GAP);
            }
            Ok(requests)
        })
    };
    let started = Instant::now();
    let mut response = vec![0u8; 16 + CHUNK];
    for corr in 0..fetches {
        let frame = request_frame(API_FETCH, 4, corr as i32, FETCH_CLIENT, &[0u8; 40]);
        send_all(fetcher.as_raw_fd(), &frame)?;
        recv_all(fetcher.as_raw_fd(), &mut response)?;
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    drop(fetcher);
    stop.store(true, Ordering::Relaxed);
    // The producer's socket closes as its thread ends; then the network thread ends.
    let produced = producing.join().map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let served = network.done.recv().context("the network thread ended")??;
    let overlaps = |(a, b): (u64, u64)| served.sendfiles.iter().any(|&(s, e)| s < b && a < e);
    let sendfile_ns: Vec<u64> = served.sendfiles.iter().map(|(s, e)| e - s).collect();
    let mut truth = json!({
        "phase": name,
        "seconds": started.elapsed().as_secs_f64(),
        "fetches": served.fetches,
        "produces_served": served.produces,
        "produces_sent": produced.len(),
        "sendfiles": served.sendfiles.len(),
        "sendfile_ns_max": sendfile_ns.iter().max(),
        "sendfile_ns_median": median(&sendfile_ns),
        // Produce requests in flight while a sendfile ran (they waited behind it).
        "produces_overlapping_sendfile": produced.iter().filter(|&&r| overlaps(r)).count(),
    });
    if observe {
        truth["chunks"] = chunk_truth(&served.truths);
    }
    Ok(truth)
}

/// The per-call ground truth of a phase, summed: the bounds kstall's verdicts must fall in.
fn chunk_truth(truths: &[ChunkTruth]) -> serde_json::Value {
    // SAFETY: sysconf has no memory effects.
    let pages = (CHUNK / unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize) as u64;
    let count = |f: &dyn Fn(&ChunkTruth) -> bool| truths.iter().filter(|t| f(t)).count();
    let waited = |t: &ChunkTruth| t.io_waits.is_some_and(|w| w > 0);
    let cachestat = truths.iter().all(|t| t.cached_before.is_some());
    let delay_accounting = truths.iter().all(|t| t.io_waits.is_some());
    json!({
        "calls": truths.len(),
        "cachestat": cachestat,
        "delay_accounting": delay_accounting,
        // Nothing of the chunk was in the page cache: the call itself had to read it in.
        "none_cached_before": cachestat.then(|| count(&|t| t.cached_before == Some(0))),
        // Not a page of it was uptodate: cached pages were still being read in.
        "none_uptodate_before": count(&|t| t.uptodate_before == 0),
        "all_uptodate_before": count(&|t| t.uptodate_before == pages),
        "waited_for_io": delay_accounting.then(|| count(&waited)),
        // Must be misses: the call read its pages in, or the kernel counted it waiting for I/O.
        "must_miss": count(&|t| t.cached_before == Some(0) || waited(t)),
        // Must be hits: every page uptodate before, and (where counted) no I/O wait.
        "must_hit": count(&|t| t.uptodate_before == pages && !waited(t)),
        // Per call, `cached/uptodate/io_waits/microseconds` ('-' where unknown), for a reader
        // who wants to see which calls a count disagrees on.
        "each": truths
            .iter()
            .map(|t| {
                let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                format!("{}/{}/{}/{}", opt(t.cached_before), t.uptodate_before, opt(t.io_waits), t.duration_ns / 1000)
            })
            .collect::<Vec<_>>()
            .join(" "),
    })
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The process's main: phases on stdin, ground truth on stdout. The segments go under `dir`,
/// the `readahead` phase's under `readahead_dir` when given.
pub fn main(dir: &Path, readahead_dir: Option<&Path>) -> Result<()> {
    use std::io::{BufRead, Write};
    std::fs::create_dir_all(dir)?;
    let path = |n: &str| -> PathBuf {
        let dir = if n == "readahead" { readahead_dir.unwrap_or(dir) } else { dir };
        dir.join(format!("{n}-0")).join("00000000000000000000.log")
    };
    for n in ["cold", "prefetch", "readahead"] {
        std::fs::create_dir_all(path(n).parent().expect("has a parent"))?;
    }
    // Before the network thread starts: the kernel gives a task delay accounting only if it
    // was on when the task was created.
    let _delays = DelayAccounting::on();
    let network = NetworkThread::start()?;
    println!("ready");
    let mut cold: Option<std::fs::File> = None;
    let mut locked: Option<(*mut libc::c_void, usize)> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let truth = match line.trim() {
            "cold" => {
                let file = cold_segment(&path("cold"), 1, SEGMENT_BYTES)?;
                // SAFETY: fadvise on our file: no readahead, each page read when asked for.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
                let truth = phase(&network, "cold", &file, SEGMENT_BYTES / CHUNK, Duration::ZERO, false)?;
                cold = Some(file);
                truth
            }
            "prefetch" => {
                let file = cold_segment(&path("prefetch"), 2, SEGMENT_BYTES)?;
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
                phase(&network, "prefetch", &file, PREFETCH_FETCHES, PREFETCH_PACE, false)?
            }
            "warm" => {
                let file = cold.as_ref().context("`warm` re-reads the `cold` segment: run `cold` first")?;
                // Pinned: a VM may trim the page cache on its own, and a re-read would truly miss.
                // SAFETY: a read-only shared mapping of the whole file, locked, kept until exit.
                let addr = unsafe {
                    libc::mmap(std::ptr::null_mut(), SEGMENT_BYTES, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
                };
                if addr == libc::MAP_FAILED || unsafe { libc::mlock(addr, SEGMENT_BYTES) } != 0 {
                    bail!("cannot lock the segment in memory: {}", std::io::Error::last_os_error());
                }
                locked = Some((addr, SEGMENT_BYTES));
                phase(&network, "warm", file, SEGMENT_BYTES / CHUNK, Duration::ZERO, false)?
            }
            "readahead" => {
                let file = cold_segment(&path("readahead"), 3, READAHEAD_SEGMENT_BYTES)?;
                // The kernel's default readahead, as a broker's segment files have.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_NORMAL) };
                phase(&network, "readahead", &file, READAHEAD_SEGMENT_BYTES / CHUNK, Duration::ZERO, true)?
            }
            "burst" => {
                if locked.is_none() {
                    bail!("`burst` re-reads the locked `cold` segment: run `warm` first");
                }
                let file = cold.as_ref().context("`burst` re-reads the `cold` segment")?;
                let short_lived = NetworkThread::spawn(BURST_THREAD_WAITS, 1)?;
                let truth = phase(&short_lived, "burst", file, BURST_FETCHES, Duration::ZERO, false)?;
                // Its one job done, the thread has ended (or is ending): wait until it is gone.
                drop(short_lived);
                wait_for_threads(2)?;
                truth
            }
            other => bail!("unknown phase {other:?}: cold, prefetch, warm, readahead or burst"),
        };
        println!("{truth}");
        std::io::stdout().flush()?;
    }
    if let Some((addr, len)) = locked {
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(addr, len) };
    }
    Ok(())
}
