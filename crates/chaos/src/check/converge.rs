//! Convergence: after the run, with every fault healed, every member's HashKV taken at the
//! same revision must be equal (the members hold the same MVCC history).

use crate::history::History;

use super::Anomaly;

/// `members` is how many members the cluster has; each must have reported a hash.
pub fn check(history: &History, members: usize, out: &mut Vec<Anomaly>) {
    let hashes = &history.hashes;
    if hashes.len() != members {
        out.push(Anomaly::new(
            "convergence",
            format!("{} of {members} members reported a HashKV", hashes.len()),
            vec![],
        ));
    }
    let Some(first) = hashes.first() else { return };
    for h in &hashes[1..] {
        if h.rev != first.rev {
            out.push(Anomaly::new(
                "convergence",
                format!(
                    "member {} hashed at revision {}, member {} at {}",
                    first.member, first.rev, h.member, h.rev
                ),
                vec![],
            ));
        } else if h.hash != first.hash {
            out.push(Anomaly::new(
                "convergence",
                format!(
                    "HashKV at revision {} differs: member {} has {:#x}, member {} has {:#x}",
                    h.rev, first.member, first.hash, h.member, h.hash
                ),
                vec![],
            ));
        }
    }
}
