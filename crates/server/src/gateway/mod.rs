//! The JSON gateway on the client port, as etcd 3.4 serves it with grpc-gateway:
//! `POST /v3/<service>/<call>` (and the same under `/v3beta/`) with a JSON request
//! body, answered with the JSON of the gRPC response. Clients such as etcd3gw,
//! Patroni's etcd3 DCS and curl scripts speak it instead of gRPC.
//!
//! It is one more front end on the request facade (generic over [`Facade`], like
//! `api` and `http`): every call goes through the same pipeline as gRPC.
//!
//! Guarantees (etcd 3.4's gateway, checked against it by `tests/gateway.rs`):
//! - the paths of etcd's `rpc.proto` HTTP bindings: KV, Watch, Lease (with the
//!   `/v3/kv/lease/...` aliases), Cluster, Maintenance, Auth; `/v3/maintenance/hash`
//!   is Hash (etcd binds HashKV to the same path, where Hash wins);
//! - the `Authorization` header's token (or `Grpc-Metadata-Token`'s; a plain `Token`
//!   header is ignored, as grpc-gateway drops it) is the caller's, so the facade's
//!   auth layer authenticates and authorizes every gateway call, Auth calls included,
//!   exactly as it does gRPC's ([`auth`]);
//! - JSON as jsonpb reads and writes etcd's messages ([`decode`], [`encode`]);
//! - errors as `{"error","message","code"}` with grpc-gateway's HTTP status
//!   ([`reply`]); a request larger than gRPC would receive (`--max-request-bytes` plus
//!   512 KiB, encoded) is refused with grpc-go's ResourceExhausted text, as etcd's
//!   gateway relays it; an unknown `/v3/` path is a 404 `Not Found`, another method than POST
//!   on a known path a 405;
//! - as etcd 3.4, a client certificate's Common Name is never a user here: while auth
//!   is on, a request with a verified certificate that names one is refused with
//!   etcd's 400 ([`common_name`]);
//! - `/v3/watch` and `/v3/lease/keepalive` read a stream of JSON requests from the body
//!   and answer a stream of `{"result":...}` lines ([`watch`], [`lease`]).
//!
//! A watcher's `fragment` flag is accepted and its responses are sent whole, one line
//! each, as etcd 3.4's gateway sends them (seen with curl: six 1.5 kB events caught up
//! under `--max-request-bytes 4096` arrive in one line from etcd 3.4.23; over gRPC
//! both split them).
//!
//! Not yet: websocket upgrades.

/// `Decode` for requests without fields (call sites import `Decode`, `Fields`,
/// `Result` and `pb`).
macro_rules! empty_request {
    ($($t:ident),*) => {
        $(
            impl Decode for pb::$t {
                fn decode(_: &mut Fields<'_>) -> Result<Self> {
                    Ok(pb::$t {})
                }
            }
        )*
    };
}

/// `Encode` for responses that carry only their header (call sites import `Encode`,
/// `Obj` and `pb`).
macro_rules! header_only {
    ($($t:ident),*) => {
        $(
            impl Encode for pb::$t {
                fn encode(&self, o: &mut Obj) {
                    o.message("header", self.header.as_ref());
                }
            }
        )*
    };
}

/// Declares `name => facade_method` unary handlers: decode the body, call the
/// facade, answer its JSON or its error.
macro_rules! unary_handlers {
    ($($name:ident => $method:ident,)*) => {
        $(
            pub(super) async fn $name<F: crate::facade::Facade>(
                axum::extract::State(gw): axum::extract::State<super::Gw<F>>,
                body: axum::body::Body,
            ) -> axum::response::Response {
                match super::request(&gw, body).await {
                    Ok(req) => super::reply::unary(gw.facade.$method(req).await),
                    Err(refused) => refused,
                }
            }
        )*
    };
}

mod auth;
mod base64;
mod cluster;
pub mod common_name;
pub mod decode;
pub(crate) mod encode;
mod kv;
mod lease;
mod maintenance;
mod reply;
mod stream;
mod watch;

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use axum::routing::{any, post, MethodRouter};
use axum::Router;

use crate::facade::Facade;
use crate::serve;

/// What every gateway handler holds.
pub struct Gw<F> {
    facade: Arc<F>,
    /// The largest request message, encoded, that gRPC would receive
    /// (`--max-request-bytes` plus etcd's gRPC overhead).
    max_message: usize,
    /// The largest request body read (JSON is base64 and text around a message).
    max_body: usize,
}

impl<F> Clone for Gw<F> {
    fn clone(&self) -> Self {
        Gw {
            facade: self.facade.clone(),
            max_message: self.max_message,
            max_body: self.max_body,
        }
    }
}

