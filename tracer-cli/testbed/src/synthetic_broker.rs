//! A process that does what a Kafka network thread does, syscall by syscall, in a tight loop:
//! the load of `cargo xtask bench`. A JVM adds noise (GC, JIT, safepoints) that would hide
//! nanoseconds; this does not. It runs with `kafka.Kafka` among its arguments and its worker
//! thread named `kafka-network-t`, so kstall takes it for a broker and the thread for a network
//! thread: every probe path of a real broker runs (histograms, Kafka framing of the socket
//! reads, response tracking through write and sendfile, one ring-buffer record per request).
//!
//! Per request, on one thread (no wakeups between threads to measure by accident):
//!   sendto(client, request)            untraced, the client's send
//!   read(server, 4); read(server, n)   traced: size, then the request (api Fetch, client
//!                                      `bench-load`, a fresh correlation id)
//!   write(server, 16)                  traced: response size and correlation id
//!   sendfile(server, segment, 4096)    traced: the records, from the page cache
//!   recvfrom(client, 4112, WAITALL)    untraced, the client's read
//!
//! The same loop also runs on a second thread, named `kafka-request-h`: there kstall does what
//! it does on every broker thread (latency histograms with page-cache evidence) but no
//! protocol work, which is the fair match for a bpftrace histogram script.
//!
//! A third thread, named `VM Thread`, makes the syscall a JVM makes most, futex (a wake with no
//! waiter), which kstall does not trace: what tracing costs the broker's other threads.
//! [`futex_wakes`] is the same loop for another process on the host (`xtask futex-loop N`).
//!
//! Control on stdin, one command a line: `run N RATE THREAD` does N requests (RATE requests/s,
//! 0 for as fast as it can) on THREAD (`network`, `handler`, or `both` at once, N each; or N
//! futex wakes on `other`) and answers `done NANOS N` on stdout (the longer thread's time); end
//! of input ends the process.
use std::{
    io::{BufRead, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::kafka_protocol::request_frame;

/// Traced syscalls per request (two reads, a write, a sendfile).
pub const TRACED_CALLS_PER_REQUEST: u64 = 4;
/// The argument that makes kstall take this process for a broker.
pub const BROKER_MAIN_CLASS: &str = "kafka.Kafka";
pub const CLIENT_ID: &str = "bench-load";
const RECORDS_BYTES: usize = 4096;
const SEGMENT_BYTES: usize = 1 << 20;

/// The traced side of the loop: one network thread's sockets and segment file.
struct NetworkThread {
    client: TcpStream,
    server: TcpStream,
    segment: std::fs::File,
    correlation_id: i32,
    offset: i64,
    request: Vec<u8>,
    body: Vec<u8>,
    response: Vec<u8>,
}

fn check(ret: isize, what: &str, want: usize) -> Result<()> {
    if ret as usize != want {
        bail!("{what} returned {ret} ({}), wanted {want}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl NetworkThread {
    fn new(segment_path: &Path) -> Result<NetworkThread> {
        std::fs::write(segment_path, vec![7u8; SEGMENT_BYTES])?;
        let segment = std::fs::File::open(segment_path)?;
        // Read once, so every sendfile is a page-cache hit.
        std::io::copy(&mut &segment, &mut std::io::sink())?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        Ok(NetworkThread {
            client,
            server,
            segment,
            correlation_id: 0,
            offset: 0,
            request: Vec::new(),
            body: vec![0; 256],
            response: vec![0; 16 + RECORDS_BYTES],
        })
    }

    fn one_request(&mut self) -> Result<()> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        // A Fetch v0 (api_key 1) with a body the parser does not read.
        self.request = request_frame(1, 0, self.correlation_id, CLIENT_ID, &[0u8; 24]);
        let (client, server) = (self.client.as_raw_fd(), self.server.as_raw_fd());
        let body_len = self.request.len() - 4;
        // SAFETY: plain syscalls on fds we own, with buffers of the lengths given.
        unsafe {
            check(libc::send(client, self.request.as_ptr().cast(), self.request.len(), 0), "send", self.request.len())?;
            check(libc::read(server, self.body.as_mut_ptr().cast(), 4), "read size", 4)?;
            check(libc::read(server, self.body.as_mut_ptr().cast(), body_len), "read request", body_len)?;
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(&((12 + RECORDS_BYTES) as i32).to_be_bytes());
            header[4..8].copy_from_slice(&self.correlation_id.to_be_bytes());
            check(libc::write(server, header.as_ptr().cast(), 16), "write", 16)?;
            let mut offset = self.offset;
            check(libc::sendfile(server, self.segment.as_raw_fd(), &mut offset, RECORDS_BYTES) as isize, "sendfile", RECORDS_BYTES)?;
            self.offset = (self.offset + RECORDS_BYTES as i64) % SEGMENT_BYTES as i64;
            let want = self.response.len();
            check(libc::recv(client, self.response.as_mut_ptr().cast(), want, libc::MSG_WAITALL), "recv", want)?;
        }
        Ok(())
    }

    /// `n` requests at `rate` per second (0: unpaced); returns the time they took.
    fn run(&mut self, n: u64, rate: u64) -> Result<Duration> {
        let started = Instant::now();
        for i in 0..n {
            if rate > 0 {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
            self.one_request()?;
        }
        Ok(started.elapsed())
    }
}

/// Sets this thread's comm, which decides the role kstall gives it.
pub fn name_this_thread(name: &str) {
    let name = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Keeps a worker on one CPU, counted from the last down: a measured run on the last CPU, so
/// the tracer's own user space runs beside it, not on it; two at once on two CPUs.
pub fn pin_to_cpu_from_last(index: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls read and write only it.
    unsafe {
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1 - index % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Where a run happens: the thread's comm decides kstall's role for it.
pub const THREADS: [(&str, &str); 2] = [("network", "kafka-network-t"), ("handler", "kafka-request-h")];
/// The thread of untraced syscalls (futex wakes), as HotSpot names one of its own.
pub const OTHER_THREAD: (&str, &str) = ("other", "VM Thread");

/// `n` futex(FUTEX_WAKE) calls on a word nobody waits on: the JVM's commonest syscall, which
/// kstall does not trace. Returns the time they took.
pub fn futex_wakes(n: u64) -> Duration {
    let word = 0u32;
    let started = Instant::now();
    for _ in 0..n {
        // SAFETY: a wake on a private futex word we own; no waiter, nothing changes.
        unsafe { libc::syscall(libc::SYS_futex, &word as *const u32, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1, 0, 0, 0) };
    }
    started.elapsed()
}

/// A worker thread running the loop on request, with its own sockets and segment.
struct Worker {
    /// (requests, rate, CPU from the last)
    commands: mpsc::Sender<(u64, u64, usize)>,
    results: mpsc::Receiver<Result<Duration>>,
}

/// A thread named `comm` that runs `work(n, rate)` on request.
fn spawn_worker(comm: &'static str, mut work: impl FnMut(u64, u64) -> Result<Duration> + Send + 'static) -> Worker {
    let (commands, inbox) = mpsc::channel::<(u64, u64, usize)>();
    let (results_tx, results) = mpsc::channel::<Result<Duration>>();
    std::thread::spawn(move || {
        name_this_thread(comm);
        for (n, rate, cpu) in inbox {
            pin_to_cpu_from_last(cpu);
            if results_tx.send(work(n, rate)).is_err() {
                break;
            }
        }
    });
    Worker { commands, results }
}

/// The process's main: reads commands on stdin, runs them on the named thread.
pub fn main(scratch: &Path) -> Result<()> {
    std::fs::create_dir_all(scratch)?;
    let mut workers = Vec::new();
    for (i, (_, comm)) in THREADS.iter().enumerate() {
        let mut thread = NetworkThread::new(&scratch.join(format!("{i:020}.log")))?;
        workers.push(spawn_worker(comm, move |n, rate| thread.run(n, rate)));
    }
    let other = spawn_worker(OTHER_THREAD.1, |n, _| Ok(futex_wakes(n)));
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(n), Some(rate), Some(thread)) = (
            words.get(1).and_then(|w| w.parse::<u64>().ok()),
            words.get(2).and_then(|w| w.parse::<u64>().ok()),
            words.get(3),
        ) else {
            bail!("expected `run N RATE network|handler|both`, got {line:?}")
        };
        // `both`: the two threads at once, each with N requests at RATE.
        let chosen: Vec<&Worker> = if *thread == OTHER_THREAD.0 {
            vec![&other]
        } else {
            workers.iter().zip(THREADS).filter(|(_, (name, _))| *thread == "both" || name == thread).map(|(w, _)| w).collect()
        };
        if chosen.is_empty() {
            bail!("no thread {thread:?}: network, handler, both or other");
        }
        for (cpu, worker) in chosen.iter().enumerate() {
            worker.commands.send((n, rate, cpu))?;
        }
        let mut took = Duration::ZERO;
        for worker in &chosen {
            took = took.max(worker.results.recv().context("worker thread ended")??);
        }
        println!("done {} {n}", took.as_nanos());
        std::io::stdout().flush()?;
    }
    Ok(())
}
