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
//!   `warm`      the `cold` segment again, locked in memory: every sendfile hits.
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

use crate::{kafka_protocol::request_frame, synthetic_broker::name_this_thread};

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
/// Gap between a Produce response and the next request.
const PRODUCE_GAP: Duration = Duration::from_micros(500);

const API_PRODUCE: i16 = 0;
const API_FETCH: i16 = 1;

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


/// Writes a segment and drops it from the page cache.
fn cold_segment(path: &Path, fill: u8) -> Result<std::fs::File> {
    std::fs::write(path, vec![fill; SEGMENT_BYTES])?;
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    // SAFETY: fadvise on a file we own; the pages are clean after the sync.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(file)
}

/// What the network thread did in one phase.
#[derive(Default)]
struct Served {
    fetches: u64,
    produces: u64,
    /// [start, end) of every sendfile, CLOCK_MONOTONIC ns.
    sendfiles: Vec<(u64, u64)>,
}

/// The network thread: answers both connections until both clients have closed them.
fn serve(fetch_fd: RawFd, produce_fd: RawFd, segment: &std::fs::File) -> Result<Served> {
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
                        let start = now_ns();
                        let sent = check(
                            unsafe { libc::sendfile(fd, segment.as_raw_fd(), &mut offset, CHUNK) },
                            "sendfile",
                        )?;
                        served.sendfiles.push((start, now_ns()));
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

/// The broker's network thread, alive for the whole run as a broker's is (kstall learns its
/// role when it attaches); each phase hands it a pair of connections and a segment.
struct NetworkThread {
    jobs: std::sync::mpsc::Sender<(TcpStream, TcpStream, std::fs::File)>,
    done: std::sync::mpsc::Receiver<Result<Served>>,
}

impl NetworkThread {
    fn start() -> Result<NetworkThread> {
        let (jobs, inbox) = std::sync::mpsc::channel::<(TcpStream, TcpStream, std::fs::File)>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("kafka-network-t".into()).spawn(move || {
            name_this_thread("kafka-network-t");
            for (fetch, produce, segment) in inbox {
                if done_tx.send(serve(fetch.as_raw_fd(), produce.as_raw_fd(), &segment)).is_err() {
                    break;
                }
            }
        })?;
        Ok(NetworkThread { jobs, done })
    }
}

/// One phase: the network thread serves `fetches` Fetches (paced by `pace`) from `segment`
/// while the producer produces one request at a time. Returns the JSON line of ground truth.
fn phase(network: &NetworkThread, name: &str, segment: &std::fs::File, fetches: usize, pace: Duration) -> Result<serde_json::Value> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let fetcher = TcpStream::connect(listener.local_addr()?)?;
    let (fetch_server, _) = listener.accept()?;
    let producer = TcpStream::connect(listener.local_addr()?)?;
    let (produce_server, _) = listener.accept()?;
    for s in [&fetcher, &fetch_server, &producer, &produce_server] {
        s.set_nodelay(true)?;
    }
    network.jobs.send((fetch_server, produce_server, segment.try_clone()?))?;

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
    Ok(json!({
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
    }))
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The process's main: phases on stdin, ground truth on stdout.
pub fn main(dir: &Path) -> Result<()> {
    use std::io::{BufRead, Write};
    std::fs::create_dir_all(dir)?;
    let path = |n: &str| -> PathBuf { dir.join(format!("{n}-0")).join("00000000000000000000.log") };
    for n in ["cold", "prefetch"] {
        std::fs::create_dir_all(path(n).parent().expect("has a parent"))?;
    }
    let network = NetworkThread::start()?;
    println!("ready");
    let mut cold: Option<std::fs::File> = None;
    let mut locked: Option<(*mut libc::c_void, usize)> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let truth = match line.trim() {
            "cold" => {
                let file = cold_segment(&path("cold"), 1)?;
                // SAFETY: fadvise on our file: no readahead, each page read when asked for.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
                let truth = phase(&network, "cold", &file, SEGMENT_BYTES / CHUNK, Duration::ZERO)?;
                cold = Some(file);
                truth
            }
            "prefetch" => {
                let file = cold_segment(&path("prefetch"), 2)?;
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
                phase(&network, "prefetch", &file, PREFETCH_FETCHES, PREFETCH_PACE)?
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
                phase(&network, "warm", file, SEGMENT_BYTES / CHUNK, Duration::ZERO)?
            }
            other => bail!("unknown phase {other:?}: cold, prefetch or warm"),
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
