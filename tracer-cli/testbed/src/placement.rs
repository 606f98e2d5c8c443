//! Which of a Kafka broker's network threads serves a connection, learnt from /proc rather than
//! guessed, and how to steer the next connection onto a chosen one.
//!
//! A listener's acceptor hands each new connection to the next network thread (`Processor`) in
//! turn. Each network thread waits in `epoll_wait` on its own selector's epoll fd:
//! `/proc/PID/task/TID/syscall` shows the syscall number and its first argument (the epfd)
//! while it waits, and `/proc/PID/fdinfo/EPFD` lists the `tfd:` of every fd registered on it.
//! The broker-side fd of a client's connection is found by its socket inode: the
//! `/proc/net/tcp{,6}` entry whose local port is the listener's and whose remote port is the
//! client's local port, then the `/proc/PID/fd/N -> socket:[INODE]` link. Thread names (15
//! bytes in `comm`) come in full from `jcmd PID Thread.print` (nid = tid).
use std::{
    collections::HashSet,
    fs,
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// One network thread of a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkThread {
    pub tid: u32,
    /// Its full Java name, `data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-0`.
    pub name: String,
    /// The processor id, the name's last number: the acceptor's round-robin order.
    pub processor: u32,
    /// Its selector's epoll fd in the broker process.
    pub epfd: i32,
}

/// The epoll waits (syscall numbers) a Java selector sits in.
#[cfg(target_arch = "x86_64")]
const EPOLL_WAITS: [u64; 3] = [232, 281, 441]; // epoll_wait, epoll_pwait, epoll_pwait2
#[cfg(target_arch = "aarch64")]
const EPOLL_WAITS: [u64; 2] = [22, 441]; // epoll_pwait, epoll_pwait2
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const EPOLL_WAITS: [u64; 0] = [];

/// Java threads of `pid` as `jcmd PID Thread.print` names them: (tid, name).
pub fn java_threads(pid: u32) -> Result<Vec<(u32, String)>> {
    let out = Command::new("jcmd").arg(pid.to_string()).arg("Thread.print").output().context("cannot run jcmd (openjdk-17-jdk-headless)")?;
    if !out.status.success() {
        bail!("jcmd {pid} Thread.print failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(parse_thread_print(&String::from_utf8_lossy(&out.stdout)))
}

/// `"name" #45 daemon prio=5 os_prio=0 cpu=1.2ms elapsed=3s tid=0x... nid=0x3039 runnable`
/// (Java 17 writes nid in hex, 19+ in decimal).
fn parse_thread_print(text: &str) -> Vec<(u32, String)> {
    let mut threads = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('"') else { continue };
        let Some((name, attrs)) = rest.rsplit_once('"') else { continue };
        let Some(nid) = attrs.split_whitespace().find_map(|a| a.strip_prefix("nid=")) else { continue };
        let tid = match nid.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => nid.parse().ok(),
        };
        if let Some(tid) = tid {
            threads.push((tid, name.to_string()));
        }
    }
    threads
}

/// `data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-0` (3.x) or
/// `data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0` (4.x): node id, listener, security
/// protocol, processor id.
fn is_network_thread_of(name: &str, listener: &str) -> bool {
    let Some((_, rest)) = name.split_once("kafka-network-thread-") else { return false };
    let Some((_node, rest)) = rest.split_once('-') else { return false };
    rest.starts_with(&format!("{listener}-")) || rest.starts_with(&format!("ListenerName({listener})-"))
}

/// The epoll fd `tid` of `pid` waits on, read while it waits (retried while the thread is busy).
pub fn epoll_fd(pid: u32, tid: u32) -> Result<i32> {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let mut fields = text.split_whitespace();
        let nr = fields.next().and_then(|n| n.parse::<u64>().ok());
        let arg0 = fields.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        if let (Some(nr), Some(fd)) = (nr, arg0)
            && EPOLL_WAITS.contains(&nr)
        {
            return Ok(fd as i32);
        }
        if Instant::now() > deadline {
            bail!("thread {tid} of {pid} was never seen in epoll_wait ({path}: {})", text.trim());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The fds registered on epoll fd `epfd` of `pid` (`tfd:` lines of its fdinfo).
pub fn epoll_targets(pid: u32, epfd: i32) -> Result<HashSet<i32>> {
    let path = format!("/proc/{pid}/fdinfo/{epfd}");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect())
}

/// A TCP socket of the host's network namespace, from /proc/net/tcp and tcp6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    pub local_port: u16,
    pub remote_port: u16,
    /// 1: ESTABLISHED, 10: LISTEN, ...
    pub state: u8,
    pub inode: u64,
}

fn port_of(address: &str) -> Option<u16> {
    u16::from_str_radix(address.rsplit_once(':')?.1, 16).ok()
}

