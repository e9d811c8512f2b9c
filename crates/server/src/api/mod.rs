//! The etcd v3 gRPC services: thin adapters from the wire to the request facade
//! ([`crate::facade`]). Every service is generic over the facade and nothing else, so
//! whatever wraps the facade (quota, auth, a counting layer in the tests) sees every
//! call; the checks etcd makes and the work itself happen behind the facade. Lock and
//! Election are built on the KV and watch facade, as etcd builds them on its client.

pub mod auth;
pub mod cluster;
pub mod election;
pub mod kv;
pub mod leader;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod unary;
pub mod watch;

use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use skiff_proto::v3electionpb::election_server::ElectionServer;
use skiff_proto::v3lockpb::lock_server::LockServer;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::{KvCalls, KvService};
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use watch::WatchService;

use crate::facade::Facade;
use crate::front::GrpcServices;
use crate::serve;

/// Every gRPC service of the client port, over `facade`, with etcd's message size
/// limits (requests up to `--max-request-bytes` plus gRPC overhead; responses
/// unlimited) and etcd's `hasleader` refusal ([`leader`]).
pub fn routes<F: Facade>(facade: Arc<F>, max_request_bytes: u32) -> GrpcServices {
    let max = serve::max_recv_bytes(max_request_bytes);
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX)
        };
    }
    GrpcServices::new()
        .require_leader(facade.leader_changes())
        .with(KvCalls::new(facade.clone(), max))
        .with(limited!(WatchServer::new(WatchService::new(
            facade.clone(),
            max_request_bytes as usize
        ))))
        .with(limited!(LeaseServer::new(LeaseService::new(
            facade.clone()
        ))))
        .with(limited!(LockServer::new(LockService::new(facade.clone()))))
        .with(limited!(ElectionServer::new(ElectionService::new(
            facade.clone()
        ))))
        .with(limited!(ClusterServer::new(ClusterService::new(
            facade.clone()
        ))))
        .with(limited!(MaintenanceServer::new(MaintenanceService::new(
            facade.clone()
        ))))
        .with(limited!(AuthServer::new(AuthService::new(facade))))
}
