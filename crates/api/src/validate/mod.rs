//! Checks a client request must pass before it is proposed or served, in the order
//! etcd 3.4 makes them, so the same bad request gets the same error from Skiff as from
//! etcd (and a request that etcd accepts is never refused here). Skiff's one
//! implementation of them: the server runs them on the wire types before proposing
//! (with `--max-txn-ops`), the store runs them again at apply time on its own request
//! types (with no op limit), so a bad log entry fails cleanly.
//!
//! The rules are written once over views: [`RangeView`], [`PutView`], [`DeleteView`]
//! (the few fields a check reads) and the [`TxnView`] trait (a txn's compares and
//! branches, and what each op is). [`proto`] implements them for `etcdserverpb`; a
//! request type family elsewhere implements them the same way.
//!
//! Guarantees: the checks are pure and bounded: a transaction's nested requests are
//! visited once per level and each put/delete pair is compared at most once per
//! level, so a maximal request (`--max-txn-ops` ops, nesting within that budget)
//! costs microseconds, not a quadratic blow-up over the whole request.

pub mod proto;

use std::collections::HashSet;

use crate::errors::EtcdError;

/// The largest lease TTL etcd grants, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// What the checks read of a Range request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeView<'a> {
    pub key: &'a [u8],
    /// Whether the sort order and sort target are values etcd knows.
    pub sort_known: bool,
}

/// What the checks read of a Put request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutView<'a> {
    pub key: &'a [u8],
    pub value_is_empty: bool,
    pub ignore_value: bool,
    pub lease: i64,
    pub ignore_lease: bool,
}

/// What the checks read of a DeleteRange request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteView<'a> {
    pub key: &'a [u8],
    /// Empty: the single key `key`.
    pub range_end: &'a [u8],
}

