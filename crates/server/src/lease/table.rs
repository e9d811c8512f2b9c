//! The lease table: which leases exist, their granted TTLs and the keys attached to
//! them. State-machine state, owned by the apply thread (no lock): grants, revokes
//! and the attach/detach of keys are applied from the Raft log, so every member
//! holds the same table.
//!
//! Guarantees: TTLs below the minimum are raised to it; TTLs above
//! [`MAX_LEASE_TTL`] are refused; keys are tracked in both directions so revoking a
//! lease yields exactly its keys, sorted, for one delete revision; the table is
//! rebuilt from the backend (leases, then every key's lease) on start-up and after a
//! snapshot is installed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use skiff_api::validate::MAX_LEASE_TTL;
use skiff_api::EtcdError;
use skiff_storage::backend::Table;
use skiff_storage::mvcc::{self as st, KvStore, LeaseCheck};

use super::LeaseId;

/// One lease as the state machine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Granted TTL in seconds (after raising to the minimum).
    ttl: i64,
    keys: BTreeSet<Bytes>,
}

/// Why the table could not be rebuilt from the backend.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("corrupt lease record in the backend (key {0:?})")]
    Corrupt(Vec<u8>),
    #[error("restoring lease {id:x}: {source}")]
    Grant { id: LeaseId, source: EtcdError },
    #[error(transparent)]
    Store(#[from] st::Error),
    #[error(transparent)]
    Backend(#[from] skiff_storage::backend::BackendError),
}

/// Leases by ID plus the key-to-lease index.
#[derive(Debug)]
pub struct LeaseTable {
    leases: BTreeMap<LeaseId, Entry>,
    key_lease: HashMap<Bytes, LeaseId>,
    min_ttl: i64,
}

impl LeaseTable {
    /// An empty table granting at least `min_ttl` seconds.
    pub fn new(min_ttl: i64) -> LeaseTable {
        LeaseTable {
            leases: BTreeMap::new(),
            key_lease: HashMap::new(),
            min_ttl,
        }
    }

    /// Rebuilds the table from the backend: every lease, then every key's attachment.
    pub fn restore(store: &KvStore, min_ttl: i64) -> Result<LeaseTable, RestoreError> {
        let mut table = LeaseTable::new(min_ttl);
        for (key, value) in store.backend().scan(Table::Lease)? {
            let (Ok(id), Ok(ttl)) = (
                <[u8; 8]>::try_from(&key[..]),
                <[u8; 8]>::try_from(&value[..]),
            ) else {
                return Err(RestoreError::Corrupt(key));
            };
            let (id, ttl) = (i64::from_be_bytes(id), i64::from_be_bytes(ttl));
            table
                .grant(id, ttl)
                .map_err(|source| RestoreError::Grant { id, source })?;
        }
        if table.leases.is_empty() {
            return Ok(table);
        }
        let all = st::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        for kv in store.range(&all)?.kvs {
            if kv.lease != 0 && table.attach(kv.lease, Bytes::from(kv.key)).is_err() {
                tracing::warn!(
                    lease = kv.lease,
                    "a key names a lease that no longer exists"
                );
            }
        }
        Ok(table)
    }

    /// Applies a grant; returns the TTL granted.
    pub fn grant(&mut self, id: LeaseId, ttl: i64) -> Result<i64, EtcdError> {
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
        self.leases.insert(
            id,
            Entry {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(ttl)
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

    /// Keeps the attachments in step with what an apply did to the store.
    pub fn track(&mut self, events: &[st::Event]) {
        for ev in events {
            let key = Bytes::copy_from_slice(&ev.kv.key);
            match ev.kind {
                st::EventType::Put if ev.kv.lease != 0 => {
                    // The store checked the lease exists before the put.
                    let _ = self.attach(ev.kv.lease, key);
                }
                _ => self.detach(&key),
            }
        }
    }

    pub fn exists(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// The keys attached to lease `id`, sorted (empty if it does not exist).
    pub fn keys(&self, id: LeaseId) -> Vec<Bytes> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<LeaseId> {
        self.key_lease.get(key).copied()
    }

    /// Every lease with its granted TTL, ascending by ID.
    pub fn granted(&self) -> Vec<(LeaseId, i64)> {
        self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect()
    }
}

impl LeaseCheck for LeaseTable {
    fn lease_exists(&self, id: i64) -> bool {
        self.exists(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn grant_raises_to_minimum_and_refuses_duplicates_and_huge_ttls() {
        let mut l = LeaseTable::new(2);
        assert_eq!(l.grant(1, 1).unwrap(), 2);
        assert_eq!(l.grant(2, 60).unwrap(), 60);
        assert_eq!(l.grant(1, 5).unwrap_err(), EtcdError::LeaseExist);
        assert_eq!(
            l.grant(3, MAX_LEASE_TTL + 1).unwrap_err(),
            EtcdError::LeaseTtlTooLarge
        );
        assert_eq!(l.grant(0, 5).unwrap_err(), EtcdError::LeaseNotFound);
        assert_eq!(l.granted(), vec![(1, 2), (2, 60)]);
    }

    #[test]
    fn keys_follow_attach_detach_and_revoke() {
        let mut l = LeaseTable::new(2);
        l.grant(1, 10).unwrap();
        l.grant(2, 10).unwrap();
        l.attach(1, b("b")).unwrap();
        l.attach(1, b("a")).unwrap();
        l.attach(1, b("c")).unwrap();
        // Re-attaching moves the key.
        l.attach(2, b("c")).unwrap();
        assert_eq!(l.lease_of(b"c"), Some(2));
        l.detach(&b("b"));
        assert_eq!(l.lease_of(b"b"), None);
        assert_eq!(l.keys(1), vec![b("a")]);
        assert_eq!(l.attach(9, b("x")).unwrap_err(), EtcdError::LeaseNotFound);
        assert_eq!(l.revoke(1).unwrap(), vec![b("a")]);
        assert_eq!(l.lease_of(b"a"), None);
        assert_eq!(l.revoke(1).unwrap_err(), EtcdError::LeaseNotFound);
        assert_eq!(l.revoke(2).unwrap(), vec![b("c")]);
        assert!(!l.exists(2));
    }
}
