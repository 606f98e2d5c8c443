//! kstall's analysis core. The tracing session hands it what it read (kernel histograms and
//! counters, ring-buffer records with their files already named, thread names); it returns a
//! [`summary::Summary`] with [`findings`], and says what the session should do next (which
//! threads the kernel treats as network threads, which exited threads' entries to take).
//! Nothing here touches the kernel, /proc, a clock or a terminal, so every rule is tested
//! with hand-built inputs.
//!
//! Layers, each using only those above it (checked by `tests/layers.rs`):
//! - leaves: [`units`], [`hist`] (percentiles, log2 buckets), [`roles`], [`kafka`] (API
//!   names, client.id, segment files), [`kernel`] (evidence and records), [`broker`],
//!   [`listeners`];
//! - records: [`requests`], [`stalls`], [`timeline`];
//! - the model: [`finding`] (a finding as data: id, severity, figures), [`summary`];
//! - conclusions: [`findings`] (the rules that make them);
//! - the fold: [`aggregate`]; the document: [`report`]; a recorded session and its replay:
//!   [`recording`].
//!
//! # Glossary
//! The words the code, the docs and the output use, one meaning each:
//! - **hook**: a place in the kernel a BPF program attaches to (a tracepoint, a raw
//!   tracepoint, a kprobe, an fentry or fexit on a kernel function). Its *mechanism* is which of
//!   those it is.
//! - **program**: one BPF program of kstall's object (`exit_sendfile`, `raw_exit`,
//!   `page_cache_add`, ...), loaded and verified by the kernel.
//! - **probe**: a program attached at a hook. "Probes attached" counts attachments.
//! - **record**: what a probe sends to user space through the ring buffer: a *request record*
//!   (one Kafka request and its response, from the framing parser) or a *stall record* (one
//!   slow network-thread call). [`kernel::Event`] is a decoded record; `lost.records` counts
//!   records the ring buffer had no room for.
//! - **histogram**: the kernel's per-(thread, syscall, verdict) latency counts, read by the
//!   session at each refresh, not sent as records.
//! - **verdict**: a file read's page-cache result, hit or miss (or no file read), from kernel
//!   evidence during the call.
//! - **evidence**: what the kernel shows beyond the syscall itself (pages added to the page
//!   cache, file lookups, readahead, socket reads, data arrival); [`kernel::Evidence`] names the
//!   optional kinds and `EvidenceStatus` how each is gathered here or why not.
//! - **stall**: a network-thread call slower than the stall threshold; its *cause* is a
//!   page-cache miss, time blocked in the kernel, off CPU, or on CPU.
//! - **delayed**: a request whose latency a stall of its network thread overlapped (or, for
//!   acks=all Produce, a stall of a follower's Fetch thread: *held by replication*).
//! - **finding**: a conclusion with an id, a severity and its figures ([`finding`]); the
//!   presenters write its sentences.
//! - **figure**: one number or name of a finding, with the report path it comes from.
//!
//! # Where each part of the report comes from
//! A finding's `sources` give the report path of each figure; the path's first parts say
//! which probes measured it:
//! - `summary.rows` (syscall latency, bytes, verdicts): the exit probe of each traced syscall
//!   (`exit_<syscall>` on `syscalls:sys_exit_<syscall>`, `raw_exit_<syscall>` tail-called by
//!   `raw_exit` on `raw_syscalls:sys_exit`, or `fexit_<syscall>` on the syscall's function),
//!   its start time from the matching enter probe (`enter_syscall`, `raw_enter`,
//!   `fentry_<syscall>`); the verdict from `page_cache_add` (`filemap:mm_filemap_add_to_page_cache`)
//!   and the evidence probes; off-CPU and blocked time from `sched_switch`.
//! - `summary.stalls` (by thread, cause, file, reader): stall records, written by the same exit
//!   probes for a network thread's call over the threshold; `stalls.produce`, `stalls.delayed`
//!   and `stalls.replication` join them with request records.
//! - `summary.requests` and `summary.protocol`: request records from the Kafka framing parser,
//!   run by the exit probes of a network thread's socket reads (the request) and writes and
//!   sendfile (the response), the connection's end by `enter_close`/`fentry_close`; socket wait
//!   from `sock_recv*` and `sock_data_ready*` (the socket-reads and data-arrival evidence).
//! - `summary.lost`: the programs' counters map, and the kernel's count of skipped runs.
//! - `summary.threads`, `summary.listeners`, roles and names: /proc, `jcmd Thread.print` and the
//!   broker's properties file, read by the session, not by a probe.
pub mod units;
pub mod hist;
pub mod roles;
pub mod kafka;
pub mod kernel;
pub mod broker;
pub mod listeners;
pub mod requests;
pub mod stalls;
pub mod timeline;
pub mod finding;
pub mod summary;
pub mod findings;
pub mod aggregate;
pub mod report;
pub mod recording;

#[cfg(test)]
mod tests {
    use kstall_common::CacheResult;

    use crate::{
        kernel::Evidence,
        listeners::{Plane, ProcessRole, SecurityProtocol},
        roles::Role,
        stalls::Cause,
        finding::{FindingId, Severity},
        summary::ThreadNames,
    };

    /// One name per value: what `as_str` gives (metric labels, CSS classes) is what JSON says.
    #[test]
    fn as_str_is_the_json_spelling() {
        fn json<T: serde::Serialize>(v: T) -> String {
            serde_json::to_value(v).unwrap().as_str().unwrap().to_string()
        }
        for r in [Role::Network, Role::RequestHandler, Role::Other] {
            assert_eq!(r.as_str(), json(r));
        }
        for c in [Cause::PageCacheMiss, Cause::BlockedInKernel, Cause::OffCpu, Cause::OnCpu] {
            assert_eq!(c.as_str(), json(c));
        }
        for s in [Severity::Critical, Severity::Warning, Severity::Info] {
            assert_eq!(s.as_str(), json(s));
        }
        for id in FindingId::ALL {
            assert_eq!(id.as_str(), json(id));
        }
        for e in Evidence::ALL {
            assert_eq!(e.as_str(), json(e));
        }
        for m in crate::kernel::Mechanism::ALL {
            assert_eq!(m.as_str(), json(m));
        }
        for t in [ThreadNames::Comm, ThreadNames::Jvm] {
            assert_eq!(t.as_str(), json(t));
        }
        for p in SecurityProtocol::ALL {
            assert_eq!(p.as_str(), json(p));
        }
        for p in [Plane::Data, Plane::Controller] {
            assert_eq!(p.as_str(), json(p));
        }
        for p in [ProcessRole::Broker, ProcessRole::Controller] {
            assert_eq!(p.as_str(), json(p));
        }
        let row = |cache| crate::summary::Row::new(
            crate::summary::RowKey { role: Role::Network, listener: None, syscall: kstall_common::Syscall::Sendfile, cache },
            crate::hist::kernel_hist(&[1_000]),
        );
        for c in [CacheResult::NoFileRead, CacheResult::Hit, CacheResult::Miss] {
            assert_eq!(serde_json::to_value(row(c)).unwrap()["cache"], c.as_str());
        }
        assert_eq!(Cause::PageCacheMiss.as_str(), "page_cache_miss");
        assert_eq!(Role::RequestHandler.as_str(), "request_handler");
    }
}
