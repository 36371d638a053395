//! The internal HTTP listener for operators (`[http]`): health checks for a load balancer or
//! an orchestrator, and the metrics for Prometheus. It is apart from the ports clients use,
//! on loopback unless configured otherwise, and serves nothing a client could use.
//!
//! - `GET /healthz`: the process answers (200).
//! - `GET /readyz`: the server can serve: its listeners are bound and it is not stopping, its
//!   storage is open, and Redis answers when the engine uses it (200, or 503 with what failed).
//! - `GET /metrics`: the OpenMetrics text format ([`crate::metrics::export`]).
//! - `GET /`: a read-only status page, which reads `GET /status` (JSON).
//! - The admin API (`admin.rs`) and the Signaling REST API (`rest.rs`), when configured.

mod actions;
mod admin;
mod api;
mod health;
mod rest;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

pub(crate) use self::api::digest;
pub(crate) use self::rest::RestApps;
use crate::engine::{AnyEngine, Inspect};
use crate::metrics::export::{self, Snapshot};
use crate::session::Node;

/// What the listener's handlers reach.
pub(crate) struct Ops {
    pub(crate) node: Arc<Node<AnyEngine>>,
    pub(crate) started: Instant,
    /// True once the server is stopping.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The digest of the admin key; `None`: no admin API.
    pub(crate) admin_key: Option<[u8; 32]>,
    /// Admin calls per second, all callers together.
    pub(crate) admin_rate: governor::DefaultDirectRateLimiter,
    /// The apps with the Signaling REST API.
    pub(crate) rest: RestApps,
    /// Message rates for the status page.
    pub(crate) rates: status::Rates,
}

impl Ops {
    /// What a scrape counts now.
    async fn snapshot(&self) -> Snapshot {
        let core = &self.node.core;
        let engine = core.inspect();
        let (nodes, bus_dropped) = match engine {
            AnyEngine::Memory(_) => (None, None),
            AnyEngine::Redis(redis) => (
                engine.nodes().await.ok().map(|n| n.len() as u64),
                Some(redis.dropped_events()),
            ),
        };
        Snapshot {
            apps: self.node.registry.per_app(),
            local: engine.local_counts(),
            nodes,
            bus_dropped,
            uptime_secs: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// The routes.
fn router(ops: Arc<Ops>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .route("/", get(status::page))
        .route("/status", get(status::status))
        .with_state(ops.clone());
    if ops.admin_key.is_some() {
        router = router.merge(admin::routes(ops.clone()));
    }
    if !ops.rest.is_empty() {
        router = router.merge(rest::routes(ops));
    }
    router
}

/// `GET /metrics`.
async fn metrics(axum::extract::State(ops): axum::extract::State<Arc<Ops>>) -> Response {
    let snapshot = ops.snapshot().await;
    match export::render(&ops.node.core.metrics, snapshot) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics not encoded\n").into_response(),
    }
}

/// How long the internal listener's last connections have once the server is gone.
const GRACE: Duration = Duration::from_secs(3);
/// How long a connection may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until the server is gone (its handle dropped, after a graceful stop):
/// while the server stops, `/readyz` answers 503, so that a load balancer sends no one new.
/// A connection gets [`HEADER_TIMEOUT`] for each request's head and, once the server is gone,
/// [`GRACE`] to finish: none can keep the server's state alive.
pub(crate) async fn serve(listener: tokio::net::TcpListener, ops: Arc<Ops>) {
    tokio::spawn(status::sample(ops.clone()));
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let router = router(ops.clone());
    let mut shutdown = ops.shutdown.clone();
    drop(ops);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: try again shortly.
                    tracing::warn!(?addr, "internal listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        let router = router.clone();
        let mut gone = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                crate::transport::websocket::tower_call(router.clone(), request)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = async { while gone.changed().await.is_ok() {} } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(GRACE, conn.as_mut()).await;
                }
            }
        });
    }
    tracing::debug!(?addr, "internal listener stopped");
}
