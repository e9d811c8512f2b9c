//! KV calls: range, put, delete, txn, compact, with the short helpers most callers use.
//!
//! Guarantees: ranges are retried on another member when one is unavailable; put,
//! delete, txn and compact follow the write rule of [`crate::pool`] (retried only when
//! provably not sent).

use bytes::Bytes;
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

use crate::{Client, Result, Safety};

/// The `range_end` that selects every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff incremented; `\0`
/// (every key) when the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            let n = end.len();
            end[n - 1] = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

impl Client {
    /// A range request as given (linearizable unless `serializable` is set).
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.unary(Safety::Idempotent, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).range(req).await }
        })
        .await
    }

    /// The value of one key (an empty `kvs` if it does not exist).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<RangeResponse> {
        self.range(RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
    }

    /// Every key starting with `prefix`.
    pub async fn get_prefix(&self, prefix: impl Into<Bytes>) -> Result<RangeResponse> {
        let key: Bytes = prefix.into();
        let range_end = prefix_end(&key).into();
        self.range(RangeRequest {
            key,
            range_end,
            ..Default::default()
        })
        .await
    }

    /// A put request as given. Never retried after it may have reached a server.
    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse> {
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await }
        })
        .await
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<PutResponse> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// A delete-range request as given.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).delete_range(req).await }
        })
        .await
    }

    /// Deletes one key.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<DeleteRangeResponse> {
        self.delete_range(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
    }

    /// A transaction. Treated as a write even when it only reads.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).txn(req).await }
        })
        .await
    }

    /// Compacts the history up to `revision` (`physical`: wait until it is removed).
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<CompactionResponse> {
        let req = CompactionRequest { revision, physical };
        self.unary(Safety::NotIdempotent, |ch| async move {
            KvClient::new(ch).compact(req).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
