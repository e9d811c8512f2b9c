//! Raft CPU cost per entry: three in-memory nodes driven in one thread, the leader
//! proposing 256-byte entries in batches of 1, 16 and 256. Messages are delivered at
//! once and storage is `MemStorage`, so what is measured is Raft itself (plus the
//! in-memory log), not disks or networks. Single-threaded, so wall time is CPU time.
//!
//! Run: `cargo bench -p skiff-raft --bench throughput`

use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_raft::{ConfState, Config, Entry, MemStorage, Message, RawNode, StateRole};

struct Node {
    raw: RawNode<MemStorage>,
    store: MemStorage,
    applied: u64,
}

fn cluster() -> Vec<Node> {
    (1..=3)
        .map(|id| {
            let store = MemStorage::new();
            store.wl().set_conf_state(ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            });
            let cfg = Config {
                id,
                max_inflight_msgs: 4096,
                max_size_per_msg: 4 * 1024 * 1024,
                ..Config::new(id)
            };
            Node {
                raw: RawNode::new(&cfg, store.clone()).expect("valid config"),
                store,
                applied: 0,
            }
        })
        .collect()
}

/// Runs every node's Ready loop and delivers messages until nothing moves.
fn stabilize(nodes: &mut [Node]) {
    let mut inbox: Vec<Message> = Vec::new();
    loop {
        let mut busy = false;
        for n in nodes.iter_mut() {
            if !n.raw.has_ready() {
                continue;
            }
            busy = true;
            let mut rd = n.raw.ready();
            inbox.append(&mut rd.messages);
            if let Some(s) = &rd.snapshot {
                n.store.wl().apply_snapshot(s.clone()).expect("snapshot");
            }
            n.store.wl().append(&rd.entries).expect("append");
            if let Some(hs) = rd.hard_state {
                n.store.wl().set_hard_state(hs);
            }
            inbox.append(&mut rd.persisted_messages);
            n.applied += rd.committed_entries.len() as u64;
            n.raw.advance(rd);
        }
        for m in inbox.drain(..) {
            busy = true;
            let to = (m.to - 1) as usize;
            let _ = nodes[to].raw.step(m);
        }
        if !busy {
            return;
        }
    }
}

fn compact(nodes: &mut [Node]) {
    // Keep memory flat across a long run, as a server would with snapshots.
    for n in nodes.iter_mut() {
        let applied = n.raw.raft.raft_log.applied;
        if applied > 10_000 {
            let _ = n.store.wl().compact(applied - 1000);
        }
    }
}

fn run(batch: usize, budget: Duration) -> (u64, Duration) {
    let mut nodes = cluster();
    nodes[0].raw.campaign().expect("campaign");
    stabilize(&mut nodes);
    assert_eq!(nodes[0].raw.raft.state, StateRole::Leader);
    let payload = Bytes::from(vec![7u8; 256]);
    let start_applied = nodes[0].applied;
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        let ents: Vec<Entry> = (0..batch).map(|_| Entry::normal(payload.clone())).collect();
        nodes[0].raw.propose_batch(ents).expect("leader accepts");
        stabilize(&mut nodes);
        rounds += 1;
        if rounds.is_multiple_of(64) {
            compact(&mut nodes);
        }
    }
    let elapsed = start.elapsed();
    let committed = nodes[0].applied - start_applied;
    // Every node applied everything: the work measured is real replication.
    for n in &nodes {
        assert_eq!(n.applied, nodes[0].applied, "followers lag after stabilize");
    }
    (committed, elapsed)
}

fn main() {
    let secs: f64 = std::env::var("RAFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    println!("skiff-raft: 3 in-memory nodes, one thread, 256-byte entries");
    println!("{:>6} {:>14} {:>16}", "batch", "entries/s", "CPU ns/entry");
    for batch in [1usize, 16, 256] {
        let (n, d) = run(batch, Duration::from_secs_f64(secs));
        let per_sec = n as f64 / d.as_secs_f64();
        let ns = d.as_nanos() as f64 / n as f64;
        println!("{batch:>6} {per_sec:>14.0} {ns:>16.0}");
    }
}
