//! Loading the embedded probes into the kernel, pointing them at the broker, attaching them,
//! and reading their maps. The traced syscalls are hooked by the cheapest mechanism the kernel
//! allows, decided at load: fentry/fexit, else raw tracepoints `sys_enter`/`sys_exit`, else the
//! classic syscall tracepoints (`SyscallHooks`; `KSTALL_HOOKS` forces one). Evidence comes
//! from (raw) tracepoints, and for what older kernels lack as tracepoints, from kprobes where
//! the kernel allows them. Dropping [`Probes`] detaches everything; so does the kernel if
//! kstall is killed (links live only as long as kstall's file descriptors).
//!
//! - [`catalog`]: which program goes on which hook, and the plan for this kernel (pure);
//! - [`capabilities`]: what the kernel and this process allow, before loading;
//! - [`load`]: loading and attaching, with the fallbacks;
//! - [`maps`]: reading the maps while the probes run.
mod capabilities;
mod catalog;
mod load;
mod maps;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use kstall_core::kernel::ProbeStatus;

pub use capabilities::{check_privileges, kernel_has_btf, kernel_release};
pub use load::attach;

/// The probes, attached to one broker.
pub struct Probes {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    /// Network threads the kernel parses Kafka framing for, as last set.
    network_threads: Vec<u32>,
    /// What is attached and how, and what this kernel lacks.
    pub status: ProbeStatus,
}
