//! Leases: grant, revoke, keep-alive, time-to-live and expiry, with etcd's rules.
//!
//! The lessor is state-machine state: every member holds the same leases because
//! grants and revokes are applied from the Raft log. Time is not: only the leader
//! (the *primary* lessor) tracks deadlines. A follower's leases never expire locally;
//! when the leader sees a deadline pass it proposes a revoke through Raft, so every
//! member deletes the lease's keys at the same revision. A new leader restarts every
//! deadline from its own clock, extended by one election timeout, so a lease is
//! never cut short by a leader change (etcd #9395 was a TTL reset; the extension
//! errs on the side of keeping leases).
//!
//! Guarantees: a lease lives at least its granted TTL after its last keep-alive on
//! the current leader; TTLs below the minimum are raised to it; TTLs above
//! [`MAX_LEASE_TTL`](skiff_api::validate::MAX_LEASE_TTL) are refused; keys are tracked in
//! both directions so revoking a lease yields exactly its keys, sorted. Time is passed
//! in by the caller, so tests are deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use skiff_api::validate::MAX_LEASE_TTL;
use skiff_api::EtcdError;

/// A lease ID; 0 means "no lease".
pub type LeaseId = i64;

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    /// Granted TTL in seconds (after raising to the minimum).
    pub ttl: i64,
    /// When it expires; `None` while this member is not the primary lessor.
    pub expiry: Option<Instant>,
    pub keys: BTreeSet<Bytes>,
}

impl Lease {
    /// Whole seconds left (etcd truncates), or the TTL if no deadline is tracked here.
    pub fn remaining_secs(&self, now: Instant) -> i64 {
        match self.expiry {
            Some(at) => at.saturating_duration_since(now).as_secs() as i64,
            None => self.ttl,
        }
    }
}

/// Leases by ID plus the key-to-lease index.
#[derive(Debug)]
pub struct Lessor {
    leases: BTreeMap<LeaseId, Lease>,
    key_lease: HashMap<Bytes, LeaseId>,
    min_ttl: i64,
    primary: bool,
}

