//! etcd v3 wire-compatible protobuf types and gRPC services, plus Skiff's own peer and
//! internal messages.
//!
//! Guarantees: every package, service, message, field name and field number in
//! `etcdserverpb`, `mvccpb`, `authpb`, `v3lockpb`, `v3electionpb`, and in etcd's file
//! formats (`leasepb`, `raftpb`, the WAL's `etcdserverpb.Metadata` and the requests its
//! entries carry, `etcdserverpb.InternalRaftRequest` and the v2 `Request`) matches etcd 3.4+ (a
//! superset: fields added up to 3.6 are present), so gRPC paths such as
//! `/etcdserverpb.KV/Range` and the bytes on the wire are what etcd clients expect.
//! `bytes` fields are [`bytes::Bytes`], so payloads are shared rather than copied.
//! The code is generated at build time with a vendored `protoc`.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// Keys, values and watch events (etcd `mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (etcd `authpb`).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The client API: KV, Watch, Lease, Cluster, Maintenance, Auth (etcd `etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The lock service (etcd `v3lockpb`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The election service (etcd `v3electionpb`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// etcd's stored lease record (etcd `leasepb`), for reading and writing etcd's `db`.
pub mod leasepb {
    tonic::include_proto!("leasepb");
}

/// etcd's Raft messages as its WAL and snapshot files store them (etcd `raftpb`).
pub mod raftpb {
    tonic::include_proto!("raftpb");
}

/// Skiff's peer protocol and the requests proposed through Raft.
pub mod skiffpb {
    tonic::include_proto!("skiffpb");
}

pub use prost::Message;
