//! The member's integration tests, one module per file of this directory, built as one
//! test binary: `cargo test -p skiff-server --test integration <file>::` runs one file.
//!
//! One binary rather than one per file: each binary links the whole server (about 40 of
//! them made linking the largest part of a CI build), and the test harness runs the
//! tests of one binary two at a time, so a file with a single slow test no longer holds
//! the machine alone while the other core waits. Every file owns the ports its doc
//! comment names, and no file's ports overlap another's, so any two tests can run side
//! by side. A new file is added here as a `mod` line.

mod common;

mod auth_matrix;
mod cli;
mod client_failover;
mod client_reauth;
mod client_security;
mod client_stm;
mod cluster;
mod compact_physical;
mod corrupt;
mod db_in_use;
mod disk_faults;
mod durability;
mod election_tick_advance;
mod etcd_client;
mod etcdctl_transcript;
mod failpoints;
mod flags;
mod fuzz_replay;
mod gateway;
mod hostile_load;
mod hostile_peer;
mod jwt;
mod kube_pattern;
mod learner;
mod lease_checkpoint;
mod member_replace;
mod membership_restart;
mod metrics;
mod migrate;
mod move_leader;
mod peer_transport;
mod pipeline;
mod python_etcd3;
mod sessions;
mod skiffctl_check;
mod skiffctl_defrag;
mod skiffctl_mirror;
mod skiffctl_restore_etcd;
mod skiffctl_snapshot;
mod skiffctl_transcript;
mod snapshot;
mod space;
mod tls;
mod validation_vs_etcd;
mod watch_wire;

/// With `autotests = false`, a file of this directory missing from the list above
/// would silently never run.
#[test]
fn every_test_file_is_a_module_here() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = std::fs::read_to_string(dir.join("integration.rs")).expect("read this file");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("read tests/") {
        let path = entry.expect("dir entry").path();
        let (Some(stem), Some("rs")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if stem == "integration" {
            continue;
        }
        files += 1;
        assert!(
            this.contains(&format!("\nmod {stem};\n")),
            "tests/{stem}.rs is not a module of tests/integration.rs: add `mod {stem};`"
        );
    }
    assert!(
        files > 30,
        "only {files} test files found in {}",
        dir.display()
    );
}
