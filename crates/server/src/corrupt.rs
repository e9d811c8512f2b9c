//! etcd 3.4's corruption checks: a member's HashKV compared with its peers' at a shared
//! revision (peers are asked over their client URLs, `Maintenance.HashKV`).
//!
//! - [`initial_check`] (`--experimental-initial-corrupt-check`): before Raft starts and
//!   before any client is served, this member's hash at its own revision is compared
//!   with each reachable peer's at that revision; a peer with the same compaction
//!   revision and another hash makes the start fail ("found data inconsistency with
//!   peers"), with both members, hashes and the revision in the log. Unreachable peers
//!   and peers compacted past the revision are skipped with a warning, as etcd does.
//! - [`periodic_check`] (`--experimental-corrupt-check-time`): the leader does the same
//!   every interval and raises the CORRUPT alarm (through Raft) for a member that
//!   diverged, or for itself if its own hash changed under it; etcd's rules on which
//!   differences count are kept as they are (see [`judge`]). While CORRUPT is raised
//!   the apply thread refuses writes with `etcdserver: corrupt cluster`.

use std::sync::Arc;
use std::time::Duration;

use skiff_proto::etcdserverpb as pb;
use skiff_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use skiff_storage::mvcc::{HashKv, KvStore};
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::server::EtcdServer;
use skiff_proto::skiffpb::MemberRecord;

/// How long one peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer's answer to HashKV at a revision.
struct PeerHash {
    member: u64,
    resp: Result<pb::HashKvResponse, String>,
}

/// Asks every member but `me` for its HashKV at `revision`, trying its client URLs in
/// order (plain `http` ones: the checker has no client certificate).
async fn peer_hashes(members: &[MemberRecord], me: u64, revision: i64) -> Vec<PeerHash> {
    let mut out = Vec::new();
    for m in members.iter().filter(|m| m.id != me) {
        let mut resp = Err("no http client URL".to_string());
        for url in m.client_urls.iter().filter(|u| u.starts_with("http://")) {
            resp = ask(url, revision).await;
            if resp.is_ok() {
                break;
            }
        }
        out.push(PeerHash { member: m.id, resp });
    }
    out
}

async fn ask(url: &str, revision: i64) -> Result<pb::HashKvResponse, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(PEER_TIMEOUT)
        .timeout(PEER_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    MaintenanceClient::new(channel)
        .hash_kv(pb::HashKvRequest { revision })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

/// The members whose data differ from `mine` (etcd's `checkHashKV` rules): a peer ahead
/// of us in revision or compaction, or with our compaction revision and another hash.
fn judge(mine: &HashKv, peers: &[PeerHash]) -> Vec<(u64, String)> {
    let mut bad = Vec::new();
    for p in peers {
        let Ok(r) = &p.resp else { continue };
        let peer_rev = r.header.as_ref().map_or(0, |h| h.revision);
        let why = if peer_rev > mine.revision {
            format!(
                "revision {peer_rev} is ahead of the leader's {}",
                mine.revision
            )
        } else if r.compact_revision > mine.compact_revision {
            format!(
                "compact revision {} is ahead of the leader's {}",
                r.compact_revision, mine.compact_revision
            )
        } else if r.compact_revision == mine.compact_revision && r.hash != mine.hash {
            format!(
                "hash {} != {} at revision {} (compact revision {})",
                r.hash, mine.hash, mine.revision, mine.compact_revision
            )
        } else {
            continue;
        };
        bad.push((p.member, why));
    }
    bad
}

/// `--experimental-initial-corrupt-check`: fails if a peer's data differ from ours at
/// our current revision.
pub async fn initial_check(
    store: &KvStore,
    members: &[MemberRecord],
    me: u64,
) -> anyhow::Result<()> {
    let mine = store.hash_kv(0)?;
    tracing::info!(
        member = %format!("{me:x}"),
        revision = mine.revision,
        hash = mine.hash,
        "starting initial corruption check"
    );
    let peers = peer_hashes(members, me, mine.revision).await;
    let mut mismatched = false;
    for p in &peers {
        match &p.resp {
            Err(e) => tracing::warn!(
                peer = %format!("{:x}", p.member),
                error = %e,
                "cannot fetch hash from peer; skipped"
            ),
            Ok(r) if r.compact_revision != mine.compact_revision => tracing::warn!(
                peer = %format!("{:x}", p.member),
                peer_compact_revision = r.compact_revision,
                compact_revision = mine.compact_revision,
                "peer's compact revision differs; skipped"
            ),
            Ok(r) if r.hash != mine.hash => {
                mismatched = true;
                tracing::error!(
                    member = %format!("{me:x}"),
                    hash = mine.hash,
                    peer = %format!("{:x}", p.member),
                    peer_hash = r.hash,
                    revision = mine.revision,
                    compact_revision = mine.compact_revision,
                    "{me:x}'s hash {} != {:x}'s hash {} (revision {}, compact revision {})",
                    mine.hash,
                    p.member,
                    r.hash,
                    mine.revision,
                    mine.compact_revision
                );
            }
            Ok(_) => {}
        }
    }
    if mismatched {
        anyhow::bail!("{me:x} found data inconsistency with peers");
    }
    tracing::info!(member = %format!("{me:x}"), "initial corruption check passed");
    Ok(())
}

/// `--experimental-corrupt-check-time`: the leader's check every `every`.
pub async fn periodic_check(
    server: Arc<EtcdServer>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if server.leader() != server.member_id {
            continue;
        }
        if let Err(e) = check_once(&server).await {
            tracing::warn!(error = %e, "corruption check failed to run");
        }
    }
}

