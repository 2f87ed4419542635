//! The operations listener of long-running commands (`metrics.listen`): `/metrics` (Prometheus
//! text), `/healthz` (the process answers) and `/readyz` (the database answers and its schema is
//! one this binary runs on; 503 otherwise).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::store::Store;

/// A readiness probe that takes longer than this answers 503.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct OpsState<S: Store> {
    store: S,
    metrics: PrometheusHandle,
}

pub fn router<S: Store>(store: S, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render::<S>))
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready::<S>))
        .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "no such endpoint" }))) })
        .with_state(OpsState { store, metrics })
}

async fn render<S: Store>(State(state): State<OpsState<S>>) -> Response {
    state.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

async fn ready<S: Store>(State(state): State<OpsState<S>>) -> Response {
    let problem = match tokio::time::timeout(READY_TIMEOUT, state.store.probe_ready()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("the database did not answer within {} s", READY_TIMEOUT.as_secs())),
    };
    match problem {
        None => axum::Json(json!({ "status": "ready" })).into_response(),
        Some(problem) => {
            tracing::warn!(event = "not_ready", problem = %problem);
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "not ready", "problem": problem })))
                .into_response()
        }
    }
}

/// Binds `addr` (a clear error when it is taken) and serves `router` until `shutdown`.
pub async fn bind(addr: &str, what: &'static str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

pub async fn serve(listener: tokio::net::TcpListener, router: Router, shutdown: crate::worker::Shutdown) {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let result = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    match result {
        Ok(()) => tracing::info!(event = "shutdown_listener_stopped", addr = %addr),
        Err(e) => tracing::error!(event = "listener_failed", addr = %addr, error = %e),
    }
}
