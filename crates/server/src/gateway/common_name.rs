//! etcd 3.4's refusal of certificate users on the JSON gateway: etcd takes the user
//! from a client certificate's Common Name only on gRPC (the gateway would present
//! its own identity), so while auth is enabled a request to `/v3/...` (or
//! `/v3beta/...`) over TLS with a verified client certificate that carries a Common
//! Name is answered `400 Bad Request` with etcd's text, before any call is made.
//!
//! Guarantees: only gateway paths are affected (`/health`, `/metrics`, `/version`
//! and the `/v3` redirect are not); a certificate without a Common Name, a plain
//! connection and auth off pass through unchanged.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// etcd's answer, as Go's `http.Error` writes it (with its trailing newline).
const REFUSAL: &str =
    "CommonName of client sending a request against gateway will be ignored and not used as expected\n";

/// The most of a refused request's body that is read before the answer.
const REFUSED_BODY_LIMIT: usize = 2 << 20;

/// Whether auth is enabled now.
pub type AuthEnabled = Arc<dyn Fn() -> bool + Send + Sync>;

/// `router` with the refusal in front of it.
pub fn refuse_common_names(router: axum::Router, auth_enabled: AuthEnabled) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(auth_enabled, refuse))
}

async fn refuse(
    axum::extract::State(auth_enabled): axum::extract::State<AuthEnabled>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let gateway_path = path.starts_with("/v3/") || path.starts_with("/v3beta/");
    let named = crate::tls::client_common_name(req.extensions()).is_some_and(|cn| !cn.is_empty());
    if gateway_path && named && auth_enabled() {
        // Read the request body first (bounded): answering while the client is still
        // sending it makes HTTP/2 reset the stream, which a client may see as a broken
        // response (curl: exit 92) instead of the 400.
        let _ = axum::body::to_bytes(req.into_body(), REFUSED_BODY_LIMIT).await;
        return (
            StatusCode::BAD_REQUEST,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            REFUSAL,
        )
            .into_response();
    }
    next.run(req).await
}
