//! Who is asking: the credentials a front end received with a request (etcd's `token`
//! gRPC metadata, the gateway's `Authorization` header, and on gRPC the Common Name
//! of a verified client certificate), carried to the facade's auth layer as a
//! task-local value, so the facade traits keep etcd's plain request types and no
//! service handles credentials itself.
//!
//! The Common Name is only ever set from a certificate the TLS handshake verified
//! (`--client-cert-auth`; without it no certificate is asked for), and only by the
//! gRPC front end: etcd 3.4 uses it as the user of gRPC calls that carry no token,
//! never on the JSON gateway (which refuses such clients while auth is on,
//! `crate::gateway::refuse_common_names`).
//!
//! Two scopes: [`with_caller`], set by each front end around the whole handling of a
//! call ([`of_request`] on gRPC (`crate::front`), [`from_gateway_headers`] on the JSON
//! gateway), and [`with_checked_revision`], set by the auth layer
//! around the inner call: the auth store revision the request's permissions were
//! checked against, which [`checked_revision`] hands to the proposal so the apply can
//! refuse it if the store changed in between (`etcdserver: revision of auth store is
//! old`). Work a handler spawns onto another task takes the caller along with
//! [`inherit`].

use std::future::Future;

use skiff_api::EtcdError;

use crate::session::{SessionMeta, ACKED_HEADER, SEQ_HEADER, SESSION_HEADER};

/// The credentials of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// An auth token (etcd's `token` metadata), if the client sent one.
    pub token: Option<String>,
    /// The Common Name of the verified client certificate the call came with over
    /// gRPC (`""` if the certificate has none, as etcd reads it); used as the user
    /// when there is no token.
    pub common_name: Option<String>,
    /// A client session's metadata (`crate::session`), gRPC only; malformed metadata
    /// is kept as the error to answer the request with.
    pub session: Option<Result<SessionMeta, EtcdError>>,
}

tokio::task_local! {
    static CALLER: Caller;
    static CHECKED_REVISION: u64;
}

/// etcd's gRPC metadata keys for an auth token, in the order etcd looks: `token`
/// (clients), `authorization` (the JSON gateway's `Authorization` header, which etcd
/// also accepts on gRPC).
pub const TOKEN_HEADERS: [&str; 2] = ["token", "authorization"];

/// The HTTP headers etcd 3.4's JSON gateway turns into those metadata keys:
/// grpc-gateway forwards `Grpc-Metadata-Token` as `token` and `Authorization` as
/// `authorization`, and drops a plain `Token` header.
pub const GATEWAY_TOKEN_HEADERS: [&str; 2] = ["grpc-metadata-token", "authorization"];

/// The token of the first of `names` present in `headers`.
fn token_of(headers: &axum::http::HeaderMap, names: &[&str]) -> Option<String> {
    names.iter().find_map(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// The caller of a gRPC call: the one its metadata name (gRPC metadata are HTTP/2
/// headers) and its verified client certificate (the client port's front runs each
/// call [`with_caller`] this).
pub fn of_request(headers: &axum::http::HeaderMap, extensions: &axum::http::Extensions) -> Caller {
    Caller {
        token: token_of(headers, &TOKEN_HEADERS),
        common_name: crate::tls::client_common_name(extensions),
        session: session_of(headers),
    }
}

/// Middleware for the JSON gateway's router: the caller as etcd's gateway forwards
/// it ([`GATEWAY_TOKEN_HEADERS`]).
pub async fn from_gateway_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let caller = Caller {
        token: token_of(req.headers(), &GATEWAY_TOKEN_HEADERS),
        common_name: None,
        session: None,
    };
    with_caller(caller, next.run(req)).await
}

/// A client session's metadata, if the call carries any.
fn session_of(headers: &axum::http::HeaderMap) -> Option<Result<SessionMeta, EtcdError>> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    SessionMeta::parse(get(SESSION_HEADER), get(SEQ_HEADER), get(ACKED_HEADER)).transpose()
}

/// The session metadata of the current call.
pub fn session() -> Option<Result<SessionMeta, EtcdError>> {
    CALLER.try_with(|c| c.session).ok().flatten()
}

/// The caller of the current call (no credentials outside any call).
pub fn current() -> Caller {
    CALLER.try_with(Caller::clone).unwrap_or_default()
}

/// Runs `fut` as a call from `caller`.
pub async fn with_caller<F: Future>(caller: Caller, fut: F) -> F::Output {
    CALLER.scope(caller, fut).await
}

/// `fut` with the current caller, for a task spawned on the caller's behalf.
pub fn inherit<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    CALLER.scope(current(), fut)
}

/// The auth store revision the current request was checked against (0: none).
pub fn checked_revision() -> u64 {
    CHECKED_REVISION.try_with(|r| *r).unwrap_or(0)
}

/// Runs `fut` as a request checked at auth store revision `revision`.
pub async fn with_checked_revision<F: Future>(revision: u64, fut: F) -> F::Output {
    CHECKED_REVISION.scope(revision, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scopes_nest_and_spawned_tasks_inherit() {
        assert_eq!(current(), Caller::default());
        let c = Caller {
            token: Some("t.1".into()),
            common_name: Some("alice".into()),
            session: None,
        };
        with_caller(c.clone(), async {
            assert_eq!(current(), c);
            let seen = tokio::spawn(inherit(async { current() })).await.unwrap();
            assert_eq!(seen, c);
            let plain = tokio::spawn(async { current() }).await.unwrap();
            assert_eq!(plain, Caller::default());
            with_checked_revision(7, async { assert_eq!(checked_revision(), 7) }).await;
            assert_eq!(checked_revision(), 0);
        })
        .await;
    }
}
