//! kstall's kernel side: latency histograms of the broker's syscalls, per thread, with a
//! page-cache hit/miss verdict for every file read, aggregated in the kernel. On network
//! threads it also follows Kafka's framing through the socket reads and writes, and sends one
//! small record per answered request and per stall (a page-cache miss or a slow call) through
//! a ring buffer; nothing else reaches user space per call. Each traced syscall's entry and exit
//! run the same logic behind three mechanisms, of which user space attaches the cheapest the
//! kernel allows: fentry/fexit on the syscall's function, raw tracepoints `sys_enter` and
//! `sys_exit`, or classic syscall tracepoints (field offsets from tracefs `format`), which load
//! on kernels without BTF, kprobes or fentry. Evidence that newer kernels give as tracepoints
//! (readahead 6.18, socket reads and data arrival 6.3) comes from kprobes on older kernels
//! that allow them: again the same logic behind either hook.
//!
//! The programs (user space attaches them by function name) are in `syscalls` (every traced
//! syscall's entry and exit), `evidence` (scheduler and page-cache events a call causes),
//! `sockets` (socket reads and data arrival) and `kafka` (a closed fd's connection state). They
//! share `maps`, `config` (what user space sets at load), `inflight` (each thread's call in
//! progress) and `records` (what goes through the ring buffer).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Inline BPF assembly (see `kafka::bounded_len`); the build runs Debian's rustc with RUSTC_BOOTSTRAP.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod config;
#[cfg(target_arch = "bpf")]
mod evidence;
#[cfg(target_arch = "bpf")]
mod inflight;
#[cfg(target_arch = "bpf")]
mod kafka;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mem;
#[cfg(target_arch = "bpf")]
mod records;
#[cfg(target_arch = "bpf")]
mod sockets;
#[cfg(target_arch = "bpf")]
mod syscalls;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
