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
mod corrupt;
mod db_in_use;
mod durability;
mod election_tick_advance;
mod etcd_client;
mod etcdctl_transcript;
mod failpoints;
mod flags;
mod fuzz_replay;
mod gateway;
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
mod skiffctl_check;
mod skiffctl_snapshot;
mod skiffctl_transcript;
mod snapshot;
mod space;
mod tls;
mod validation_vs_etcd;
mod watch_wire;
