//! The plain-HTTP endpoints etcd serves on its client port: `/health`, `/version`
//! and `/metrics`, with etcd's paths, bodies, content types and status codes (load
//! balancers and Kubernetes probes look at exactly these).
//!
//! They share the client listener with gRPC (see `serve`): HTTP/1.1 requests land
//! here, HTTP/2 gRPC requests go to the services.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::facade::MaintenanceApi;
use crate::metrics::Metrics;
use crate::version::{ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION, SKIFF_VERSION};

struct HttpState<F> {
    metrics: Metrics,
    facade: Arc<F>,
}

impl<F> Clone for HttpState<F> {
    fn clone(&self) -> Self {
        HttpState {
            metrics: self.metrics.clone(),
            facade: self.facade.clone(),
        }
    }
}

/// The router for the HTTP endpoints; `/health` asks the facade.
pub fn router<F: MaintenanceApi>(metrics: Metrics, facade: Arc<F>) -> Router {
    Router::new()
        .route("/health", get(health_handler::<F>))
        .route("/version", get(version_handler))
        .route("/metrics", get(metrics_handler::<F>))
        .with_state(HttpState { metrics, facade })
}

/// What etcd serves on a `--listen-metrics-urls` listener: `/metrics` and `/health`.
pub fn metrics_router<F: MaintenanceApi>(metrics: Metrics, facade: Arc<F>) -> Router {
    Router::new()
        .route("/health", get(health_handler::<F>))
        .route("/metrics", get(metrics_handler::<F>))
        .with_state(HttpState { metrics, facade })
}

#[derive(serde::Deserialize)]
struct HealthParams {
    #[serde(default)]
    serializable: Option<String>,
}

async fn health_handler<F: MaintenanceApi>(
    State(state): State<HttpState<F>>,
    Query(params): Query<HealthParams>,
) -> Response {
    let serializable = params.serializable.as_deref() == Some("true");
    let result = state.facade.health(serializable).await;
    let (status, body) = match &result {
        Ok(()) => {
            state.metrics.health_success.inc();
            (StatusCode::OK, r#"{"health":"true"}"#)
        }
        Err(why) => {
            state.metrics.health_failures.inc();
            tracing::warn!(reason = ?why, "/health error");
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn version_handler() -> Response {
    let body = format!(
        r#"{{"etcdserver":"{ETCD_SERVER_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}","skiff":"{SKIFF_VERSION}"}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics_handler<F: MaintenanceApi>(State(state): State<HttpState<F>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
