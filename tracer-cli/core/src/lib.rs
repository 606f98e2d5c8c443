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
//! - the model: [`summary`];
//! - conclusions: [`findings`];
//! - the fold: [`aggregate`]; the document: [`report`]; a recorded session and its replay:
//!   [`recording`].
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
        summary::{Severity, ThreadNames},
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
        for e in Evidence::ALL {
            assert_eq!(e.as_str(), json(e));
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
