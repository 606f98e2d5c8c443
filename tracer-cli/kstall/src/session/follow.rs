//! Following a broker across restarts, for `kstall export`: one tracing session after another,
//! each on the broker that runs then.
use std::time::Duration;

use anyhow::Result;
use kstall_core::{broker::Broker, summary::Summary};

use super::{Session, SessionOptions, discover as discovery};
use crate::stop;

/// How often a missing broker is looked for again.
pub const REDISCOVER_EVERY: Duration = Duration::from_secs(2);

/// What [`follow`] reports as it goes.
pub enum Followed<'a> {
    /// No broker to trace, yet or since the last one exited: looked for again every
    /// [`REDISCOVER_EVERY`].
    Waiting(&'a anyhow::Error),
    /// The probes are attached to this broker.
    Attached(&'a Broker),
    /// An interval's summary of the broker traced now.
    Refreshed(&'a Summary),
    /// Tracing this broker ended and its probes are detached: it exited (`exited`), or a stop
    /// was requested.
    Detached { broker: &'a Broker, exited: bool },
}

/// Traces the broker `opts.pid` (the only one on this host when None) and, each time the
/// traced broker exits, the next one found, until a stop is requested. A `--pid` that names no
/// broker at start is an error, as is a failure to attach to a broker that still runs.
/// `opts.duration` is not used: each session lasts as long as its broker.
pub async fn follow(opts: SessionOptions, mut on: impl FnMut(Followed<'_>)) -> Result<()> {
    let mut pid = opts.pid;
    let mut attaches = 0u64;
    loop {
        let broker = match discovery::find_broker(pid) {
            Ok(b) => b,
            // The pid given at start must be a broker; later, a broker is waited for.
            Err(e) if pid.is_some() && attaches == 0 => return Err(e),
            Err(e) => {
                on(Followed::Waiting(&e));
                pid = None;
                if stop::sleep_unless_stopped(REDISCOVER_EVERY).await {
                    return Ok(());
                }
                continue;
            }
        };
        let session = match Session::start(SessionOptions { pid: Some(broker.pid), duration: None, ..opts }) {
            Ok(s) => s,
            Err(e) if discovery::is_alive(broker.pid) => return Err(e),
            Err(_) => continue, // it exited while we attached
        };
        attaches += 1;
        on(Followed::Attached(&broker));
        let ended = session.run(|summary| on(Followed::Refreshed(summary))).await?;
        on(Followed::Detached { broker: &broker, exited: ended.broker_exited });
        if !ended.broker_exited {
            return Ok(()); // SIGTERM or Ctrl-C: the probes are detached already
        }
        pid = None;
    }
}
