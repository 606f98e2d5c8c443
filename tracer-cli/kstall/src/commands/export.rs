//! `kstall export`: the aggregation core behind a Prometheus endpoint, for weeks. The session
//! follows the broker across restarts (`session::follow`) on the main thread; the HTTP server
//! (`serve`) answers scrapes from the latest state on the runtime's worker.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use log::{info, warn};

use super::print_stdout;
use crate::{
    present::prometheus::{self as metrics, ExportState, SharedState},
    serve::{self, WebConfig, http},
    session::{
        self, Session, SessionOptions, attach,
        follow::{self, Followed},
    },
};

pub struct ExportOptions {
    /// The broker to trace first (None: the only one on the host); after it exits, kstall
    /// traces the next broker found.
    pub session: SessionOptions,
    pub listen: SocketAddr,
    /// Trace for one interval, print one scrape (classic text format) and exit.
    pub once: bool,
    /// TLS and basic auth for the endpoint (exporter-toolkit format).
    pub web_config_file: Option<PathBuf>,
}

pub async fn run(opts: ExportOptions) -> Result<()> {
    // Read before tracing, --once too: a bad file is an error at start, not at the first scrape
    // (and said with its fix whether or not kstall runs as root).
    let web = opts.web_config_file.as_deref().map(WebConfig::load).transpose()?;
    attach::check_privileges()?;
    let state = SharedState::default();
    let registry = Arc::new(metrics::registry(state.clone(), session::own_usage));
    if opts.once {
        // A bad --pid fails here, once, with the fix.
        let ended = Session::start(SessionOptions { duration: Some(opts.session.interval), ..opts.session })?.run(|_| {}).await?;
        let mut s = lock(&state);
        s.target_pid = Some(ended.summary.broker.pid);
        s.attaches = 1;
        s.summary = Some(ended.summary);
        drop(s);
        print_stdout(&metrics::classic_text(&http::scrape(&registry)))?;
        return Ok(());
    }
    // Bind before tracing: a taken port is an error now, not a log line later.
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}: pick a free --listen address", opts.listen))?;
    listener.set_nonblocking(true)?;
    for warning in serve::exposure_warnings(opts.listen, web.as_ref()) {
        warn!("{warning}");
    }
    let (tls, auth) = web.map_or((None, None), |w| (w.tls, w.auth));
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("serving /metrics on {scheme}://{}{}", opts.listen, if auth.is_some() { " (basic auth)" } else { "" });
    // On the runtime's worker thread: the tracing below blocks this one at times (attach,
    // kernel map reads), and scrapes are answered meanwhile.
    tokio::spawn(http::serve(listener, registry.clone(), tls, auth));

    session::follow::follow(opts.session, |event| {
        let mut s = lock(&state);
        match event {
            Followed::Waiting(e) => {
                // Said once per outage.
                if s.target_pid.is_some() || s.attaches == 0 {
                    warn!("no broker to trace ({e:#}); looking again every {}s", follow::REDISCOVER_EVERY.as_secs());
                }
                s.target_pid = None;
            }
            Followed::Attached(broker) => {
                s.attaches += 1;
                s.target_pid = Some(broker.pid);
                info!("attached to broker pid {}", broker.pid);
            }
            Followed::Refreshed(summary) => s.summary = Some(summary.clone()),
            Followed::Detached { broker, exited } => {
                s.summary = None;
                if exited {
                    warn!("broker pid {} exited; waiting for a broker to trace", broker.pid);
                }
            }
        }
    })
    .await?;
    info!("stopped; probes detached");
    Ok(())
}

fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, ExportState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
