//! The HTTP face: `/metrics`, `/-/healthy`, `/-/ready` and a landing page. `app()` builds the
//! router without a socket so tests can call it directly.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::fleet::Fleet;
use crate::state::ClusterState;
use crate::web::auth::Authenticator;
use crate::web::WebSource;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub fleet: Arc<Fleet>,
    /// `--web.config.file`: TLS, users and headers for every endpoint.
    pub web: Arc<WebSource>,
    pub auth: Arc<Authenticator>,
    /// `POST /-/reload` is served (`--web.enable-lifecycle`).
    pub lifecycle: bool,
}

impl AppState {
    /// Fixed clusters, open endpoints, no lifecycle API (tests).
    pub fn new(clusters: Vec<Arc<ClusterState>>) -> Self {
        Self::with_web(Fleet::fixed(clusters), WebSource::none(), false)
    }

    pub fn with_web(fleet: Arc<Fleet>, web: WebSource, lifecycle: bool) -> Self {
        let registry = Arc::new(crate::metrics::registry(fleet.clone()));
        Self { registry, fleet, web: Arc::new(web), auth: Arc::new(Authenticator::default()), lifecycle }
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/api/v1/events", get(events))
        .route("/-/reload", axum::routing::post(reload))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Every endpoint: the users of the web configuration (a 401 otherwise) and its headers.
async fn guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let web = state.web.current();
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !state.auth.allows(&web, authorization).await {
        let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"pgha-exporter\"")];
        return (StatusCode::UNAUTHORIZED, challenge, "Unauthorized\n").into_response();
    }
    let mut response = next.run(request).await;
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    scope: Option<String>,
    limit: Option<usize>,
}

/// Recent events of every cluster (or of `scope`), oldest first; each cluster keeps the last
/// `timeline::EVENTS_KEPT`.
async fn events(State(state): State<AppState>, axum::extract::Query(q): axum::extract::Query<EventsQuery>) -> Response {
    let mut events: Vec<crate::timeline::Event> = state
        .fleet
        .clusters()
        .iter()
        .filter(|c| q.scope.as_deref().is_none_or(|s| s == c.scope()))
        .flat_map(|c| c.read().timeline.events.iter().cloned().collect::<Vec<_>>())
        .collect();
    events.sort_by(|a, b| a.time.total_cmp(&b.time));
    let limit = q.limit.unwrap_or(crate::timeline::EVENTS_KEPT);
    let skip = events.len().saturating_sub(limit);
    let failovers: Vec<serde_json::Value> = state
        .fleet
        .clusters()
        .iter()
        .filter(|c| q.scope.as_deref().is_none_or(|s| s == c.scope()))
        .filter_map(|c| c.read().timeline.last.as_ref().map(|f| serde_json::json!({"scope": c.scope(), "failover": f})))
        .collect();
    let body = serde_json::json!({ "events": &events[skip..], "last_failovers": failovers });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Reads the configuration again, as SIGHUP does; only with `--web.enable-lifecycle`.
async fn reload(State(state): State<AppState>) -> Response {
    if !state.lifecycle {
        return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response();
    }
    let fleet = state.fleet.clone();
    match tokio::task::spawn_blocking(move || fleet.reload()).await {
        Ok(Ok(c)) => {
            let list = |scopes: &[String]| if scopes.is_empty() { "-".to_string() } else { scopes.join(", ") };
            let text = format!(
                "configuration reloaded\nkept: {}\nchanged: {}\nadded: {}\nremoved: {}\n",
                list(&c.kept),
                list(&c.changed),
                list(&c.added),
                list(&c.removed)
            );
            (StatusCode::OK, text).into_response()
        }
        Ok(Err(why)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {why}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the reload stopped\n").into_response(),
    }
}

/// OpenMetrics for a scraper that asks for it (Prometheus does), the text format otherwise, as
/// client_golang negotiates; gzipped when the client accepts it.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let asked = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok()).unwrap_or("");
    let (body, content_type) = if accepts(asked(header::ACCEPT), "application/openmetrics-text") {
        match crate::metrics::encode(&state.registry) {
            Ok(text) => (text, OPENMETRICS),
            Err(_) => {
                tracing::error!("encoding metrics failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response();
            }
        }
    } else {
        let families = crate::metrics::exposed(&state.fleet, std::time::Instant::now());
        (crate::metrics::text::encode(&families), crate::metrics::text::CONTENT_TYPE)
    };
    if !accepts(asked(header::ACCEPT_ENCODING), "gzip") {
        return ([(header::CONTENT_TYPE, content_type)], body).into_response();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    match std::io::Write::write_all(&mut gz, body.as_bytes()).and_then(|()| gz.finish()) {
        Ok(zipped) => {
            ([(header::CONTENT_TYPE, content_type), (header::CONTENT_ENCODING, "gzip")], zipped).into_response()
        }
        Err(_) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    }
}

/// Whether a header listing values with optional parameters (`Accept`, `Accept-Encoding`)
/// accepts `wanted`: listed with a quality other than 0.
fn accepts(header: &str, wanted: &str) -> bool {
    header.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let refused = |p: &str| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0);
        parts.next().is_some_and(|v| v.eq_ignore_ascii_case(wanted)) && !parts.any(refused)
    })
}

