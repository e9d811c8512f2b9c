//! With the `failpoints` feature: the `backend-commit` point fails a real backend
//! commit (run with `cargo test -p skiff-storage --features failpoints --test
//! failpoints`). One test, because the spec is read once per process.
#![cfg(feature = "failpoints")]

use skiff_storage::backend::{Backend, BackendConfig, BackendError};

#[test]
fn backend_commit_error_fails_the_backend_for_good() {
    std::env::set_var("SKIFF_FAILPOINTS", "backend-commit=1*error(disk gone)");
    let dir = tempfile::tempdir().unwrap();
    let be = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    match be.sync() {
        Err(BackendError::Io { path, source }) => {
            assert_eq!(path, dir.path().join("db"));
            assert_eq!(source.to_string(), "disk gone");
        }
        other => panic!("expected the injected I/O error, got {other:?}"),
    }
    // Armed for one hit only, yet the next commit is refused too: a failed commit or
    // write-back is final (fsyncgate), and says what failed first.
    match be.sync() {
        Err(BackendError::Failed { path, reason }) => {
            assert_eq!(path, dir.path().join("db"));
            assert!(reason.contains("disk gone"), "{reason}");
        }
        other => panic!("expected the commit refused after the failure, got {other:?}"),
    }
    assert!(be.failure().is_some_and(|r| r.contains("disk gone")));
}
