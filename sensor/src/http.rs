//! The HTTP endpoint: `GET /metrics`, `/-/healthy`, `/-/ready`.
//!
//! HTTP/1.1 only (hyper 1), optionally over TLS and with basic auth, both
//! configured with a [`WebConfig`] (`--web.config.file`, the Prometheus
//! exporter toolkit's format). With basic auth every path needs the
//! credentials, health endpoints included, as in the exporter toolkit;
//! a missing or wrong one gets `401` with `WWW-Authenticate`.
//!
//! Robustness against slow or hostile clients:
//! - a client must complete the TLS handshake, then send a request's
//!   headers, each within `header_read_timeout` (this also closes idle
//!   keep-alive connections); plain HTTP sent to the TLS port gets a `400`
//!   saying to use https;
//! - a connection lives at most `connection_timeout`, which bounds slow
//!   readers of a response;
//! - at most `max_connections` connections are served at once (more are
//!   closed on accept) and at most `max_concurrent_scrapes` renderings of
//!   `/metrics` run at once (more get `503` at once, without waiting).
//!
//! Each connection runs in its own task and a rendering holds no lock a
//! slow client could keep, so one client never stalls another's scrape.
//! bcrypt runs on the blocking pool, never on the executor (see `auth`).
//! The endpoint's own metrics are `sensor_scrape_duration_seconds` and
//! `sensor_http_requests_total{code}`.
//!
//! Layout: this file (routing, limits, [`serve`]); `webconfig` (parsing
//! and checking the web config); `auth` (basic auth against bcrypt
//! hashes); `tls` (handshake and the plain-HTTP-on-TLS answer).

mod auth;
#[cfg(test)]
mod tests;
mod tls;
mod webconfig;

pub use webconfig::{WebConfig, WebConfigError};

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::families::{Family, Kind};
use crate::metrics::{try_render, CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// `sensor_scrape_duration_seconds`.
pub const SCRAPE_DURATION: Family = Family {
    name: "sensor_scrape_duration_seconds",
    kind: Kind::Histogram,
    help: "Time to gather and encode the metrics for one scrape of /metrics.",
    labels: &[],
};
/// `sensor_http_requests_total`.
pub const REQUESTS: Family = Family {
    name: "sensor_http_requests_total",
    kind: Kind::Counter,
    help: "HTTP requests answered, by status code.",
    labels: &["code"],
};
/// Every family the endpoint registers.
pub const FAMILIES: [Family; 2] = [SCRAPE_DURATION, REQUESTS];
/// Closed label values: `code` of [`REQUESTS`].
pub const CODES: [&str; 6] = ["200", "401", "404", "405", "500", "503"];
/// Bucket bounds (seconds) of [`SCRAPE_DURATION`].
pub const SCRAPE_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Errors of the HTTP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The endpoint's own metrics could not be registered.
    #[error("cannot register HTTP metric {name}: {source}; serve each Registry only once")]
    Metrics {
        name: &'static str,
        source: prometheus::Error,
    },
}

/// Liveness and readiness shared between the agent and the endpoint.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Not ready yet.
    pub fn new() -> Health {
        Health::default()
    }
    /// Called once programs are attached and a first drain is done (and
    /// with `false` if the sensor stops being able to count).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
    /// Whether `/-/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Limits of the endpoint; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub header_read_timeout: Duration,
    pub connection_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_scrapes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_connections: 64,
            max_concurrent_scrapes: 4,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// The endpoint's own metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    scrape: Histogram,
    requests: IntCounterVec,
}

impl HttpMetrics {
    /// Registers the endpoint's families on `registry`, codes at zero.
    pub fn register(registry: &Registry) -> Result<HttpMetrics, HttpError> {
        let err = |f: &Family| {
            let name = f.name;
            move |source| HttpError::Metrics { name, source }
        };
        let scrape = Histogram::with_opts(
            HistogramOpts::new(SCRAPE_DURATION.name, SCRAPE_DURATION.help)
                .buckets(SCRAPE_BUCKETS.to_vec()),
        )
        .map_err(err(&SCRAPE_DURATION))?;
        let requests = IntCounterVec::new(Opts::new(REQUESTS.name, REQUESTS.help), REQUESTS.labels)
            .map_err(err(&REQUESTS))?;
        registry
            .register(Box::new(scrape.clone()))
            .map_err(err(&SCRAPE_DURATION))?;
        registry
            .register(Box::new(requests.clone()))
            .map_err(err(&REQUESTS))?;
        for code in CODES {
            requests.with_label_values(&[code]);
        }
        Ok(HttpMetrics { scrape, requests })
    }
}

struct State {
    registry: Registry,
    health: Arc<Health>,
    scrapes: Semaphore,
    metrics: HttpMetrics,
    auth: Option<Arc<auth::BasicAuth>>,
}

/// Serves until `shutdown` completes, with [`HttpConfig::default`] limits
/// and `web`'s TLS and basic auth.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Arc<Health>,
    web: WebConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HttpError> {
    serve_with(
        listener,
        registry,
        health,
        HttpConfig::default(),
        web,
        shutdown,
    )
    .await
}

/// Serves until `shutdown` completes; then stops accepting, lets requests
/// in flight finish for up to `shutdown_grace`, and returns.
pub async fn serve_with(
    listener: TcpListener,
    registry: Registry,
    health: Arc<Health>,
    config: HttpConfig,
    web: WebConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HttpError> {
    let metrics = HttpMetrics::register(&registry)?;
    let state = Arc::new(State {
        registry,
        health,
        scrapes: Semaphore::new(config.max_concurrent_scrapes),
        metrics,
        auth: web.auth.clone(),
    });
    let acceptor = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                        tracing::debug!(%peer, "too many connections, closing");
                        continue;
                    };
                    let state = Arc::clone(&state);
                    let stop = stop_rx.clone();
                    let acceptor = acceptor.clone();
                    tasks.spawn(async move {
                        match acceptor {
                            None => connection(stream, state, config, stop).await,
                            Some(acceptor) => {
                                let tls = tls::accept(stream, &acceptor, config.header_read_timeout);
                                if let Some(s) = tls.await {
                                    connection(s, state, config, stop).await;
                                }
                            }
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    Ok(())
}

async fn connection<S>(
    stream: S,
    state: Arc<State>,
    config: HttpConfig,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(&state, &req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(config.connection_timeout);
    tokio::pin!(deadline);
    let grace = tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = &mut deadline => Duration::from_millis(100),
        _ = stop.changed() => config.shutdown_grace,
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

async fn handle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    let authorized = match &state.auth {
        None => true,
        Some(auth) => {
            let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
            auth.check(header).await
        }
    };
    let resp = if !authorized {
        let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sensor\", charset=\"UTF-8\""),
        );
        r
    } else if req.method() != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        match req.uri().path() {
            "/metrics" => scrape(state),
            "/-/healthy" => text(StatusCode::OK, "OK\n"),
            "/-/ready" if state.health.is_ready() => text(StatusCode::OK, "ready\n"),
            "/-/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(StatusCode::NOT_FOUND, "not found; try /metrics\n"),
        }
    };
    state
        .metrics
        .requests
        .with_label_values(&[resp.status().as_str()])
        .inc();
    if head {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    resp
}

fn scrape(state: &State) -> Response<Full<Bytes>> {
    let Ok(_permit) = state.scrapes.try_acquire() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent scrapes, retry later\n",
        );
    };
    let started = Instant::now();
    let rendered = try_render(&state.registry);
    state
        .metrics
        .scrape
        .observe(started.elapsed().as_secs_f64());
    match rendered {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