/// Reads a unary call's request and refuses one that etcd's gRPC server would not
/// receive (etcd's gateway hands requests to it), with grpc-go's error.
async fn request<F, T: decode::Decode + prost::Message>(
    gw: &Gw<F>,
    body: Body,
) -> Result<T, Response> {
    let req: T = stream::read_one(body, gw.max_body)
        .await
        .map_err(|r| reply::error(r.code, &r.message))?;
    let len = req.encoded_len();
    if len > gw.max_message {
        return Err(reply::error(
            tonic::Code::ResourceExhausted,
            &format!(
                "grpc: received message larger than max ({len} vs. {})",
                gw.max_message
            ),
        ));
    }
    Ok(req)
}

/// The gateway's routes, over `facade`, for requests of at most `max_request_bytes`.
pub fn router<F: Facade>(facade: Arc<F>, max_request_bytes: u32) -> Router {
    let max_message = serve::max_recv_bytes(max_request_bytes);
    let max_body = 4 * max_message;
    let calls: Vec<(&str, MethodRouter<Gw<F>>)> = vec![
        ("/kv/range", post(kv::range::<F>)),
        ("/kv/put", post(kv::put::<F>)),
        ("/kv/deleterange", post(kv::delete_range::<F>)),
        ("/kv/txn", post(kv::txn::<F>)),
        ("/kv/compaction", post(kv::compact::<F>)),
        ("/watch", post(watch::watch::<F>)),
        ("/lease/grant", post(lease::grant::<F>)),
        ("/lease/revoke", post(lease::revoke::<F>)),
        ("/kv/lease/revoke", post(lease::revoke::<F>)),
        ("/lease/keepalive", post(lease::keep_alive::<F>)),
        ("/lease/timetolive", post(lease::time_to_live::<F>)),
        ("/kv/lease/timetolive", post(lease::time_to_live::<F>)),
        ("/lease/leases", post(lease::leases::<F>)),
        ("/kv/lease/leases", post(lease::leases::<F>)),
        ("/cluster/member/add", post(cluster::member_add::<F>)),
        ("/cluster/member/remove", post(cluster::member_remove::<F>)),
        ("/cluster/member/update", post(cluster::member_update::<F>)),
        ("/cluster/member/list", post(cluster::member_list::<F>)),
        (
            "/cluster/member/promote",
            post(cluster::member_promote::<F>),
        ),
        ("/maintenance/alarm", post(maintenance::alarm::<F>)),
        ("/maintenance/status", post(maintenance::status::<F>)),
        (
            "/maintenance/defragment",
            post(maintenance::defragment::<F>),
        ),
        ("/maintenance/hash", post(maintenance::hash::<F>)),
        ("/maintenance/snapshot", post(maintenance::snapshot::<F>)),
        (
            "/maintenance/transfer-leadership",
            post(maintenance::move_leader::<F>),
        ),
        ("/auth/enable", post(auth::auth_enable::<F>)),
        ("/auth/disable", post(auth::auth_disable::<F>)),
        ("/auth/authenticate", post(auth::authenticate::<F>)),
        ("/auth/user/add", post(auth::user_add::<F>)),
        ("/auth/user/get", post(auth::user_get::<F>)),
        ("/auth/user/list", post(auth::user_list::<F>)),
        ("/auth/user/delete", post(auth::user_delete::<F>)),
        ("/auth/user/changepw", post(auth::user_change_password::<F>)),
        ("/auth/user/grant", post(auth::user_grant_role::<F>)),
        ("/auth/user/revoke", post(auth::user_revoke_role::<F>)),
        ("/auth/role/add", post(auth::role_add::<F>)),
        ("/auth/role/get", post(auth::role_get::<F>)),
        ("/auth/role/list", post(auth::role_list::<F>)),
        ("/auth/role/delete", post(auth::role_delete::<F>)),
        ("/auth/role/grant", post(auth::role_grant_permission::<F>)),
        ("/auth/role/revoke", post(auth::role_revoke_permission::<F>)),
    ];
    let mut router: Router<Gw<F>> = Router::new();
    for prefix in ["/v3", "/v3beta"] {
        for (path, handler) in &calls {
            router = router.route(
                &format!("{prefix}{path}"),
                handler.clone().fallback(reply::method_not_allowed),
            );
        }
        router = router.route(&format!("{prefix}/{{*rest}}"), any(reply::not_found));
        router = router.route(&format!("{prefix}/"), any(reply::not_found));
        router = router.route(prefix, any(reply::add_slash));
    }
    // A token in the `Authorization` (or `Grpc-Metadata-Token`) header, which etcd's
    // gateway forwards as gRPC metadata.
    let router = router.layer(axum::middleware::from_fn(
        crate::facade::caller::from_gateway_headers,
    ));
    router.with_state(Gw {
        facade,
        max_message,
        max_body,
    })
}
