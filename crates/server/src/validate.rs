//! Checks a client request must pass before it is proposed or served, in the order
//! etcd makes them, so the same bad request gets the same error from Skiff as from
//! etcd (and a request that etcd accepts is never refused here).
//!
//! Guarantees: the checks are pure and bounded: a transaction's nested requests are
//! visited once per level and each put/delete pair is compared at most once per
//! level, so a maximal request (`--max-txn-ops` ops, nesting within that budget)
//! costs microseconds, not a quadratic blow-up over the whole request.

use bytes::Bytes;
use skiff_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::errors::EtcdError;

/// The largest lease TTL etcd grants, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A Range request: a key, and a sort order and target etcd knows.
pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// A Put request: a key; no value with `ignore_value`, no lease with `ignore_lease`.
pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// A DeleteRange request: a key.
pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// A whole Txn request: the op budget, every op's own checks, then no key written
/// twice (a put and a put, or a put inside a deleted range) on any path through it.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_txn_ops)?;
    // After the per-op checks, as etcd does, so a malformed op is reported first.
    check_writes(&r.success)?;
    check_writes(&r.failure)?;
    Ok(())
}

/// The op budget and per-op checks; a nested txn gets what its parent left over.
fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, budget: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn_ops(r, budget),
        // An op with no request in it: etcd answers "key not found".
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A range a txn deletes: the single key `begin` (no `range_end`), or `[begin, end)`.
#[derive(Debug, Clone)]
struct Deleted {
    begin: Bytes,
    /// `None`: the single key `begin`.
    end: Option<Bytes>,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.begin.as_ref(),
            // Byte order, as etcd compares keys. Note that a from-key delete (end
            // "\0") covers nothing here, exactly as in etcd, whose interval tree sees
            // [key, "\0") as empty.
            Some(end) => self.begin.as_ref() <= key && key < end.as_ref(),
        }
    }
}

/// Puts and deletes of one level of a txn and everything nested under it.
#[derive(Debug, Default)]
struct Writes {
    puts: std::collections::HashSet<Bytes>,
    dels: Vec<Deleted>,
}

impl Writes {
    fn deleted(&self, key: &[u8]) -> bool {
        self.dels.iter().any(|d| d.covers(key))
    }
}

