//! Leases, split by who owns what, so no lock is shared between the apply thread and
//! the requests that renew leases:
//!
//! - [`table::LeaseTable`] is state-machine state: every lease's ID, granted TTL and
//!   attached keys. Every member holds the same table because grants, revokes and
//!   puts are applied from the Raft log. It is owned by the apply thread alone (no
//!   lock); it is what the MVCC store asks whether a lease exists, and what a revoke
//!   deletes the keys of.
//! - [`clock::LeaseClock`] is time: the deadlines, tracked by the leader only (the
//!   *primary*), in one task that owns them. Keep-alive, time-to-live and the lease
//!   list are answered there at once, even while the apply thread waits for a backend
//!   commit. The apply thread tells it about grants and revokes after they apply; the
//!   node loop tells it when this member gains or loses leadership. When a deadline
//!   passes the clock hands the lease to the member, which proposes its revoke through
//!   Raft, so every member deletes the keys at the same revision.
//!
//! Lease checkpoints (on by default; etcd 3.4 has them off): the leader answers a
//! keep-alive only once a `LeaseCheckpoint` entry carrying the renewal is committed
//! (renewals arriving together share one entry, and entries are spaced at least 10 ms
//! apart unless a batch is full: [`checkpoint`]), and every member notes, in its own
//! clock, the deadline each grant and checkpoint implies. A new leader resumes each
//! lease at that deadline plus one election timeout, instead of giving it its full TTL
//! again (etcd #9395: a lock holder that died kept its lock for TTL more seconds per
//! election). Bound: a lease ends no earlier than TTL after its last acknowledged
//! keep-alive, and no later than that plus one election timeout per leader change
//! (plus the replication delay of the checkpoint). Without checkpoints a new leader
//! restarts every deadline at now + TTL + one election timeout, as etcd 3.4 does.

pub mod checkpoint;
pub mod clock;
pub mod table;

pub use clock::{ClockHandle, LeaseClock, Renewal};
pub use table::LeaseTable;

/// A lease ID; 0 means "no lease".
pub type LeaseId = i64;

/// The key a lease is stored under in the backend's lease table.
pub fn lease_key(id: LeaseId) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}
