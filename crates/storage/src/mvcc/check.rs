//! Request validation with etcd's rules and messages: what etcd's gRPC layer rejects before
//! proposing (empty key, `ignore_value` with a value, too many txn ops, a txn writing the
//! same key twice). The server calls these before proposing; `KvStore::apply` calls them
//! again (without the configurable op limit) so a bad entry in the log fails cleanly
//! instead of corrupting state.

use std::collections::HashSet;

use super::error::{Error, Result};
use super::types::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

pub fn check_range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` + `checkIntervals`: each of compare/success/failure holds at
/// most `max_ops` entries (recursively), every op is valid, and within one branch no key is
/// put twice or both put and deleted; nested txns count with their parent, except that a
/// key put in both the success and failure branch of one nested txn is fine (only one runs).
pub fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_ops(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_ops: usize) -> Result<()> {
    if r.compare.len() > max_ops || r.success.len() > max_ops || r.failure.len() > max_ops {
        return Err(Error::TooManyOps);
    }
    for op in r.success.iter().chain(&r.failure) {
        match op {
            RequestOp::Range(q) => check_range(q)?,
            RequestOp::Put(q) => check_put(q)?,
            RequestOp::DeleteRange(q) => check_delete(q)?,
            RequestOp::Txn(t) => check_txn_ops(t, max_ops)?,
        }
    }
    Ok(())
}

/// Half-open key intervals deleted by a branch; `end == None` is a single key.
#[derive(Default)]
struct Dels(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Dels {
    fn add(&mut self, key: &[u8], end: &[u8]) {
        self.0
            .push((key.to_vec(), (!end.is_empty()).then(|| end.to_vec())));
    }

    /// Whether `k` falls in a deleted interval, compared as byte strings exactly as etcd's
    /// interval tree does. So a from-key delete (`range_end == "\0"`) covers nothing:
    /// etcd sees `[key, "\0")` as empty and lets a put of a key it deletes through (the
    /// txn then writes both, in op order, in one revision). Matching etcd here keeps the
    /// apply-time check in step with the server's gRPC-time one.
    fn contains(&self, k: &[u8]) -> bool {
        self.0.iter().any(|(s, e)| match e {
            None => s.as_slice() == k,
            Some(e) => s.as_slice() <= k && k < e.as_slice(),
        })
    }
}

fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Dels)> {
    let mut dels = Dels::default();
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            dels.add(&d.key, &d.range_end);
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(Error::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in puts_else {
            if puts.contains(&k) && !puts_then.contains(&k) {
                return Err(Error::DuplicateKey);
            }
            if dels.contains(&k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.0.extend(dels_then.0);
        dels.0.extend(dels_else.0);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || dels.contains(&p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: k.into(),
            ..Default::default()
        })
    }
    fn del(k: &str, e: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: e.into(),
            prev_kv: false,
        })
    }
    fn txn(s: Vec<RequestOp>, f: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success: s,
            failure: f,
        }
    }

    #[test]
    fn duplicate_key_rules() {
        let dup = |t: TxnRequest| matches!(check_txn(&t, 128), Err(Error::DuplicateKey));
        assert!(dup(txn(vec![put("a"), put("a")], vec![])));
        assert!(dup(txn(vec![put("b"), del("a", "c")], vec![])));
        // etcd quirk: a from-key delete does not count as covering anything.
        assert!(!dup(txn(vec![put("z"), del("a", "\0")], vec![])));
        // Deletes may overlap; success and failure are independent.
        assert!(!dup(txn(vec![del("a", "c"), del("b", "d")], vec![])));
        assert!(!dup(txn(vec![put("a")], vec![put("a")])));
        // Nested: then/else of one nested txn may share a key ...
        let nested = RequestOp::Txn(txn(vec![put("a")], vec![put("a")]));
        assert!(!dup(txn(vec![nested.clone()], vec![])));
        // ... but not with a sibling put or delete at the outer level.
        assert!(dup(txn(vec![nested.clone(), put("a")], vec![])));
        assert!(dup(txn(vec![nested, del("a", "")], vec![])));
        let n1 = RequestOp::Txn(txn(vec![put("k")], vec![]));
        let n2 = RequestOp::Txn(txn(vec![], vec![put("k")]));
        assert!(dup(txn(vec![n1, n2], vec![])));
    }

    #[test]
    fn op_validation() {
        let mut t = txn(vec![put("")], vec![]);
        assert!(matches!(check_txn(&t, 128), Err(Error::EmptyKey)));
        t.success = (0..3).map(|i| put(&i.to_string())).collect();
        assert!(matches!(check_txn(&t, 2), Err(Error::TooManyOps)));
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert!(matches!(check_put(&p), Err(Error::ValueProvided)));
        let p = PutRequest {
            key: b"k".to_vec(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert!(matches!(check_put(&p), Err(Error::LeaseProvided)));
        assert_eq!(
            Error::DuplicateKey.to_string(),
            "etcdserver: duplicate key given in txn request"
        );
    }
}
