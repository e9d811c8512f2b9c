//! Sending a Raft snapshot to a peer: the MsgSnap header, then the payload in chunks,
//! then a CRC32C over the payload, on its own connection and at a bounded byte rate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use skiff_proto::skiffpb::SnapshotChunk;
use skiff_raft::{Encode, Message, NodeId};
use tokio::sync::mpsc;

use super::{connect, EventSink, PeerConfig, PeerError, PeerEvent, SourceSlot};

/// Splits a MsgSnap into the chunks of the `Snapshot` RPC.
pub fn chunks(cfg: &PeerConfig, mut msg: Message) -> Vec<SnapshotChunk> {
    let payload = msg
        .snapshot
        .as_mut()
        .map(|s| std::mem::take(&mut s.data))
        .unwrap_or_default();
    let header = msg.encode();
    let crc = crc32c::crc32c(&payload);
    let size = cfg.snapshot_chunk_bytes.max(1);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let end = (offset + size).min(payload.len());
        let last = end == payload.len();
        let mut c = SnapshotChunk {
            data: payload.slice(offset..end),
            last,
            crc32c: if last { crc } else { 0 },
            ..Default::default()
        };
        if offset == 0 {
            c.cluster_id = cfg.cluster_id;
            c.from = cfg.local_id;
            c.to = msg.to;
            c.header = header.clone();
            c.total_size = payload.len() as u64;
        }
        out.push(c);
        if last {
            return out;
        }
        offset = end;
    }
}

/// Sends one snapshot message, throttled to `cfg.snapshot_rate`.
pub async fn send_snapshot(
    cfg: &PeerConfig,
    peer: NodeId,
    urls: &RwLock<Vec<String>>,
    msg: Message,
) -> Result<(), PeerError> {
    let mut client = connect(cfg, peer, urls).await?;
    let parts = chunks(cfg, msg);
    let rate = cfg.snapshot_rate;
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(2);
    let producer = tokio::spawn(async move {
        let start = Instant::now();
        let mut sent: u64 = 0;
        for c in parts {
            sent += c.data.len() as u64;
            if tx.send(c).await.is_err() {
                return;
            }
            if rate > 0 {
                // Stay under `rate` bytes per second on average.
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                let elapsed = start.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
            }
        }
    });
    let res = client
        .snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    producer.abort();
    res.map(|_| ())
        .map_err(|s| PeerError::Snapshot(s.to_string()))
}

/// Sends the snapshots queued for `peer`, one at a time, reporting each outcome.
pub(super) async fn snapshot_sender(
    cfg: Arc<PeerConfig>,
    peer: NodeId,
    urls: Arc<RwLock<Vec<String>>>,
    mut queue: mpsc::Receiver<Message>,
    sink: EventSink,
    source: SourceSlot,
) {
    while let Some(mut m) = queue.recv().await {
        if let (Some(fill), Some(snap)) = (source.get().cloned(), m.snapshot.as_mut()) {
            let data = std::mem::take(&mut snap.data);
            match tokio::task::spawn_blocking(move || fill(data)).await {
                Ok(Ok(full)) => snap.data = full,
                Ok(Err(e)) => {
                    tracing::warn!(peer = format!("{peer:x}"), error = %e, "cannot build the snapshot payload");
                    sink(PeerEvent::SnapshotStatus {
                        to: peer,
                        ok: false,
                    });
                    continue;
                }
                Err(e) => {
                    tracing::warn!(peer = format!("{peer:x}"), error = %e, "snapshot payload task failed");
                    sink(PeerEvent::SnapshotStatus {
                        to: peer,
                        ok: false,
                    });
                    continue;
                }
            }
        }
        let size = m.snapshot.as_ref().map_or(0, |s| s.data.len());
        let started = Instant::now();
        let ok = match send_snapshot(&cfg, peer, &urls, m).await {
            Ok(()) => {
                tracing::info!(
                    peer = format!("{peer:x}"),
                    bytes = size,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot sent"
                );
                true
            }
            Err(e) => {
                tracing::warn!(peer = format!("{peer:x}"), error = %e, "snapshot send failed");
                false
            }
        };
        sink(PeerEvent::SnapshotStatus { to: peer, ok });
    }
}
