//! SIGINT and SIGTERM (and `q` in the live view): one flag, set by a plain signal handler installed first thing in
//! `main`, and looked at by whatever waits (the tracing loop every 50 ms, the exporter between
//! brokers, the attach when the verifier gave up). A flag cannot be missed: tokio's signal
//! streams sometimes never yielded a SIGINT that came while the probes were loading (seen in
//! the kernel matrix on 5.10, 6.12 and 7.2: kstall went on tracing, parked in its event loop).
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM (SA_RESTART: interrupted syscalls go on).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Asks for the same stop as a signal, from kstall itself: `q` in the live view, or a reader
/// of `--format jsonl` that went away. The session then detaches as after Ctrl-C.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// A stop signal came.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// How often a waiting loop looks at the flag.
const POLL: Duration = Duration::from_millis(50);

/// Resolves once a stop signal came.
pub async fn wait() {
    while !requested() {
        tokio::time::sleep(POLL).await;
    }
}

/// Sleeps `d`; true when a stop signal came instead.
pub async fn sleep_unless_stopped(d: Duration) -> bool {
    tokio::select! {
        _ = wait() => true,
        _ = tokio::time::sleep(d) => requested(),
    }
}
