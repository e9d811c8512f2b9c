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
//! A new leader restarts every deadline at now + TTL + one election timeout, so a
//! lease is never cut short by a leader change (etcd #9395 is the opposite failure, a
//! full TTL given back on every election; checkpoints that keep the remaining TTL
//! are issue 15).

pub mod clock;
pub mod table;

pub use clock::{ClockHandle, LeaseClock};
pub use table::LeaseTable;

/// A lease ID; 0 means "no lease".
pub type LeaseId = i64;

/// The key a lease is stored under in the backend's lease table.
pub fn lease_key(id: LeaseId) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}