impl Lessor {
    /// A lessor granting at least `min_ttl` seconds.
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            key_lease: HashMap::new(),
            min_ttl,
            primary: false,
        }
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Applies a grant. `now` sets the deadline when this member is primary.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<&Lease, EtcdError> {
        if id == 0 {
            // The server picks an ID before proposing; 0 here is a bug upstream,
            // reported the way etcd reports it.
            return Err(EtcdError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExist);
        }
        let ttl = ttl.max(self.min_ttl);
        let expiry = self.primary.then(|| now + secs(ttl));
        let lease = self.leases.entry(id).or_insert(Lease {
            id,
            ttl,
            expiry,
            keys: BTreeSet::new(),
        });
        Ok(lease)
    }

    /// Applies a revoke: removes the lease and returns its keys, sorted, for the
    /// caller to delete in one revision.
    pub fn revoke(&mut self, id: LeaseId) -> Result<Vec<Bytes>, EtcdError> {
        let lease = self.leases.remove(&id).ok_or(EtcdError::LeaseNotFound)?;
        for k in &lease.keys {
            self.key_lease.remove(k);
        }
        Ok(lease.keys.into_iter().collect())
    }

    /// A keep-alive on the primary: restarts the deadline; returns the TTL. An
    /// expired lease (its revoke not yet applied) is reported as not found, as etcd.
    pub fn renew(&mut self, id: LeaseId, now: Instant) -> Result<i64, EtcdError> {
        if !self.primary {
            return Err(EtcdError::NotLeader);
        }
        let lease = self.leases.get_mut(&id).ok_or(EtcdError::LeaseNotFound)?;
        if lease.expiry.is_some_and(|at| at <= now) {
            return Err(EtcdError::LeaseNotFound);
        }
        lease.expiry = Some(now + secs(lease.ttl));
        Ok(lease.ttl)
    }

    /// Attaches `key` to lease `id`, detaching it from any previous lease.
    pub fn attach(&mut self, id: LeaseId, key: Bytes) -> Result<(), EtcdError> {
        if !self.leases.contains_key(&id) {
            return Err(EtcdError::LeaseNotFound);
        }
        self.detach(&key);
        self.key_lease.insert(key.clone(), id);
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key);
        }
        Ok(())
    }

    /// Detaches `key` from its lease (a delete, or a put without that lease).
    pub fn detach(&mut self, key: &Bytes) {
        if let Some(old) = self.key_lease.remove(key) {
            if let Some(lease) = self.leases.get_mut(&old) {
                lease.keys.remove(key);
            }
        }
    }

    /// etcd's keep-alive answer: the renewed TTL, or 0 when the lease does not exist.
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64, EtcdError> {
        match self.renew(id, now) {
            Err(EtcdError::LeaseNotFound) => Ok(0),
            other => other,
        }
    }

    /// etcd's time-to-live answer: (remaining seconds or -1 when the lease does not
    /// exist, granted TTL, attached keys when `keys`).
    pub fn time_to_live(&self, id: LeaseId, keys: bool, now: Instant) -> (i64, i64, Vec<Bytes>) {
        match self.leases.get(&id) {
            Some(l) => (
                l.remaining_secs(now),
                l.ttl,
                if keys {
                    l.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            ),
            None => (-1, 0, Vec::new()),
        }
    }

    pub fn lookup(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<LeaseId> {
        self.key_lease.get(key).copied()
    }

    /// Every lease ID, ascending.
    pub fn ids(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// Leases whose deadline has passed (primary only), ascending by ID.
    pub fn expired(&self, now: Instant) -> Vec<LeaseId> {
        if !self.primary {
            return Vec::new();
        }
        self.leases
            .values()
            .filter(|l| l.expiry.is_some_and(|at| at <= now))
            .map(|l| l.id)
            .collect()
    }

    /// The earliest deadline, to know when to look again.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().filter_map(|l| l.expiry).min()
    }

    /// This member became leader: every deadline restarts at `now + ttl + extend`.
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        for lease in self.leases.values_mut() {
            lease.expiry = Some(now + secs(lease.ttl) + extend);
        }
    }

    /// This member lost leadership: deadlines are the new leader's business.
    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.expiry = None;
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn grant_raises_to_minimum_and_refuses_duplicates_and_huge_ttls() {
        let now = Instant::now();
        let mut l = Lessor::new(2);
        assert_eq!(l.grant(1, 1, now).unwrap().ttl, 2);
        assert_eq!(l.grant(2, 60, now).unwrap().ttl, 60);
        assert_eq!(l.grant(1, 5, now).unwrap_err(), EtcdError::LeaseExist);
        assert_eq!(
            l.grant(3, MAX_LEASE_TTL + 1, now).unwrap_err(),
            EtcdError::LeaseTtlTooLarge
        );
        assert_eq!(l.ids(), vec![1, 2]);
    }

    #[test]
    fn only_the_primary_tracks_deadlines() {
        let t0 = Instant::now();
        let mut l = Lessor::new(2);
        l.grant(1, 10, t0).unwrap();
        assert_eq!(l.lookup(1).unwrap().expiry, None);
        assert!(l.expired(t0 + secs(100)).is_empty());
        assert_eq!(l.renew(1, t0).unwrap_err(), EtcdError::NotLeader);

        l.promote(t0, Duration::from_secs(1));
        assert_eq!(l.lookup(1).unwrap().expiry, Some(t0 + secs(11)));
        assert!(l.expired(t0 + secs(10)).is_empty());
        assert_eq!(l.expired(t0 + secs(11)), vec![1]);

        l.demote();
        assert!(l.expired(t0 + secs(100)).is_empty());
    }

    #[test]
    fn keep_alive_restarts_the_deadline() {
        let t0 = Instant::now();
        let mut l = Lessor::new(2);
        l.promote(t0, Duration::ZERO);
        l.grant(5, 10, t0).unwrap();
        assert_eq!(l.lookup(5).unwrap().remaining_secs(t0 + secs(3)), 7);
        assert_eq!(l.renew(5, t0 + secs(8)).unwrap(), 10);
        assert!(l.expired(t0 + secs(17)).is_empty());
        assert_eq!(l.expired(t0 + secs(18)), vec![5]);
        // Past its deadline a lease cannot be renewed: its revoke is on the way.
        assert_eq!(
            l.renew(5, t0 + secs(18)).unwrap_err(),
            EtcdError::LeaseNotFound
        );
        assert_eq!(l.renew(6, t0).unwrap_err(), EtcdError::LeaseNotFound);
        assert_eq!(l.next_expiry(), Some(t0 + secs(18)));
    }

    #[test]
    fn keys_follow_attach_detach_and_revoke() {
        let now = Instant::now();
        let mut l = Lessor::new(2);
        l.grant(1, 10, now).unwrap();
        l.grant(2, 10, now).unwrap();
        l.attach(1, b("b")).unwrap();
        l.attach(1, b("a")).unwrap();
        l.attach(1, b("c")).unwrap();
        // Re-attaching moves the key.
        l.attach(2, b("c")).unwrap();
        assert_eq!(l.lease_of(b"c"), Some(2));
        l.detach(&b("b"));
        assert_eq!(l.lease_of(b"b"), None);
        assert_eq!(l.attach(9, b("x")).unwrap_err(), EtcdError::LeaseNotFound);
        assert_eq!(l.revoke(1).unwrap(), vec![b("a")]);
        assert_eq!(l.lease_of(b"a"), None);
        assert_eq!(l.revoke(1).unwrap_err(), EtcdError::LeaseNotFound);
        assert_eq!(l.revoke(2).unwrap(), vec![b("c")]);
    }
}
