//! The store's request types ([`super::types`]) as `skiff_api::validate`'s views, so
//! the store runs the very checks the server ran before proposing: `KvStore::range`
//! on every read, and the apply path on every write (with no op limit), so a bad
//! entry in the log fails cleanly instead of corrupting state. The sort options
//! are typed enums here, hence always known.

use skiff_api::validate::{DeleteView, OpView, PutView, RangeView, TxnView};

use super::types::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

impl<'a> From<&'a RangeRequest> for RangeView<'a> {
    fn from(r: &'a RangeRequest) -> Self {
        RangeView {
            key: &r.key,
            sort_known: true,
        }
    }
}

impl<'a> From<&'a PutRequest> for PutView<'a> {
    fn from(r: &'a PutRequest) -> Self {
        PutView {
            key: &r.key,
            value_is_empty: r.value.is_empty(),
            ignore_value: r.ignore_value,
            lease: r.lease,
            ignore_lease: r.ignore_lease,
        }
    }
}

impl<'a> From<&'a DeleteRangeRequest> for DeleteView<'a> {
    fn from(r: &'a DeleteRangeRequest) -> Self {
        DeleteView {
            key: &r.key,
            range_end: &r.range_end,
        }
    }
}

impl TxnView for TxnRequest {
    type Op = RequestOp;

    fn compare_keys(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.compare.iter().map(|c| c.key.as_slice())
    }

    fn success(&self) -> &[RequestOp] {
        &self.success
    }

    fn failure(&self) -> &[RequestOp] {
        &self.failure
    }

    fn op(op: &RequestOp) -> OpView<'_, TxnRequest> {
        match op {
            RequestOp::Range(r) => OpView::Range(r.into()),
            RequestOp::Put(r) => OpView::Put(r.into()),
            RequestOp::DeleteRange(r) => OpView::Delete(r.into()),
            RequestOp::Txn(t) => OpView::Txn(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::validate::{check_put, check_txn};
    use skiff_api::EtcdError as Error;

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
        // The apply-time check has no op limit.
        t.success = (0..1000).map(|i| put(&i.to_string())).collect();
        assert!(check_txn(&t, usize::MAX).is_ok());
    }
}