/// etcd's overlap rule for one list of ops (one branch): deletes of this level are
/// gathered first; then the puts of nested txns (either branch may run, but not both,
/// so a key put in both branches of one nested txn is fine); then this level's puts.
fn check_writes(ops: &[RequestOp]) -> Result<Writes, EtcdError> {
    let mut w = Writes::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            w.dels.push(Deleted {
                begin: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            });
        }
    }
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = check_writes(&t.success)?;
        let other = check_writes(&t.failure)?;
        for k in &then.puts {
            if w.puts.contains(k) || w.deleted(k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        for k in &then.puts {
            w.puts.insert(k.clone());
        }
        for k in &other.puts {
            if (w.puts.contains(k) && !then.puts.contains(k)) || w.deleted(k) {
                return Err(EtcdError::DuplicateKey);
            }
            w.puts.insert(k.clone());
        }
        w.dels.extend(then.dels);
        w.dels.extend(other.dels);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if w.puts.contains(&p.key) || w.deleted(&p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        w.puts.insert(p.key.clone());
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
    use skiff_proto::etcdserverpb::Compare;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }
    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b(k),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: b(k),
                range_end: b(end),
                prev_kv: false,
            })),
        }
    }
    fn get(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b(k),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(t)),
        }
    }

    #[test]
    fn single_requests() {
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(EtcdError::EmptyKey)
        );
        let bad_sort = RangeRequest {
            key: b("a"),
            sort_order: 7,
            ..Default::default()
        };
        assert_eq!(check_range(&bad_sort), Err(EtcdError::InvalidSortOption));
        assert_eq!(check_put(&PutRequest::default()), Err(EtcdError::EmptyKey));
        let p = PutRequest {
            key: b("a"),
            value: b("v"),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
        let p = PutRequest {
            key: b("a"),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::LeaseProvided));
        assert_eq!(
            check_delete(&DeleteRangeRequest::default()),
            Err(EtcdError::EmptyKey)
        );
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

    #[test]
    fn txn_op_budget() {
        let ops: Vec<RequestOp> = (0..128).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check_txn(&txn(ops.clone(), vec![]), 128), Ok(()));
        let mut more = ops;
        more.push(put("extra"));
        assert_eq!(
            check_txn(&txn(more, vec![]), 128),
            Err(EtcdError::TooManyOps)
        );
        // A nested txn gets the parent's leftover budget.
        let inner = txn((0..3).map(|i| put(&format!("n{i}"))).collect(), vec![]);
        let outer = txn(vec![put("a"), nested(inner.clone())], vec![]);
        assert_eq!(check_txn(&outer, 5), Ok(()));
        assert_eq!(check_txn(&outer, 4), Err(EtcdError::TooManyOps));
        // Compares count too.
        let mut t = txn(vec![], vec![]);
        t.compare = vec![
            Compare {
                key: b("a"),
                ..Default::default()
            };
            3
        ];
        assert_eq!(check_txn(&t, 2), Err(EtcdError::TooManyOps));
        t.compare[1].key = Bytes::new();
        assert_eq!(check_txn(&t, 3), Err(EtcdError::EmptyKey));
    }

    #[test]
    fn txn_empty_op_and_empty_keys() {
        let empty = RequestOp { request: None };
        assert_eq!(
            check_txn(&txn(vec![empty], vec![]), 128),
            Err(EtcdError::KeyNotFound)
        );
        assert_eq!(
            check_txn(&txn(vec![], vec![put("")]), 128),
            Err(EtcdError::EmptyKey)
        );
        assert_eq!(
            check_txn(&txn(vec![get("")], vec![]), 128),
            Err(EtcdError::EmptyKey)
        );
    }

    #[test]
    fn txn_duplicate_keys() {
        let dup = |s: Vec<RequestOp>| check_txn(&txn(s, vec![]), 128);
        assert_eq!(dup(vec![put("a"), put("a")]), Err(EtcdError::DuplicateKey));
        assert_eq!(dup(vec![put("a"), put("b")]), Ok(()));
        // A put and a delete of the same key, or inside a deleted range.
        assert_eq!(
            dup(vec![put("a"), del("a", "")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            dup(vec![del("a", "c"), put("b")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(dup(vec![del("a", "c"), put("c")]), Ok(()));
        // Deletes may overlap each other; reads never conflict.
        assert_eq!(dup(vec![del("a", "c"), del("b", "d"), get("b")]), Ok(()));
        // The same key in success and failure: only one branch runs.
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128), Ok(()));
        // etcd sees a from-key delete ("\0" end) as an empty interval.
        assert_eq!(dup(vec![del("a", "\0"), put("b")]), Ok(()));
    }

    #[test]
    fn nested_txn_duplicates() {
        // Both branches of a nested txn may put the same key...
        let inner = txn(vec![put("x")], vec![put("x")]);
        assert_eq!(check_txn(&txn(vec![nested(inner)], vec![]), 128), Ok(()));
        // ...but not a key the outer level also puts or deletes.
        let inner = txn(vec![put("x")], vec![]);
        let outer = txn(vec![nested(inner.clone()), put("x")], vec![]);
        assert_eq!(check_txn(&outer, 128), Err(EtcdError::DuplicateKey));
        let outer = txn(vec![nested(inner.clone()), del("w", "y")], vec![]);
        assert_eq!(check_txn(&outer, 128), Err(EtcdError::DuplicateKey));
        // Two nested txns putting the same key conflict.
        let outer = txn(vec![nested(inner.clone()), nested(inner)], vec![]);
        assert_eq!(check_txn(&outer, 128), Err(EtcdError::DuplicateKey));
        // A nested delete covers an outer put.
        let inner = txn(vec![del("a", "z")], vec![]);
        let outer = txn(vec![nested(inner), put("m")], vec![]);
        assert_eq!(check_txn(&outer, 128), Err(EtcdError::DuplicateKey));
    }
}
