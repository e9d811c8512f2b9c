//! The Watch API of the member: a session is one stream of the store's watch hub,
//! its responses turned into etcd's wire form with the member's header. A response
//! keeps counting against its stream's queue bound (`--watch-stream-bytes`, see
//! `skiff_storage::watch`) until the front end has encoded it: the accounting is
//! shared by its values' buffers.

use std::sync::Arc;

use skiff_proto::etcdserverpb as pb;
use skiff_proto::mvccpb;
use skiff_storage::mvcc as st;
use skiff_storage::watch::{self as sw, WatchFilter};
use tokio::sync::mpsc;

use super::EtcdServer;
use crate::convert;
use crate::facade::{ApiResult, WatchApi, WatchSession};

/// The header fields a watch response carries besides its revision.
#[derive(Clone)]
struct HeaderSource {
    cluster_id: u64,
    member_id: u64,
    raft: Arc<crate::inputs::RaftStatus>,
    store: Arc<skiff_storage::mvcc::KvStore>,
}

impl HeaderSource {
    fn at(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.term.load(std::sync::atomic::Ordering::Acquire),
        })
    }

    fn now(&self) -> Option<pb::ResponseHeader> {
        self.at(self.store.current_revision())
    }
}

/// One client stream on the store's watch hub.
struct Session {
    stream: sw::WatchStream,
    events: mpsc::Receiver<sw::WatchResponse>,
    header: HeaderSource,
}

fn create_from_pb(c: pb::WatchCreateRequest) -> sw::WatchRequest {
    sw::WatchRequest {
        key: c.key.to_vec(),
        range_end: c.range_end.to_vec(),
        start_revision: c.start_revision,
        progress_notify: c.progress_notify,
        filters: c
            .filters
            .iter()
            .filter_map(|f| match f {
                0 => Some(WatchFilter::NoPut),
                1 => Some(WatchFilter::NoDelete),
                _ => None,
            })
            .collect(),
        prev_kv: c.prev_kv,
        watch_id: c.watch_id,
        fragment: c.fragment,
    }
}

#[tonic::async_trait]
impl WatchSession for Session {
    fn create(&mut self, req: pb::WatchCreateRequest) -> pb::WatchResponse {
        let (watch_id, canceled, cancel_reason) = match self.stream.watch(&create_from_pb(req)) {
            Ok(id) => (id, false, String::new()),
            Err(e) => (-1, true, e.to_string()),
        };
        pb::WatchResponse {
            header: self.header.now(),
            watch_id,
            created: true,
            canceled,
            cancel_reason,
            ..Default::default()
        }
    }

    fn cancel(&mut self, watch_id: i64) -> Option<pb::WatchResponse> {
        self.stream.cancel(watch_id).then(|| pb::WatchResponse {
            header: self.header.now(),
            watch_id,
            canceled: true,
            ..Default::default()
        })
    }

    fn request_progress(&mut self) {
        // The hub answers (watch_id -1) once every watcher on the stream has caught
        // up, so the revision is a true bookmark.
        self.stream.request_progress();
    }

    async fn next(&mut self) -> Option<pb::WatchResponse> {
        let r = self.events.recv().await?;
        Some(pb::WatchResponse {
            header: self.header.at(r.revision),
            watch_id: r.watch_id,
            created: false,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: String::new(),
            fragment: false,
            events: match r.queued {
                // The stream's queue bound holds until gRPC has encoded the events: the
                // accounting rides on the values' buffers (no copy).
                Some(q) => r.events.into_iter().map(|e| event_held(e, &q)).collect(),
                None => r.events.into_iter().map(convert::event_to_pb).collect(),
            },
        })
    }
}

/// A value's buffer that keeps its response's queue accounting alive.
struct Queued {
    bytes: Vec<u8>,
    _held: Arc<sw::Queued>,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// [`convert::event_to_pb`], its values holding `q`.
fn event_held(e: st::Event, q: &Arc<sw::Queued>) -> mvccpb::Event {
    let hold = |kv: st::KeyValue| mvccpb::KeyValue {
        key: bytes::Bytes::from(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: bytes::Bytes::from_owner(Queued {
            bytes: kv.value,
            _held: q.clone(),
        }),
        lease: kv.lease,
    };
    mvccpb::Event {
        r#type: match e.kind {
            st::EventType::Put => mvccpb::event::EventType::Put as i32,
            st::EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(hold(e.kv)),
        prev_kv: e.prev_kv.map(hold),
    }
}

impl WatchApi for EtcdServer {
    fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.raft.leader.subscribe()
    }

    fn watch(&self) -> ApiResult<Box<dyn WatchSession>> {
        let (stream, events) = self.watchable.new_stream();
        Ok(Box::new(Session {
            stream,
            events,
            header: HeaderSource {
                cluster_id: self.cluster_id,
                member_id: self.member_id,
                raft: self.raft.clone(),
                store: self.store.clone(),
            },
        }))
    }
}
