//! Key-value workloads: put, range, txn-put and mixed. One worker per client; worker `i`
//! uses connection `i mod conns`.

use std::future::Future;

use etcd_client::{Client, GetOptions, KvClient, Txn, TxnOp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::cli::{Consistency, GlobalOpts, MixedOpts, PutOpts, RangeOpts, TxnPutOpts};
use crate::keys::{self, KeyGen};
use crate::runner::Worker;

fn kv_for(conns: &[Client], i: usize) -> KvClient {
    conns[i % conns.len()].kv_client()
}

fn get_options(end: Option<&[u8]>, consistency: Consistency) -> GetOptions {
    let mut o = GetOptions::new();
    if let Some(end) = end {
        o = o.with_range(end.to_vec());
    }
    if consistency == Consistency::Serializable {
        o = o.with_serializable();
    }
    o
}

pub struct PutWorker {
    kv: KvClient,
    keys: KeyGen,
    value: Vec<u8>,
    rng: SmallRng,
}

impl Worker for PutWorker {
    fn call(
        &mut self,
        idx: u64,
    ) -> impl Future<Output = Result<&'static str, etcd_client::Error>> + Send {
        let key = self.keys.key(self.keys.number(idx, &mut self.rng));
        let value = self.value.clone();
        let mut kv = self.kv.clone();
        async move { kv.put(key, value, None).await.map(|_| "put") }
    }
}

pub fn put_workers(g: &GlobalOpts, o: &PutOpts, conns: &[Client]) -> Vec<PutWorker> {
    let value = keys::value(o.keys.val_size);
    (0..g.clients)
        .map(|i| PutWorker {
            kv: kv_for(conns, i),
            keys: KeyGen::new(
                o.keys.key_size,
                o.keys.key_space_size,
                o.keys.sequential_keys,
            )
            .starting_at(o.keys.key_start),
            value: value.clone(),
            rng: SmallRng::from_rng(&mut rand::rng()),
        })
        .collect()
}

pub struct RangeWorker {
    kv: KvClient,
    key: Vec<u8>,
    options: GetOptions,
}

impl Worker for RangeWorker {
    fn call(
        &mut self,
        _idx: u64,
    ) -> impl Future<Output = Result<&'static str, etcd_client::Error>> + Send {
        let (mut kv, key, options) = (self.kv.clone(), self.key.clone(), self.options.clone());
        async move { kv.get(key, Some(options)).await.map(|_| "range") }
    }
}

pub fn range_workers(g: &GlobalOpts, o: &RangeOpts, conns: &[Client]) -> Vec<RangeWorker> {
    let options = get_options(o.end.as_deref().map(str::as_bytes), o.consistency);
    (0..g.clients)
        .map(|i| RangeWorker {
            kv: kv_for(conns, i),
            key: o.key.as_bytes().to_vec(),
            options: options.clone(),
        })
        .collect()
}

pub struct TxnWorker {
    kv: KvClient,
    keys: KeyGen,
    ops: u64,
    value: Vec<u8>,
    rng: SmallRng,
}

impl Worker for TxnWorker {
    fn call(
        &mut self,
        idx: u64,
    ) -> impl Future<Output = Result<&'static str, etcd_client::Error>> + Send {
        // Keys base, base+1, ... (mod the key space) are distinct because ops <= space,
        // and etcd rejects a txn that writes one key twice.
        let base = self.keys.number(idx.wrapping_mul(self.ops), &mut self.rng);
        let ops: Vec<TxnOp> = (0..self.ops)
            .map(|j| TxnOp::put(self.keys.key(base + j), self.value.clone(), None))
            .collect();
        let mut kv = self.kv.clone();
        async move { kv.txn(Txn::new().and_then(ops)).await.map(|_| "txn") }
    }
}

pub fn txn_workers(g: &GlobalOpts, o: &TxnPutOpts, conns: &[Client]) -> Vec<TxnWorker> {
    let value = keys::value(o.keys.val_size);
    (0..g.clients)
        .map(|i| TxnWorker {
            kv: kv_for(conns, i),
            keys: KeyGen::new(
                o.keys.key_size,
                o.keys.key_space_size,
                o.keys.sequential_keys,
            )
            .starting_at(o.keys.key_start),
            ops: o.txn_ops,
            value: value.clone(),
            rng: SmallRng::from_rng(&mut rand::rng()),
        })
        .collect()
}

pub struct MixedWorker {
    kv: KvClient,
    keys: KeyGen,
    value: Vec<u8>,
    read_ratio: f64,
    read_options: GetOptions,
    rng: SmallRng,
}

impl Worker for MixedWorker {
    fn call(
        &mut self,
        idx: u64,
    ) -> impl Future<Output = Result<&'static str, etcd_client::Error>> + Send {
        let key = self.keys.key(self.keys.number(idx, &mut self.rng));
        let read = self.rng.random_bool(self.read_ratio);
        let (mut kv, value, options) = (
            self.kv.clone(),
            self.value.clone(),
            self.read_options.clone(),
        );
        async move {
            if read {
                kv.get(key, Some(options)).await.map(|_| "range")
            } else {
                kv.put(key, value, None).await.map(|_| "put")
            }
        }
    }
}

pub fn mixed_workers(g: &GlobalOpts, o: &MixedOpts, conns: &[Client]) -> Vec<MixedWorker> {
    let value = keys::value(o.keys.val_size);
    (0..g.clients)
        .map(|i| MixedWorker {
            kv: kv_for(conns, i),
            keys: KeyGen::new(
                o.keys.key_size,
                o.keys.key_space_size,
                o.keys.sequential_keys,
            )
            .starting_at(o.keys.key_start),
            value: value.clone(),
            read_ratio: o.read_ratio,
            read_options: get_options(None, o.consistency),
            rng: SmallRng::from_rng(&mut rand::rng()),
        })
        .collect()
}
