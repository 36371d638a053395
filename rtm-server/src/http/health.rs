//! `/healthz` and `/readyz`: short JSON bodies, status codes a load balancer reads.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::Ops;
use crate::engine::Inspect;

/// The body of both checks.
#[derive(Debug, Serialize)]
pub(super) struct Health {
    /// `ok`, or `unavailable`.
    status: &'static str,
    /// Each check and its outcome (`ok`, or why not), for `/readyz`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `GET /healthz`: the process is alive and its runtime answers.
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: Vec::new(),
    })
}

/// `GET /readyz`: 200 when every check passes, 503 otherwise.
pub(super) async fn readyz(State(ops): State<Arc<Ops>>) -> (StatusCode, Json<Health>) {
    let stopping = *ops.shutdown.borrow();
    let mut checks = vec![Check {
        name: "listeners",
        ok: !stopping,
        error: stopping.then(|| "the server is stopping".to_owned()),
    }];
    let engine = ops.node.core.inspect();
    let (name, healthy) = match engine {
        crate::engine::AnyEngine::Memory(_) => ("storage", engine.health().await),
        crate::engine::AnyEngine::Redis(_) => ("redis", engine.health().await),
    };
    checks.push(Check {
        name,
        ok: healthy.is_ok(),
        error: healthy.err().map(|e| e.to_string()),
    });
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ready { "ok" } else { "unavailable" },
            checks,
        }),
    )
}
