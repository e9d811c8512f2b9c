//! Software transactional memory over etcd's transactions (etcd clientv3
//! `concurrency`'s STM): a closure reads and writes keys through an [`Stm`]; its
//! writes are committed by one `Txn` whose comparisons check that what it read is
//! still current, and the closure is run again from scratch when they fail.
//!
//! Guarantees, by [`Isolation`]:
//! - [`Isolation::Serializable`]: every read sees the store at one revision (the first
//!   read's); the commit succeeds only if no key read or written changed since that
//!   revision. Runs commit as if one after another.
//! - [`Isolation::RepeatableRead`]: a key read twice gives the same value; the commit
//!   succeeds only if every key read is unchanged (its `mod_revision` is the one read,
//!   or 0 for a key that did not exist). Keys only written are not checked.
//! - [`Isolation::ReadCommitted`]: reads see the latest committed values and are not
//!   checked; the commit applies the writes unconditionally.
//!
//! A closure's reads of keys it wrote see its own writes. The commit is a write: if
//! its outcome is unknown (a broken connection, a timeout) the error is returned and
//! the closure is **not** run again, since the transaction may have been applied.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use skiff_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use skiff_proto::etcdserverpb::request_op::Request;
use skiff_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use skiff_proto::mvccpb::KeyValue;

use crate::{Client, Error, Result};

/// How much of the store a transaction sees consistently (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// One revision for every read; conflicts on keys read or written.
    Serializable,
    /// A key read twice gives the same value; conflicts on keys read.
    RepeatableRead,
    /// Latest values, no conflict checks.
    ReadCommitted,
}

/// What a transaction closure returns: a boxed future borrowing the [`Stm`].
pub type StmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// One run of a transaction: its reads and buffered writes.
#[derive(Debug)]
pub struct Stm {
    client: Client,
    isolation: Isolation,
    /// Keys read: the key-value read (`None`: it did not exist).
    reads: HashMap<Bytes, Option<KeyValue>>,
    /// Buffered writes: a value, or `None` for a delete.
    writes: BTreeMap<Bytes, Option<Bytes>>,
    /// The revision every read of a serializable run sees (set by the first read).
    snapshot: Option<i64>,
}

impl Stm {
    fn new(client: Client, isolation: Isolation) -> Stm {
        Stm {
            client,
            isolation,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
            snapshot: None,
        }
    }

    /// The value of `key` as this transaction sees it (its own write, if any), `None`
    /// if it does not exist.
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        Ok(self.get_kv(key).await?.map(|kv| kv.value))
    }

    /// The key-value of `key` as last read from the store (not this transaction's
    /// writes), `None` if it did not exist.
    pub async fn get_kv(&mut self, key: impl Into<Bytes>) -> Result<Option<KeyValue>> {
        let key = key.into();
        if let Some(w) = self.writes.get(&key) {
            return Ok(w.as_ref().map(|value| KeyValue {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }));
        }
        if self.isolation != Isolation::ReadCommitted {
            if let Some(kv) = self.reads.get(&key) {
                return Ok(kv.clone());
            }
        }
        let resp = self
            .client
            .range(RangeRequest {
                key: key.clone(),
                revision: self.snapshot.unwrap_or(0),
                serializable: false,
                ..Default::default()
            })
            .await?;
        if self.isolation == Isolation::Serializable && self.snapshot.is_none() {
            self.snapshot = resp.header.as_ref().map(|h| h.revision);
        }
        let kv = resp.kvs.into_iter().next();
        self.reads.insert(key, kv.clone());
        Ok(kv)
    }

    /// The `mod_revision` of `key` as read (0 if it did not exist or was not read).
    pub fn mod_revision(&self, key: &[u8]) -> i64 {
        self.reads
            .get(key)
            .and_then(|kv| kv.as_ref().map(|kv| kv.mod_revision))
            .unwrap_or(0)
    }

    /// Writes `value` to `key` when the transaction commits.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.writes.insert(key.into(), None);
    }

    /// The comparisons the commit makes (see the module docs).
    fn compares(&self) -> Vec<Compare> {
        let mod_rev = |key: &Bytes, result: CompareResult, rev: i64| Compare {
            result: result as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::ModRevision(rev)),
            ..Default::default()
        };
        let mut cmps = Vec::new();
        if self.isolation == Isolation::ReadCommitted {
            return cmps;
        }
        for (key, kv) in &self.reads {
            let rev = kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
            cmps.push(mod_rev(key, CompareResult::Equal, rev));
        }
        if let (Isolation::Serializable, Some(snap)) = (self.isolation, self.snapshot) {
            for key in self.writes.keys().filter(|k| !self.reads.contains_key(*k)) {
                cmps.push(mod_rev(key, CompareResult::Less, snap + 1));
            }
        }
        cmps
    }

    /// The commit's transaction.
    fn txn(&self) -> TxnRequest {
        let success = self
            .writes
            .iter()
            .map(|(key, w)| RequestOp {
                request: Some(match w {
                    Some(value) => Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    }),
                    None => Request::RequestDeleteRange(DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    }),
                }),
            })
            .collect();
        TxnRequest {
            compare: self.compares(),
            success,
            failure: Vec::new(),
        }
    }
}

impl Client {
    /// Runs `apply` as a software transaction with `isolation` (see [`Stm`] and the
    /// module docs): runs it, commits its writes if what it read is unchanged, and
    /// runs it again from scratch when it is not, until a commit succeeds. Returns the
    /// successful commit's answer. An error from `apply` ends the transaction without
    /// writing anything.
    ///
    /// ```no_run
    /// # async fn demo(client: skiff_client::Client) -> Result<(), skiff_client::Error> {
    /// use skiff_client::Isolation;
    /// client
    ///     .stm(Isolation::Serializable, |stm| {
    ///         Box::pin(async move {
    ///             let n: u64 = match stm.get("counter").await? {
    ///                 Some(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
    ///                 None => 0,
    ///             };
    ///             stm.put("counter", (n + 1).to_string());
    ///             Ok(())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn stm<F>(&self, isolation: Isolation, mut apply: F) -> Result<TxnResponse>
    where
        F: for<'a> FnMut(&'a mut Stm) -> StmFuture<'a, ()>,
    {
        loop {
            let mut stm = Stm::new(self.clone(), isolation);
            match apply(&mut stm).await {
                Ok(()) => {}
                // The snapshot revision was compacted away under a serializable run.
                Err(Error::Etcd(skiff_api::EtcdError::Compacted)) if stm.snapshot.is_some() => {
                    continue
                }
                Err(e) => return Err(e),
            }
            let resp = self.txn(stm.txn()).await?;
            if resp.succeeded {
                return Ok(resp);
            }
            tracing::debug!(
                reads = stm.reads.len(),
                writes = stm.writes.len(),
                "stm conflict; running again"
            );
        }
    }
}
