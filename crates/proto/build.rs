//! Generates the Rust code for the .proto files under `proto/` with a vendored
//! protoc, so building needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs the compiler named by PROTOC; a build script is single-threaded,
    // so setting it here races with nothing.
    std::env::set_var("PROTOC", protoc);

    let root = PathBuf::from("proto");
    let files = [
        "mvccpb/kv.proto",
        "authpb/auth.proto",
        "etcdserverpb/rpc.proto",
        "v3lockpb/v3lock.proto",
        "v3electionpb/v3election.proto",
        "skiffpb/peer.proto",
        "skiffpb/internal.proto",
        "leasepb/lease.proto",
        "raftpb/raft.proto",
        "etcdserverpb/etcdserver.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Keys and values are shared, not copied, between the wire, raft entries and
        // the store.
        .bytes(".")
        .compile_protos(&paths, &[root])?;
    Ok(())
}
