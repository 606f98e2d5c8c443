//! The HTTP server of `kstall export`: /metrics from a prometheus-client registry (OpenMetrics
//! when the scraper asks for it, else the classic text format), behind basic auth and over TLS
//! when configured. It knows nothing of tracing: the registry's collector reads the latest state.
use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};

use super::{
    auth::{BasicAuth, Verdict},
    tls::TlsListener,
};
use crate::present::prometheus::classic_text;

/// One scrape of the registry, in OpenMetrics text.
pub fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// The endpoint's routes, behind `auth` when given (every path, the 404s too, as the
/// exporter-toolkit does).
pub fn app(registry: Arc<Registry>, auth: Option<Arc<BasicAuth>>) -> Router {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/", get(|| async { "kstall exporter: metrics at /metrics\n" }))
        .with_state(registry);
    match auth {
        Some(auth) => app.layer(middleware::from_fn_with_state(auth, require_auth)),
        None => app,
    }
}

/// Serves until the runtime ends; errors are logged (the tracing goes on without the endpoint).
pub async fn serve(listener: std::net::TcpListener, registry: Arc<Registry>, tls: Option<Arc<rustls::ServerConfig>>, auth: Option<Arc<BasicAuth>>) {
    let app = app(registry, auth);
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
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], classic_text(&text))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::serve::auth::testing::{SECRET_2Y, auth_of, basic};

    /// A registry with one counter at 3, served on a free loopback port; its address.
    async fn served(auth: Option<Arc<BasicAuth>>) -> std::net::SocketAddr {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        registry.register("kstall_test_things", "Things.", counter);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(registry), None, auth));
        addr
    }

    /// (status, body) of a GET, with these extra header lines.
    async fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: kstall\r\nConnection: close\r\n{headers}\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
            (status, response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string()))
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn serves_the_registry_in_both_formats() {
        let addr = served(None).await;
        let (status, body) = get(addr, "/metrics", "").await;
        assert_eq!(status, 200);
        assert!(body.contains("kstall_test_things_total 3"), "{body}");
        assert!(!body.contains("# EOF"), "classic text without OpenMetrics' end marker: {body}");
        let (status, body) = get(addr, "/metrics", "Accept: application/openmetrics-text\r\n").await;
        assert_eq!(status, 200);
        assert!(body.contains("# EOF"), "{body}");
        assert_eq!(get(addr, "/nothing", "").await.0, 404);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn auth_turns_away_missing_and_wrong_credentials_on_every_path() {
        let addr = served(Some(auth_of(&[("prometheus", SECRET_2Y)]))).await;
        let header = |user, password| format!("Authorization: {}\r\n", String::from_utf8(basic(user, password)).unwrap());
        assert_eq!(get(addr, "/metrics", "").await.0, 401);
        assert_eq!(get(addr, "/metrics", &header("prometheus", "wrong")).await.0, 401);
        assert_eq!(get(addr, "/nothing", "").await.0, 401);
        let (status, body) = get(addr, "/metrics", &header("prometheus", "secret")).await;
        assert_eq!(status, 200);
        assert!(body.contains("kstall_test_things_total 3"), "{body}");
    }
}
