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

/// The members whose data differ from ours (etcd's `checkHashKV` rules): a peer with
/// `hashed`'s compaction revision and another hash at `hashed.revision` (the revision
/// the peers were asked for), or a peer ahead of `now` in revision or compaction.
///
/// `now` must be taken after every revision a peer reported is applied here: a
/// follower may apply an entry before the leader does, and writes go on while the
/// peers answer, so comparing with the leader's revision from before the question
/// (or a hash taken after it) raised CORRUPT on a healthy cluster under writes.
fn judge(hashed: &HashKv, now: &HashKv, peers: &[PeerHash]) -> Vec<(u64, String)> {
    let mut bad = Vec::new();
    for p in peers {
        let Ok(r) = &p.resp else { continue };
        let peer_rev = r.header.as_ref().map_or(0, |h| h.revision);
        let why = if peer_rev > now.revision {
            format!(
                "revision {peer_rev} is ahead of the leader's {}",
                now.revision
            )
        } else if r.compact_revision > now.compact_revision {
            format!(
                "compact revision {} is ahead of the leader's {}",
                r.compact_revision, now.compact_revision
            )
        } else if r.compact_revision == hashed.compact_revision && r.hash != hashed.hash {
            format!(
                "hash {} != {} at revision {} (compact revision {})",
                r.hash, hashed.hash, hashed.revision, hashed.compact_revision
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
    // Everything the peers had applied when they answered is applied here after this.
    server.linearizable_barrier().await?;
    let store = server.store.clone();
    let revision = mine.revision;
    let (again, now) = tokio::task::spawn_blocking(move || {
        // Our own hash at the same revision again (unless compacted past it since),
        // and where the store is now.
        Ok::<_, anyhow::Error>((store.hash_kv(revision).ok(), store.hash_kv(0)?))
    })
    .await??;
    let mut bad = Vec::new();
    if let Some(again) = again.filter(|a| {
        a.hash != mine.hash
            && a.hash_revision == mine.hash_revision
            && a.compact_revision == mine.compact_revision
    }) {
        bad.push((
            server.member_id,
            format!(
                "own hash changed from {} to {} at revision {}",
                mine.hash, again.hash, mine.revision
            ),
        ));
    }
    bad.extend(judge(&mine, &now, &peers));
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
        let bad: Vec<u64> = judge(&mine, &mine, &peers)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(bad, vec![2, 3, 5]);
    }

    /// Writes between the question and the answers: a peer that applied revision 11
    /// before the leader took its hash at 10 is not ahead once the leader is at 12,
    /// and the peers' hashes at 10 are compared with the leader's at 10, not at 12.
    #[test]
    fn writes_during_the_check_are_not_corruption() {
        let hashed = HashKv {
            hash: 7,
            compact_revision: 3,
            hash_revision: 10,
            revision: 10,
        };
        let now = HashKv {
            hash: 9,
            compact_revision: 3,
            hash_revision: 12,
            revision: 12,
        };
        let peers = [
            answer(1, 11, 3, 7), // applied 11 first, its hash at 10 is ours
            answer(2, 12, 3, 8), // diverged at 10
            answer(3, 13, 3, 7), // ahead of where the leader is now
        ];
        let bad: Vec<u64> = judge(&hashed, &now, &peers)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(bad, vec![2, 3]);
    }
}
