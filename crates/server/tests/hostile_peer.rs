//! Issue 13: crafted Raft messages sent to a member's peer port (as a process that
//! can reach it and has read the cluster and member IDs from a response header) are
//! refused and logged, and the member keeps serving. Each message below tripped an
//! invariant assertion in the Raft core before (so one message stopped a member);
//! `skiff_raft::peer_check`'s unit tests show that path. A frame from a process that
//! is not a member is refused by the transport. Ports 23570-23575 belong to this file.

// Test helpers: a failure is a test failure with a location.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use skiff_proto::skiffpb::peer_client::PeerClient;
use skiff_proto::skiffpb::RaftFrame;
use skiff_raft::{
    ConfState, Encode, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        entry_type: EntryType::Normal,
        data: "forged".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_peer_messages_are_refused_and_the_member_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = common::cluster_members(
        std::path::Path::new(env!("CARGO_BIN_EXE_skiff")),
        3,
        23570,
        dir.path(),
        &[],
    );
    for m in &mut members {
        m.spawn();
    }
    for m in &mut members {
        m.wait_serving(Duration::from_secs(30));
    }
    let endpoints: Vec<String> = members.iter().map(|m| m.url()).collect();

    // What an outsider learns from any response header, and which member is a follower.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (target, leader, cluster_id, term, target_id) = loop {
        let mut found = None;
        for (i, ep) in endpoints.iter().enumerate() {
            let Ok(mut c) = etcd_client::Client::connect([ep.clone()], None).await else {
                continue;
            };
            let Ok(st) = c.status().await else { continue };
            let h = st.header().unwrap();
            if st.leader() != 0 && st.leader() != h.member_id() {
                found = Some((i, st.leader(), h.cluster_id(), h.raft_term(), h.member_id()));
                break;
            }
        }
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "no follower with a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut client = etcd_client::Client::connect([endpoints[target].clone()], None)
        .await
        .unwrap();
    client.put("before", "1", None).await.unwrap();

    // Forged as if from the leader, at the current term.
    let msg = |t: MessageType| Message {
        msg_type: t,
        from: leader,
        to: target_id,
        term,
        ..Default::default()
    };
    let bad_snapshot = |index: u64, snap_term: u64, voters: Vec<u64>, learners: Vec<u64>| Message {
        snapshot: Some(Snapshot {
            data: Default::default(),
            metadata: SnapshotMetadata {
                conf_state: ConfState {
                    voters,
                    learners,
                    ..Default::default()
                },
                index,
                term: snap_term,
            },
        }),
        ..msg(MessageType::Snapshot)
    };
    let crafted: Vec<(&str, Message)> = vec![
        (
            "Heartbeat",
            Message {
                commit: 1 << 40,
                ..msg(MessageType::Heartbeat)
            },
        ),
        (
            "Append",
            Message {
                index: 1 << 30,
                log_term: term,
                entries: vec![entry((1 << 30) + 1, term), entry((1 << 30) + 7, term)],
                ..msg(MessageType::Append)
            },
        ),
        (
            "Append",
            Message {
                index: 1 << 30,
                log_term: term,
                entries: vec![entry((1 << 30) + 1, term + 5)],
                ..msg(MessageType::Append)
            },
        ),
        // The target is both a voter and a learner: an inconsistent membership.
        (
            "Snapshot",
            bad_snapshot(1 << 30, term, vec![leader, target_id], vec![target_id]),
        ),
        ("Snapshot", bad_snapshot(0, term, vec![leader], vec![])),
        ("Snapshot", msg(MessageType::Snapshot)),
        (
            "Heartbeat",
            Message {
                term: u64::MAX,
                ..msg(MessageType::Heartbeat)
            },
        ),
    ];
    let peer_url = format!("http://127.0.0.1:{}", members[target].peer_port);
    let mut peer = PeerClient::connect(peer_url.clone()).await.unwrap();
    let frame = RaftFrame {
        cluster_id,
        from: leader,
        to: target_id,
        messages: crafted.iter().map(|(_, m)| m.encode()).collect(),
    };
    peer.stream(tokio_stream::iter(vec![frame])).await.unwrap();

    // Refused and logged, one line each.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&members[target].log_path).unwrap();
        let refused = log.matches("refused a peer message").count();
        if refused >= crafted.len() {
            for (kind, _) in &crafted {
                assert!(
                    log.contains(&format!("refused {kind} from")),
                    "{kind}:\n{log}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} of {} crafted messages logged as refused:\n{}",
            crafted.len(),
            members[target].log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A process that is not a member is refused by the transport.
    let stranger = RaftFrame {
        cluster_id,
        from: 0x1234,
        to: target_id,
        messages: vec![msg(MessageType::Heartbeat).encode()],
    };
    let err = peer
        .stream(tokio_stream::iter(vec![stranger]))
        .await
        .expect_err("a non-member's frame is refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // The member is still running and serving, with the cluster.
    assert!(
        members[target].try_exit().is_none(),
        "the target member exited"
    );
    client.put("after", "2", None).await.unwrap();
    for ep in &endpoints {
        let mut c = etcd_client::Client::connect([ep.clone()], None)
            .await
            .unwrap();
        let got = c.get("after", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"2", "{ep}");
    }
    let st = client.status().await.unwrap();
    assert_eq!(
        st.header().unwrap().raft_term(),
        term,
        "no disruption: same term"
    );
}
