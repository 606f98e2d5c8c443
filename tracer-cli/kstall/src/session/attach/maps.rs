//! Reading and writing the probes' maps while they run: histograms, counters, the network
//! threads, the ring buffer, and what aya does not offer, by raw `bpf(2)`
//! (lookup-and-delete on a hash map, a program's recursion misses).
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use kstall_common::{HistKey, LatencyHist, counter, map, thread_slot};
use kstall_core::{
    aggregate::Taken,
    kernel::{Event, decode_event},
};

use super::Probes;

/// BPF_MAP_LOOKUP_AND_DELETE_ELEM on a hash map (Linux 5.14+), which aya offers only for
/// queues and stacks; before 5.14, a lookup then a delete. Ok(None): the entry was already
/// gone; Err: it could not be taken (it stays in the map, and is counted as unread).
fn lookup_and_delete(fd: i32, key: &HistKey) -> std::io::Result<Option<LatencyHist>> {
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
    let with_value = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key as *const HistKey as u64,
        value: &mut value as *mut LatencyHist as u64,
        flags: 0,
    };
    // The kernel refuses (EINVAL) an attr with anything set past the command's last field:
    // for BPF_MAP_DELETE_ELEM that is the key, so its value pointer must be zero. (Sent with
    // the value, the pre-5.14 delete failed on every call: 5.10 dropped the calls of every
    // thread that exited.)
    let key_only = ElemAttr { value: 0, ..with_value };
    let bpf = |cmd: libc::c_long, attr: &ElemAttr| {
        // SAFETY: the attr points at a live key (and value) of the map's sizes.
        match unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const ElemAttr, std::mem::size_of::<ElemAttr>()) } {
            0 => Ok(true),
            _ => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
                e => Err(e),
            },
        }
    };
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &with_value) {
        Ok(found) => return Ok(found.then_some(value)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP)) => {}
        Err(e) => return Err(e),
    }
    if !bpf(BPF_MAP_LOOKUP_ELEM, &with_value)? {
        return Ok(None);
    }
    // Gone between the lookup and the delete (a new thread with the tid cannot delete it):
    // the value read is what there was.
    bpf(BPF_MAP_DELETE_ELEM, &key_only)?;
    Ok(Some(value))
}

/// BPF_OBJ_GET_INFO_BY_FD on a program: its recursion_misses, 0 where unknown.
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// The info part of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: a plain C struct of integers; all zero is its empty value. Kernels that know
    // fewer fields take the zero tail and fill what they know.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: the attr points at a live, writable info of the length it names.
    let ok = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr as *const InfoAttr, std::mem::size_of::<InfoAttr>()) == 0 };
    if ok { info.recursion_misses } else { 0 }
}


impl Probes {
    fn histograms_map(&self) -> Result<BpfHashMap<&MapData, HistKey, LatencyHist>> {
        let m = self.ebpf.map(map::HISTOGRAMS).context("histogram map missing")?;
        Ok(BpfHashMap::try_from(m)?)
    }

    /// Every (thread, syscall, verdict) histogram the kernel holds now, and how many entries
    /// could not be read (an entry deleted while iterating is skipped, not counted).
    pub fn histograms(&self) -> Result<(Vec<(HistKey, LatencyHist)>, u64)> {
        let (mut entries, mut unread) = (Vec::new(), 0);
        for entry in self.histograms_map()?.iter() {
            match entry {
                Ok(entry) => entries.push(entry),
                // A failed key walk ends the iteration: what it did not reach counts as one.
                Err(_) => unread += 1,
            }
        }
        Ok((entries, unread))
    }

    /// Takes histograms out of the kernel: each entry's value as it was when deleted, so a call
    /// counted between an earlier read and the delete (a new thread that reused the tid) is
    /// kept. Entries already gone are skipped; those that could not be taken stay in the map
    /// (the next refresh tries again) and are listed as failed.
    pub fn take_histograms(&mut self, keys: &[HistKey]) -> Result<Taken> {
        let Some(aya::maps::Map::HashMap(m)) = self.ebpf.map(map::HISTOGRAMS) else {
            bail!("histogram map missing")
        };
        let fd = m.fd().as_fd().as_raw_fd();
        let mut taken = Taken { entries: Vec::with_capacity(keys.len()), failed: Vec::new() };
        for key in keys {
            match lookup_and_delete(fd, key) {
                Ok(Some(hist)) => taken.entries.push((*key, hist)),
                Ok(None) => {}
                Err(_) => taken.failed.push(*key),
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

    /// Runs of the probes the kernel skipped, summed over programs (bpf_prog_info's
    /// recursion_misses, 5.12+; 0 before). A tracepoint or kprobe program does not run on a CPU
    /// where another one runs or where a bpf() map syscall is in progress; on a preemptible
    /// kernel (full or lazy preemption, the default of recent ones) such a syscall can be
    /// preempted by a broker thread, whose calls on that CPU then go untraced. Each skipped run
    /// may miss a call, a request or a stall.
    pub fn probe_runs_skipped(&self) -> u64 {
        self.ebpf.programs().filter_map(|(_, p)| p.fd().ok()).map(|fd| recursion_misses(fd.as_fd())).sum()
    }

    /// Diagnostic counters summed over CPUs, indexed by `kstall_common::counter`.
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