/// Every TCP socket in /proc/net/tcp and /proc/net/tcp6 (Java's sockets are often IPv6 ones
/// with v4-mapped addresses).
pub fn tcp_entries() -> Result<Vec<TcpEntry>> {
    let mut entries = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (Some(local_port), Some(remote_port)) = (port_of(f[1]), port_of(f[2])) else { continue };
            let (Ok(state), Ok(inode)) = (u8::from_str_radix(f[3], 16), f[9].parse()) else { continue };
            entries.push(TcpEntry { local_port, remote_port, state, inode });
        }
    }
    // The kernel writes these tables a chunk at a time, walking its socket hash as it changes:
    // a socket can be listed twice in one read (a follower's connection came out twice).
    entries.sort_by_key(|e| (e.inode, e.local_port, e.remote_port, e.state));
    entries.dedup_by_key(|e| (e.inode, e.local_port, e.remote_port, e.state));
    Ok(entries)
}

const ESTABLISHED: u8 = 1;

/// The fd of `pid` whose socket has `inode`, if it has one.
pub fn fd_of_socket(pid: u32, inode: u64) -> Option<i32> {
    let wanted = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten().find_map(|e| {
        let link = fs::read_link(e.path()).ok()?;
        (link.to_str()? == wanted).then(|| e.file_name().to_str()?.parse().ok()).flatten()
    })
}

/// The network threads of one listener of one broker, and where its connections are.
#[derive(Clone, Debug)]
pub struct Placement {
    pub pid: u32,
    /// The listener's port.
    pub port: u16,
    /// In the acceptor's round-robin order.
    pub threads: Vec<NetworkThread>,
}

/// A follower's replica fetcher connection to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerConnection {
    pub broker_id: i32,
    pub client_port: u16,
    /// Index into [`Placement::threads`].
    pub thread: usize,
}

impl Placement {
    /// The network threads of `listener` (`PLAINTEXT`) of broker `pid`, which listens on `port`.
    pub fn new(pid: u32, port: u16, listener: &str) -> Result<Placement> {
        let tag = format!("listener {listener}");
        let mut threads = Vec::new();
        let java = java_threads(pid)?;
        for (tid, name) in java.iter().cloned() {
            if !is_network_thread_of(&name, listener) {
                continue;
            }
            let processor = name.rsplit('-').next().and_then(|n| n.parse().ok()).with_context(|| format!("no processor id in {name}"))?;
            let epfd = epoll_fd(pid, tid)?;
            threads.push(NetworkThread { tid, name, processor, epfd });
        }
        if threads.is_empty() {
            let names: Vec<&String> = java.iter().map(|(_, n)| n).filter(|n| n.contains("network")).collect();
            bail!("broker {pid} has no network thread for {tag} among {} Java threads; network ones: {names:?}", java.len());
        }
        threads.sort_by_key(|t| t.processor);
        Ok(Placement { pid, port, threads })
    }

    /// The broker-side fd of the connection whose client-side local port is `client_port`.
    pub fn broker_fd(&self, client_port: u16) -> Result<Option<i32>> {
        let entries = tcp_entries()?;
        let Some(entry) = entries.iter().find(|e| e.local_port == self.port && e.remote_port == client_port && e.state == ESTABLISHED) else {
            return Ok(None);
        };
        Ok(fd_of_socket(self.pid, entry.inode))
    }

