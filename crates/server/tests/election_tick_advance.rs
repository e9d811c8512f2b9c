//! `--initial-election-tick-advance` (etcd's default: on): a member whose streams to more
//! than one peer are up fast-forwards its election ticks by election ticks - 2, so a
//! cluster restarted together need not wait out a whole election timeout first.
//!
//! - On (the default): after a restart of all three members, each says it advanced its
//!   ticks by election ticks - 2 (here 10 s / 100 ms - 2 = 98), and a leader is elected.
//! - Off: no member advances, and no leader is elected before the election timeout has
//!   passed since the members started (Raft needs that many ticks first), which holds
//!   whatever the machine's load.
//!
//! Ports 29200-29205 belong to this file.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cluster_members, Member};

const ELECTION: Duration = Duration::from_secs(10);

fn members(dir: &Path, advance: &str) -> Vec<Member> {
    cluster_members(
        Path::new(env!("CARGO_BIN_EXE_skiff")),
        3,
        29200,
        dir,
        &[
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "10000",
            &format!("--initial-election-tick-advance={advance}"),
        ],
    )
}

/// Starts every member and waits until the cluster serves; how long that took.
fn start(ms: &mut [Member]) -> Duration {
    let started = Instant::now();
    for m in ms.iter_mut() {
        m.spawn();
    }
    for m in ms.iter_mut() {
        m.wait_serving(Duration::from_secs(60));
    }
    started.elapsed()
}

fn advanced(m: &Member) -> bool {
    m.log_tail(400)
        .lines()
        .any(|l| l.contains("advanced the election ticks") && l.contains("ticks=98"))
}

#[test]
fn a_restarted_cluster_advances_its_election_ticks_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut ms = members(dir.path(), "true");
    start(&mut ms);
    for m in ms.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
    let took = start(&mut ms);
    for m in &ms {
        assert!(
            advanced(m),
            "{} did not advance:\n{}",
            m.name,
            m.log_tail(30)
        );
    }
    eprintln!("advance on: serving {took:?} after the restart");
    for m in ms.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut ms = members(dir.path(), "false");
    let took = start(&mut ms);
    eprintln!("advance off: serving {took:?} after the start");
    assert!(
        took >= ELECTION,
        "a leader before the election timeout: {took:?}"
    );
    for m in &ms {
        assert!(!advanced(m), "{} advanced although told not to", m.name);
    }
    for m in ms.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
}
