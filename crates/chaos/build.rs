//! Nothing to generate: this build script only makes protoc-bin-vendored part of the build,
//! so the vendored protoc is on disk before etcd-client's build script runs `$PROTOC`
//! (tools/protoc, set by .cargo/config.toml), as for skiff-bench. It warns early on a
//! platform the crate has no protoc for.

fn main() {
    if let Err(e) = protoc_bin_vendored::protoc_bin_path() {
        println!("cargo:warning=protoc-bin-vendored has no protoc for this platform: {e}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