async fn check_once(server: &EtcdServer) -> anyhow::Result<()> {
    let store = server.store.clone();
    let mine = tokio::task::spawn_blocking(move || store.hash_kv(0)).await??;
    let peers = peer_hashes(&server.members_now(), server.member_id, mine.revision).await;
    let store = server.store.clone();
    let again = tokio::task::spawn_blocking(move || store.hash_kv(0)).await??;
    let mut bad = Vec::new();
    if again.hash != mine.hash
        && again.revision == mine.revision
        && again.compact_revision == mine.compact_revision
    {
        bad.push((
            server.member_id,
            format!(
                "own hash changed from {} to {} at revision {}",
                mine.hash, again.hash, mine.revision
            ),
        ));
    }
    bad.extend(judge(&again, &peers));
    // etcd raises one alarm per check.
    if let Some((member, why)) = bad.into_iter().next() {
        tracing::error!(
            member = %format!("{member:x}"),
            revision = mine.revision,
            "data inconsistency found: member {member:x}: {why}; raising CORRUPT"
        );
        let alarm = skiff_proto::skiffpb::internal_request::Request::Alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: member,
            alarm: pb::AlarmType::Corrupt as i32,
        });
        server.propose(alarm).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(member: u64, revision: i64, compact_revision: i64, hash: u32) -> PeerHash {
        PeerHash {
            member,
            resp: Ok(pb::HashKvResponse {
                header: Some(pb::ResponseHeader {
                    revision,
                    ..Default::default()
                }),
                hash,
                compact_revision,
                hash_revision: revision,
            }),
        }
    }

    #[test]
    fn judges_as_etcd() {
        let mine = HashKv {
            hash: 7,
            compact_revision: 3,
            hash_revision: 10,
            revision: 10,
        };
        let peers = [
            answer(1, 10, 3, 7),  // same
            answer(2, 10, 3, 8),  // diverged
            answer(3, 11, 3, 7),  // ahead of the leader
            answer(4, 10, 2, 99), // compacted less: hashes not comparable
            answer(5, 10, 4, 7),  // compacted more than the leader
            PeerHash {
                member: 6,
                resp: Err("unreachable".into()),
            },
        ];
        let bad: Vec<u64> = judge(&mine, &peers).into_iter().map(|(m, _)| m).collect();
        assert_eq!(bad, vec![2, 3, 5]);
    }
}