    /// Which network thread (index into `threads`) has the connection from `client_port` on
    /// its selector now; None when none has (not yet registered, or muted for a moment).
    pub fn thread_now(&self, client_port: u16) -> Result<Option<usize>> {
        let Some(fd) = self.broker_fd(client_port)? else { return Ok(None) };
        for (i, t) in self.threads.iter().enumerate() {
            if epoll_targets(self.pid, t.epfd)?.contains(&fd) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// As [`Placement::thread_now`], waiting up to 10 s for a thread to have it on its selector.
    /// Kafka mutes a connection while one of its requests is in the broker (its interest ops
    /// go to 0, and Java's selector then removes the fd from the epoll set): a connection
    /// whose requests wait long (a follower's fetch in purgatory) is registered for moments
    /// only, so this looks often.
    pub fn thread_of(&self, client_port: u16) -> Result<usize> {
        self.thread_within(client_port, Duration::from_secs(10))
    }

    pub fn thread_within(&self, client_port: u16, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let Some(fd) = self.wait_broker_fd(client_port, deadline)? else {
            bail!("broker {} has no socket for the connection from port {client_port}", self.pid);
        };
        loop {
            for (i, t) in self.threads.iter().enumerate() {
                if epoll_targets(self.pid, t.epfd)?.contains(&fd) {
                    return Ok(i);
                }
            }
            if Instant::now() > deadline {
                bail!("no network thread of {} had the connection from port {client_port} (fd {fd}) on its selector within {timeout:?}", self.pid);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn wait_broker_fd(&self, client_port: u16, deadline: Instant) -> Result<Option<i32>> {
        loop {
            if let Some(fd) = self.broker_fd(client_port)? {
                return Ok(Some(fd));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The thread serving `client_port`: (tid, name).
    pub fn thread_serving(&self, client_port: u16) -> Result<(u32, String)> {
        let t = &self.threads[self.thread_of(client_port)?];
        Ok((t.tid, t.name.clone()))
    }

    /// Opens a client with `connect` so that its connection lands on thread `target`: holds
    /// plain TCP connections (no request) until the last one landed on the thread before
    /// `target`, then connects the client, checks where it landed (`client_port` waits for and
    /// returns its connection's local port), and tries again if something else connected in
    /// between.
    pub fn steer<T>(
        &self,
        target: usize,
        mut connect: impl FnMut() -> Result<T>,
        mut client_port: impl FnMut(&mut T) -> Result<u16>,
    ) -> Result<T> {
        let n = self.threads.len();
        let before = (target + n - 1) % n;
        let mut landed = Vec::new();
        for _ in 0..8 {
            let mut held = Vec::new();
            loop {
                let stream = TcpStream::connect(("127.0.0.1", self.port))?;
                let thread = self.thread_of(stream.local_addr()?.port())?;
                held.push(stream);
                if thread == before {
                    break;
                }
                if held.len() > 3 * n {
                    bail!("{} connections never reached thread {before}", held.len());
                }
            }
            let mut client = connect()?;
            let port = client_port(&mut client)?;
            let thread = self.thread_of(port)?;
            drop(held);
            if thread == target {
                return Ok(client);
            }
            landed.push(thread);
            drop(client);
        }
        bail!("could not steer a connection onto thread {target}: landed on {landed:?}")
    }

    /// The replica fetcher connections of the `followers` (broker id, pid) to this broker:
    /// sockets from a follower's ephemeral port to this listener, owned by that follower. Their
    /// fetches wait in purgatory (muted) when there is nothing to replicate: have something
    /// produced meanwhile, or this may take up to 30 s per follower.
    pub fn follower_connections(&self, followers: &[(i32, u32)]) -> Result<Vec<FollowerConnection>> {
        let entries = tcp_entries()?;
        let mut found = Vec::new();
        for server_side in entries.iter().filter(|e| e.local_port == self.port && e.state == ESTABLISHED) {
            let client = server_side.remote_port;
            let Some(client_side) = entries.iter().find(|e| e.local_port == client && e.remote_port == self.port && e.state == ESTABLISHED) else {
                continue;
            };
            for &(broker_id, pid) in followers {
                if fd_of_socket(pid, client_side.inode).is_some() {
                    found.push(FollowerConnection { broker_id, client_port: client, thread: self.thread_within(client, Duration::from_secs(30))? });
                }
            }
        }
        found.sort_by_key(|f| f.broker_id);
        Ok(found)
    }
}

/// The local ports of `pid`'s established connections to 127.0.0.1:`port`.
pub fn connections_of(pid: u32, port: u16) -> Result<Vec<u16>> {
    let entries = tcp_entries()?;
    Ok(entries
        .iter()
        .filter(|e| e.remote_port == port && e.state == ESTABLISHED && fd_of_socket(pid, e.inode).is_some())
        .map(|e| e.local_port)
        .collect())
}

/// Waits up to `timeout` for `pid` to have exactly one connection to 127.0.0.1:`port`; returns
/// its local port (fails when it has more than one).
pub fn wait_single_connection(pid: u32, port: u16, timeout: Duration) -> Result<u16> {
    let deadline = Instant::now() + timeout;
    loop {
        let ports = connections_of(pid, port)?;
        match ports.len() {
            1 => return Ok(ports[0]),
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            0 => bail!("process {pid} did not connect to port {port} within {timeout:?}"),
            k => bail!("process {pid} has {k} connections to port {port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_print_names_and_nids() {
        let text = "\"data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-2\" #45 prio=5 os_prio=0 cpu=1.00ms elapsed=3.00s tid=0x00007f nid=0x3039 runnable  [0x00007f]\n\
                    \"main\" #1 [777] prio=5 os_prio=0 cpu=1ms elapsed=3s tid=0x1 nid=777 waiting on condition\n   java.lang.Thread.State: RUNNABLE\n";
        assert_eq!(
            parse_thread_print(text),
            [(0x3039, "data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-2".to_string()), (777, "main".to_string())]
        );
    }

    #[test]
    fn network_thread_names() {
        assert!(is_network_thread_of("data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-2", "PLAINTEXT"));
        assert!(is_network_thread_of("data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-0", "PLAINTEXT"));
        assert!(!is_network_thread_of("data-plane-kafka-network-thread-1-CONTROLLER-PLAINTEXT-0", "PLAINTEXT"));
        assert!(!is_network_thread_of("kafka-request-handler-0", "PLAINTEXT"));
    }

    #[test]
    fn finds_its_own_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let mine = connections_of(std::process::id(), port).unwrap();
        assert_eq!(mine, [client.local_addr().unwrap().port()]);
    }
}