/// Healthy while every source's readings are fresh: a collection that stopped makes the exporter
/// unhealthy (and restartable) instead of serving frozen data as current.
async fn healthy(State(state): State<AppState>) -> Response {
    let now = std::time::Instant::now();
    let stale: Vec<String> = state
        .fleet
        .clusters()
        .iter()
        .flat_map(|c| {
            c.stale_sources(now).into_iter().map(move |(source, age)| {
                let bound = c.staleness_bound(source).as_secs_f64();
                format!("{}/{source} {:.1}s old (bound {bound:.1}s)", c.scope(), age.as_secs_f64())
            })
        })
        .collect();
    if stale.is_empty() {
        (StatusCode::OK, "OK\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("stale readings: {}\n", stale.join(", "))).into_response()
    }
}

/// Ready once every target of every cluster has had its first call (see `ClusterState::ready`).
async fn ready(State(state): State<AppState>) -> Response {
    let clusters = state.fleet.clusters();
    let waiting: Vec<&str> = clusters.iter().filter(|c| !c.ready()).map(|c| c.scope()).collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for a first call to every target of: {}\n", waiting.join(", ")),
        )
            .into_response()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let mut rows = String::new();
    for c in &state.fleet.clusters() {
        let data = c.read();
        let sources: Vec<String> = c
            .plan
            .sources()
            .iter()
            .map(|s| {
                let targets = data.targets(*s);
                let up = targets.iter().filter(|(_, h)| h.up).count();
                format!("{s} {up}/{} up", targets.len())
            })
            .collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(c.scope()),
            data.members.len(),
            escape(&sources.join(", "))
        ));
    }
    Html(format!(
        "<!doctype html><html><head><title>pgha-exporter</title></head><body>\n\
         <h1>pgha-exporter {}</h1>\n<p>Patroni + etcd + HAProxy clusters.</p>\n\
         <table border=\"1\" cellpadding=\"4\"><tr><th>scope</th><th>members</th><th>sources</th></tr>\n{rows}</table>\n\
         <ul><li><a href=\"metrics\">metrics</a></li><li><a href=\"-/healthy\">healthy</a></li><li><a href=\"-/ready\">ready</a></li><li><a href=\"api/v1/events\">events</a></li></ul>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Limits of the HTTP server: a client can hold neither a connection nor a file descriptor for
/// long without asking for something.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; one more is closed at once, not queued.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may stay idle before its next request.
    pub header_read_timeout: std::time::Duration,
}

/// Serves `app` on every listener within `limits` (one cap for all of them), over TLS when the
/// web configuration in force at each new connection says so, until `shutdown` completes; then
/// waits for the connections in flight to finish (the caller bounds that wait).
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    app: Router,
    web: Arc<WebSource>,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::TokioTimer;
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut refused = false;
    tokio::pin!(shutdown);
    loop {
        let accepts = listeners.iter().map(|l| Box::pin(l.accept()));
        let stream = tokio::select! {
            (accepted, _, _) = futures::future::select_all(accepts) => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !std::mem::replace(&mut refused, true) {
                tracing::warn!(max = limits.max_connections, "too many connections: closing new ones until some end");
            }
            continue;
        };
        refused = false;
        let (app, builder, watcher, tls) =
            (app.clone(), builder.clone(), graceful.watcher(), web.current().tls.clone());
        let handshake_deadline = limits.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => serve_stream(stream, &builder, app, watcher).await,
                Some(config) => {
                    let accepting = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(handshake_deadline, accepting).await {
                        Ok(Ok(tls)) => serve_stream(tls, &builder, app, watcher).await,
                        // The client's problem (no or a wrong certificate, plain HTTP): not ours to log loudly.
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

async fn serve_stream<S>(
    stream: S,
    builder: &hyper::server::conn::http1::Builder,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = watcher.watch(connection).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Change;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_text(app: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let ct = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), ct)
    }

    #[tokio::test]
    async fn endpoints_answer_without_any_target() {
        let yaml = "clusters:\n  - scope: demo<x>\n    patroni: {members: [{name: m, api_url: 'http://m:1'}]}\n";
        let plan = crate::config::Config::parse(yaml).unwrap().clusters.remove(0);
        let cluster = Arc::new(ClusterState::new(plan, None));
        let app = app(AppState::new(vec![cluster.clone()]));
        let (status, body, ct) = get_text(app.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some(crate::metrics::text::CONTENT_TYPE), "no Accept: the text format");
        assert!(body.contains("pgha_build_info"), "{body}");
        assert_eq!(get_text(app.clone(), "/-/healthy").await.0, StatusCode::OK);
        let (status, why, _) = get_text(app.clone(), "/-/ready").await;
        assert_eq!(
            (status, why.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "waiting for a first call to every target of: demo<x>\n")
        );
        cluster.apply_member("m", "http://m:1", crate::testing::refused());
        assert_eq!(get_text(app.clone(), "/-/ready").await.0, StatusCode::OK, "a refused call is a finished one");
        assert_eq!(get_text(app.clone(), "/-/healthy").await.0, StatusCode::OK);
        let mut old = crate::testing::refused();
        old.at -= std::time::Duration::from_secs(40);
        cluster.apply_member("m", "http://m:1", old);
        let (status, why, _) = get_text(app.clone(), "/-/healthy").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a member polled 40 s ago: its loop stopped");
        assert!(why.starts_with("stale readings: demo<x>/patroni 40.0s old (bound 24.0s)"), "{why}");
        cluster.apply_member("m", "http://m:1", crate::testing::refused());
        let (_, page, _) = get_text(app.clone(), "/").await;
        assert!(page.contains("demo&lt;x&gt;"), "scope is escaped: {page}");
        assert!(page.contains("patroni 0/1 up"), "{page}");
        let change = Change::EtcdLeaderChanged { from: "etcd1".into(), to: "etcd2".into() };
        cluster.apply_change(change, std::time::Instant::now());
        let (status, body, ct) = get_text(app, "/api/v1/events?limit=5").await;
        assert_eq!((status, ct.as_deref()), (StatusCode::OK, Some("application/json")));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"][0]["kind"], "etcd_leader_changed");
        assert_eq!(v["events"][0]["member"], "etcd2");
        assert_eq!(v["events"][0]["detail"], "etcd1 -> etcd2");
    }

    #[tokio::test]
    async fn the_format_is_negotiated_and_gzip_given_when_accepted() {
        use std::io::Read;
        let yaml = "clusters:\n  - scope: s\n    patroni: {members: [{name: m, api_url: 'http://m:1'}]}\n";
        let plan = crate::config::Config::parse(yaml).unwrap().clusters.remove(0);
        let app = app(AppState::new(vec![Arc::new(ClusterState::new(plan, None))]));
        let get = |accept: &'static str, encoding: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::get("/metrics").header("accept", accept).header("accept-encoding", encoding);
                let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
                let h =
                    |name| response.headers().get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_string());
                let (ct, ce) = (h(header::CONTENT_TYPE), h(header::CONTENT_ENCODING));
                (ct, ce, axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec())
            }
        };
        // Prometheus's own Accept header.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, ce, body) = get(prometheus, "").await;
        assert_eq!((ct.as_deref(), ce), (Some(OPENMETRICS), None));
        assert!(String::from_utf8(body).unwrap().ends_with("# EOF\n"));
        let (ct, ce, body) = get("application/openmetrics-text;q=0, text/plain", "gzip, deflate").await;
        assert_eq!((ct.as_deref(), ce.as_deref()), (Some(crate::metrics::text::CONTENT_TYPE), Some("gzip")));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
        assert!(text.contains("# TYPE pgha_build_info gauge\n") && !text.contains("# EOF"), "{text}");
        let (_, ce, _) = get("*/*", "gzip;q=0").await;
        assert_eq!(ce, None, "gzip refused with q=0");
    }

    async fn exporter_with(limits: ServeLimits) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let yaml = "clusters:\n  - scope: s\n    patroni: {members: [{name: m, api_url: 'http://m:1'}]}\n";
        let plan = crate::config::Config::parse(yaml).unwrap().clusters.remove(0);
        let cluster = Arc::new(ClusterState::new(plan, None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(vec![cluster]);
        let web = state.web.clone();
        let server = tokio::spawn(serve(vec![listener], app(state), web, limits, std::future::pending()));
        (addr, server)
    }

    async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    }

    #[tokio::test]
    async fn silent_clients_are_closed_and_the_excess_refused() {
        use tokio::io::AsyncReadExt;
        let limits = ServeLimits { max_connections: 20, header_read_timeout: std::time::Duration::from_millis(500) };
        let (addr, server) = exporter_with(limits).await;
        let mut silent = Vec::new();
        for _ in 0..50 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // The 30 beyond the cap are closed at once; the 20 within it after the header timeout.
        let started = std::time::Instant::now();
        let mut closed = 0;
        for s in &mut silent {
            let read = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut [0u8; 64])).await;
            closed += usize::from(matches!(read, Ok(Ok(0)) | Ok(Err(_))));
        }
        assert_eq!(closed, 50, "every silent client is closed");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        let body = scrape(addr).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200") && body.contains("pgha_build_info"), "{body}");
        server.abort();
    }
}
