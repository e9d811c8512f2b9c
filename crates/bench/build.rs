//! skiff-bench has nothing to generate. This build script exists so that the
//! protoc-bin-vendored build-dependency is part of the build: cargo downloads and unpacks
//! every package of a build before it runs any build script, so the vendored protoc is on
//! disk by the time etcd-client's build script runs `$PROTOC` (tools/protoc), which looks
//! for it there. Asking for the path here also warns early, with the crate's own message,
//! on a platform it has no binary for.

fn main() {
    match protoc_bin_vendored::protoc_bin_path() {
        Ok(_) => {}
        Err(e) => {
            println!("cargo:warning=protoc-bin-vendored has no protoc for this platform: {e}")
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
