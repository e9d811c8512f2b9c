//! `Maintenance.Snapshot` as etcd 3.4 serves it: the backend as an etcd `db` file
//! (bbolt, etcd's buckets and encodings), streamed in 32 KiB chunks whose
//! `remaining_bytes` counts down to 0, then one last message carrying the SHA-256 of
//! everything sent (what `etcdctl snapshot save` appends and `snapshot restore`
//! checks).
//!
//! The file is built from one read transaction of the backend (a consistent view;
//! applies go on meanwhile) into a temporary file beside the backend, which is unlinked
//! as soon as it is open, so nothing is left behind; the member's memory stays bounded
//! (the writer keeps a few pages, the stream a few chunks in flight).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_storage::bbolt::etcd;
use skiff_storage::mvcc::KvStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::etcd_db::EtcdAux;
use crate::facade::{ApiResult, SnapshotStream};

/// etcd's `snapshotSendBufferSize`.
const CHUNK: usize = 32 * 1024;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Builds the snapshot file and returns the stream of its chunks and checksum.
pub(super) async fn stream(store: Arc<KvStore>) -> ApiResult<SnapshotStream> {
    let (file, total) = tokio::task::spawn_blocking(move || build(&store))
        .await
        .unwrap_or(Err(EtcdError::Stopped))?;
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || send(file, total, tx));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Writes the etcd `db` file of the store's current state; returns it open (and
/// already unlinked) with its size.
fn build(store: &KvStore) -> ApiResult<(File, u64)> {
    let backend = store.backend();
    let dir = backend
        .path()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join(format!(
        "snapshot-{}-{}.db.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let started = std::time::Instant::now();
    let result = etcd::export(backend, &path, &EtcdAux::default());
    let opened = File::open(&path);
    let _ = std::fs::remove_file(&path);
    let summary = result.map_err(|e| {
        tracing::error!(error = %e, "building the snapshot file failed");
        EtcdError::Stopped
    })?;
    let file = opened.map_err(|e| {
        tracing::error!(error = %e, path = %path.display(), "opening the snapshot file failed");
        EtcdError::Stopped
    })?;
    tracing::info!(
        total_bytes = summary.bytes,
        revision = summary.last_key_revision,
        consistent_index = summary.consistent_index,
        took_ms = started.elapsed().as_millis() as u64,
        "sending database snapshot to client"
    );
    Ok((file, summary.bytes))
}

/// Sends the file in chunks, then its SHA-256; stops when the client goes away.
fn send(mut file: File, total: u64, tx: mpsc::Sender<ApiResult<pb::SnapshotResponse>>) {
    let mut sha = Sha256::new();
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while sent < total {
        let want = CHUNK.min((total - sent) as usize);
        if let Err(e) = file.read_exact(&mut buf[..want]) {
            tracing::error!(error = %e, sent, total, "reading the snapshot file failed");
            let _ = tx.blocking_send(Err(EtcdError::Stopped));
            return;
        }
        sent += want as u64;
        sha.update(&buf[..want]);
        let resp = pb::SnapshotResponse {
            header: None,
            remaining_bytes: total - sent,
            blob: bytes::Bytes::copy_from_slice(&buf[..want]),
            ..Default::default()
        };
        if tx.blocking_send(Ok(resp)).is_err() {
            tracing::info!(sent, total, "snapshot client went away");
            return;
        }
    }
    let digest = sha.finalize();
    let resp = pb::SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: bytes::Bytes::copy_from_slice(digest.as_slice()),
        ..Default::default()
    };
    if tx.blocking_send(Ok(resp)).is_ok() {
        tracing::info!(
            total_bytes = total,
            "sent database snapshot and its sha256 to client"
        );
    }
}