/// What one op of a txn branch is.
#[derive(Debug, Clone, Copy)]
pub enum OpView<'a, T> {
    Range(RangeView<'a>),
    Put(PutView<'a>),
    Delete(DeleteView<'a>),
    Txn(&'a T),
    /// An op carrying no request (possible on the wire only).
    Empty,
}

/// A Txn request as the checks see it.
pub trait TxnView: Sized {
    /// One op of a branch.
    type Op;
    /// The keys of the compares, one per compare.
    fn compare_keys(&self) -> impl ExactSizeIterator<Item = &[u8]>;
    fn success(&self) -> &[Self::Op];
    fn failure(&self) -> &[Self::Op];
    /// What `op` is.
    fn op(op: &Self::Op) -> OpView<'_, Self>;
}

/// A Range request: a key, and a sort order and target etcd knows.
pub fn check_range<'a>(r: impl Into<RangeView<'a>>) -> Result<(), EtcdError> {
    let r = r.into();
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if !r.sort_known {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// A Put request: a key; no value with `ignore_value`, no lease with `ignore_lease`.
pub fn check_put<'a>(r: impl Into<PutView<'a>>) -> Result<(), EtcdError> {
    let r = r.into();
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value_is_empty {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// A DeleteRange request: a key.
pub fn check_delete<'a>(r: impl Into<DeleteView<'a>>) -> Result<(), EtcdError> {
    if r.into().key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// A whole Txn request: the op budget, every op's own checks, then no key written
/// twice (a put and a put, or a put inside a deleted range) on any path through it.
/// `max_txn_ops` is `--max-txn-ops`; `usize::MAX` means no limit.
pub fn check_txn<T: TxnView>(r: &T, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_txn_ops)?;
    // After the per-op checks, as etcd does, so a malformed op is reported first.
    check_writes::<T>(r.success())?;
    check_writes::<T>(r.failure())?;
    Ok(())
}

/// The op budget and per-op checks; a nested txn gets what its parent left over
/// (etcd 3.4's `checkTxnRequest(.., maxTxnOps - opc)`).
fn check_txn_ops<T: TxnView>(r: &T, max_txn_ops: usize) -> Result<(), EtcdError> {
    let compares = r.compare_keys();
    let ops = compares.len().max(r.success().len()).max(r.failure().len());
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    for key in compares {
        if key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
    }
    for op in r.success().iter().chain(r.failure()) {
        match T::op(op) {
            OpView::Range(q) => check_range(q)?,
            OpView::Put(q) => check_put(q)?,
            OpView::Delete(q) => check_delete(q)?,
            OpView::Txn(t) => check_txn_ops(t, max_txn_ops - ops)?,
            // An op with no request in it: etcd answers "key not found".
            OpView::Empty => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

/// A range a txn deletes: the single key `begin` (no `range_end`), or `[begin, end)`.
#[derive(Debug, Clone, Copy)]
struct Deleted<'a> {
    begin: &'a [u8],
    /// `None`: the single key `begin`.
    end: Option<&'a [u8]>,
}

impl Deleted<'_> {
    fn covers(&self, key: &[u8]) -> bool {
        match self.end {
            None => key == self.begin,
            // Byte order, as etcd compares keys. Note that a from-key delete (end
            // "\0") covers nothing here, exactly as in etcd, whose interval tree sees
            // [key, "\0") as empty (a txn may then put a key it deletes; it writes
            // both, in op order, in one revision).
            Some(end) => self.begin <= key && key < end,
        }
    }
}

/// Puts and deletes of one level of a txn and everything nested under it.
#[derive(Debug, Default)]
struct Writes<'a> {
    puts: HashSet<&'a [u8]>,
    dels: Vec<Deleted<'a>>,
}

impl Writes<'_> {
    fn deleted(&self, key: &[u8]) -> bool {
        self.dels.iter().any(|d| d.covers(key))
    }
}

/// etcd's overlap rule (`checkIntervals`) for one list of ops (one branch): deletes
/// of this level are gathered first; then the puts of nested txns (either branch may
/// run, but not both, so a key put in both branches of one nested txn is fine); then
/// this level's puts.
fn check_writes<'a, T: TxnView + 'a>(ops: &'a [T::Op]) -> Result<Writes<'a>, EtcdError> {
    let mut w = Writes::default();
    for op in ops {
        if let OpView::Delete(d) = T::op(op) {
            w.dels.push(Deleted {
                begin: d.key,
                end: (!d.range_end.is_empty()).then_some(d.range_end),
            });
        }
    }
    for op in ops {
        let OpView::Txn(t) = T::op(op) else {
            continue;
        };
        let then = check_writes::<T>(t.success())?;
        let other = check_writes::<T>(t.failure())?;
        for k in &then.puts {
            if w.puts.contains(k) || w.deleted(k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        w.puts.extend(&then.puts);
        for k in &other.puts {
            if (w.puts.contains(k) && !then.puts.contains(k)) || w.deleted(k) {
                return Err(EtcdError::DuplicateKey);
            }
            w.puts.insert(k);
        }
        w.dels.extend(then.dels);
        w.dels.extend(other.dels);
    }
    for op in ops {
        let OpView::Put(p) = T::op(op) else {
            continue;
        };
        if w.puts.contains(p.key) || w.deleted(p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        w.puts.insert(p.key);
    }
    Ok(w)
}

/// A LeaseGrant TTL etcd would grant.
pub fn check_lease_ttl(ttl: i64) -> Result<(), EtcdError> {
    if ttl > MAX_LEASE_TTL {
        return Err(EtcdError::LeaseTtlTooLarge);
    }
    Ok(())
}

/// The encoded proposal must fit `--max-request-bytes`.
pub fn check_request_size(encoded_len: usize, max_request_bytes: u32) -> Result<(), EtcdError> {
    if encoded_len > max_request_bytes as usize {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_and_request_size() {
        assert_eq!(check_lease_ttl(MAX_LEASE_TTL), Ok(()));
        assert_eq!(
            check_lease_ttl(MAX_LEASE_TTL + 1),
            Err(EtcdError::LeaseTtlTooLarge)
        );
        assert_eq!(check_request_size(1_572_864, 1_572_864), Ok(()));
        assert_eq!(
            check_request_size(1_572_865, 1_572_864),
            Err(EtcdError::RequestTooLarge)
        );
    }
}
