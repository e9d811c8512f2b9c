//! The plain-HTTP endpoints etcd serves on its client port: `/health`, `/version`
//! and `/metrics`, with etcd's paths, bodies, content types and status codes (load
//! balancers and Kubernetes probes look at exactly these).
//!
//! They share the client listener with gRPC (see `serve`): HTTP/1.1 requests land
//! here, HTTP/2 gRPC requests go to the services.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::version::{ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION, SKIFF_VERSION};

/// Why a member is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// An alarm (e.g. NOSPACE) is raised.
    Alarm(String),
    /// The member knows no leader.
    NoLeader,
    /// A no-op proposal did not commit in time.
    CommitFailed(String),
}

/// What `/health` asks the member.
pub trait HealthCheck: Send + Sync + 'static {
    /// Healthy when no alarm is raised, a leader is known and (unless
    /// `serializable`) a no-op commits through Raft within a second.
    fn check(
        &self,
        serializable: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), Unhealthy>> + Send + '_>>;
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    health: Arc<dyn HealthCheck>,
}

/// The router for the HTTP endpoints.
pub fn router(metrics: Metrics, health: Arc<dyn HealthCheck>) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/version", get(version_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(HttpState { metrics, health })
}

#[derive(serde::Deserialize)]
struct HealthParams {
    #[serde(default)]
    serializable: Option<String>,
}

async fn health_handler(
    State(state): State<HttpState>,
    Query(params): Query<HealthParams>,
) -> Response {
    let serializable = params.serializable.as_deref() == Some("true");
    let result = state.health.check(serializable).await;
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

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
