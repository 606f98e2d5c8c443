//! `kstall export`: the aggregation core behind a Prometheus endpoint, for weeks. Tracing
//! sessions run one after another on the main thread (a broker that exits is waited for and
//! traced again under its new pid); an HTTP server on its own thread serves the latest state.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use log::{info, warn};
use prometheus_client::{encoding::text::encode, registry::Registry};

use super::{
    print_stdout,
    web_config::{self, BasicAuth, TlsListener, Verdict, WebConfig},
};
use crate::{
    present::prometheus::{self as metrics, ExportState, SharedState},
    session::{self, Session, SessionOptions, attach, discover as discovery},
    stop,
};

/// How often a missing broker is looked for again.
const REDISCOVER_EVERY: Duration = Duration::from_secs(2);

pub struct ExportOptions {
    /// The broker to trace first; after it exits, kstall finds the broker by main class.
    pub pid: Option<u32>,
    pub listen: SocketAddr,
    pub interval: Duration,
    pub stall_threshold: Duration,
    /// Trace for one interval, print one scrape (classic text format) and exit.
    pub once: bool,
    /// TLS and basic auth for the endpoint (exporter-toolkit format).
    pub web_config_file: Option<PathBuf>,
}

pub async fn run(opts: ExportOptions) -> Result<()> {
    attach::check_privileges()?;
    // Read before tracing, --once too: a bad file is an error at start, not at the first scrape.
    let web = opts.web_config_file.as_deref().map(WebConfig::load).transpose()?;
    let state = SharedState::default();
    let registry = Arc::new(metrics::registry(state.clone(), session::own_usage));
    let session = |pid: Option<u32>, duration: Option<Duration>| SessionOptions {
        pid,
        interval: opts.interval,
        duration,
        stall_threshold: opts.stall_threshold,
    };
    if opts.once {
        // A bad --pid fails here, once, with the fix.
        let ended = Session::start(session(opts.pid, Some(opts.interval)))?.run(|_| {}).await?;
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.target_pid = Some(ended.summary.broker.pid);
        s.attaches = 1;
        s.summary = Some(ended.summary);
        drop(s);
        print_stdout(&metrics::classic_text(&scrape(&registry)))?;
        return Ok(());
    }
    // Bind before tracing: a taken port is an error now, not a log line later.
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}: pick a free --listen address", opts.listen))?;
    listener.set_nonblocking(true)?;
    for warning in web_config::exposure_warnings(opts.listen, web.as_ref()) {
        warn!("{warning}");
    }
    let (tls, auth) = web.map_or((None, None), |w| (w.tls, w.auth));
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("serving /metrics on {scheme}://{}{}", opts.listen, if auth.is_some() { " (basic auth)" } else { "" });
    // On the runtime's worker thread: the tracing below blocks this one at times (attach,
    // kernel map reads), and scrapes are answered meanwhile.
    tokio::spawn(serve(listener, registry.clone(), tls, auth));

    let mut pid = opts.pid;
    loop {
        let broker = match discovery::find_broker(pid) {
            Ok(b) => b,
            // The pid given at start must be a broker; later, a broker is waited for.
            Err(e) if opts.pid.is_some() && pid.is_some() && state_attaches(&state) == 0 => return Err(e),
            Err(e) => {
                log_waiting(&state, &e);
                pid = None;
                if stop::sleep_unless_stopped(REDISCOVER_EVERY).await {
                    break;
                }
                continue;
            }
        };
        let session = match Session::start(session(Some(broker.pid), None)) {
            Ok(s) => s,
            Err(e) if discovery::is_alive(broker.pid) => return Err(e),
            Err(_) => continue, // it exited while we attached
        };
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.attaches += 1;
            s.target_pid = Some(broker.pid);
        }
        info!("attached to broker pid {}", broker.pid);
        let shared = state.clone();
        let ended = session.run(|summary| shared.lock().unwrap_or_else(|e| e.into_inner()).summary = Some(summary.clone())).await?;
        state.lock().unwrap_or_else(|e| e.into_inner()).summary = None;
        if !ended.broker_exited {
            break; // SIGTERM or Ctrl-C: the probes are detached already
        }
        warn!("broker pid {} exited; waiting for a broker to trace", broker.pid);
        pid = None;
    }
    info!("stopped; probes detached");
    Ok(())
}

fn state_attaches(state: &Mutex<ExportState>) -> u64 {
    state.lock().unwrap_or_else(|e| e.into_inner()).attaches
}

/// Says once per outage that no broker is there.
fn log_waiting(state: &Mutex<ExportState>, err: &anyhow::Error) {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.target_pid.is_some() || s.attaches == 0 {
        warn!("no broker to trace ({err:#}); looking again every {}s", REDISCOVER_EVERY.as_secs());
    }
    s.target_pid = None;
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

async fn serve(listener: std::net::TcpListener, registry: Arc<Registry>, tls: Option<Arc<rustls::ServerConfig>>, auth: Option<Arc<BasicAuth>>) {
    let mut app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/", get(|| async { "kstall exporter: metrics at /metrics\n" }))
        .with_state(registry);
    if let Some(auth) = auth {
        // Every path, the 404s too, as the exporter-toolkit does.
        app = app.layer(middleware::from_fn_with_state(auth, require_auth));
    }
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return log::error!("cannot serve: {e}"),
    };
    let served = match tls {
        Some(tls) => match TlsListener::new(listener, tls) {
            Ok(listener) => axum::serve(listener, app).await,
            Err(e) => Err(e),
        },
        None => axum::serve(listener, app).await,
    };
    if let Err(e) = served {
        log::error!("HTTP server stopped: {e}");
    }
}

async fn require_auth(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    match auth.check(request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())).await {
        Verdict::Allowed => next.run(request).await,
        Verdict::Denied => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"kstall\", charset=\"UTF-8\"")], "Unauthorized\n").into_response(),
        Verdict::Busy => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "2")], "Too many authentication attempts, retry later\n").into_response(),
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics_handler(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = scrape(&registry);
    if accept.contains("application/openmetrics-text") {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::classic_text(&text))
    }
}
