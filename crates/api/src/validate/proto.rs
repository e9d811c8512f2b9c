//! The wire types (`etcdserverpb`) as [`super`]'s views, so the server checks a
//! client's request before proposing it. An unknown sort order or target (a number
//! protobuf kept but etcd does not define) is [`RangeView::sort_known`] `false`.

use skiff_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::{DeleteView, OpView, PutView, RangeView, TxnView};

impl<'a> From<&'a RangeRequest> for RangeView<'a> {
    fn from(r: &'a RangeRequest) -> Self {
        RangeView {
            key: &r.key,
            sort_known: SortOrder::try_from(r.sort_order).is_ok()
                && SortTarget::try_from(r.sort_target).is_ok(),
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
        self.compare.iter().map(|c| c.key.as_ref())
    }

    fn success(&self) -> &[RequestOp] {
        &self.success
    }

    fn failure(&self) -> &[RequestOp] {
        &self.failure
    }

    fn op(op: &RequestOp) -> OpView<'_, TxnRequest> {
        match &op.request {
            Some(Request::RequestRange(r)) => OpView::Range(r.into()),
            Some(Request::RequestPut(r)) => OpView::Put(r.into()),
            Some(Request::RequestDeleteRange(r)) => OpView::Delete(r.into()),
            Some(Request::RequestTxn(t)) => OpView::Txn(t),
            None => OpView::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{check_delete, check_put, check_range, check_txn};
    use crate::EtcdError;
    use bytes::Bytes;
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
