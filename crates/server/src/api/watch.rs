//! The Watch service (`etcdserverpb.Watch`): one bidirectional stream carries many
//! watchers; each client request creates, cancels or asks for progress, and the
//! store's watch hub delivers events (ordered, all of one revision together, none
//! twice, none missing, filters and prev_kv applied; see `skiff_storage::watch`).
//!
//! etcd's wire behaviour is kept: a create is answered `created` with the current
//! revision in the header; a duplicate `watch_id` is answered created + canceled with
//! the store's reason; a cancel of an existing watcher is answered `canceled`, of an
//! unknown one not at all; a progress request is answered with `watch_id` -1; a
//! compacted start revision cancels the watcher with `compact_revision` set. With
//! `fragment`, a response larger than `--max-request-bytes` is split into several
//! responses, all but the last flagged `fragment`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use skiff_proto::etcdserverpb::{
    watch_request::RequestUnion, watch_server::Watch, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::facade::{WatchApi, WatchSession};

/// The gRPC Watch service over a facade.
pub struct WatchService<F> {
    facade: Arc<F>,
    /// `--max-request-bytes`: the size above which fragmenting watchers' responses
    /// are split.
    fragment_bytes: usize,
}

impl<F: WatchApi> WatchService<F> {
    pub fn new(facade: Arc<F>, fragment_bytes: usize) -> WatchService<F> {
        WatchService {
            facade,
            fragment_bytes,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// Splits `resp` into responses of at most about `limit` bytes (never splitting an
/// event; at least one event each), the last one without the `fragment` flag.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut out = Vec::new();
    let mut current = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..resp.clone()
    };
    let mut size = 0;
    for ev in resp.events {
        let len = ev.encoded_len();
        if !current.events.is_empty() && size + len > limit {
            let next = WatchResponse {
                events: Vec::new(),
                ..current.clone()
            };
            out.push(std::mem::replace(&mut current, next));
            size = 0;
        }
        size += len;
        current.events.push(ev);
    }
    current.fragment = false;
    out.push(current);
    out
}

/// One client request: the response to send for it, if any.
fn handle_request(
    session: &mut dyn WatchSession,
    fragmenting: &mut HashSet<i64>,
    msg: WatchRequest,
) -> Option<WatchResponse> {
    match msg.request_union? {
        RequestUnion::CreateRequest(c) => {
            let wants_fragments = c.fragment;
            let resp = session.create(c);
            if wants_fragments && !resp.canceled {
                fragmenting.insert(resp.watch_id);
            }
            Some(resp)
        }
        RequestUnion::CancelRequest(c) => {
            let resp = session.cancel(c.watch_id)?;
            fragmenting.remove(&c.watch_id);
            Some(resp)
        }
        RequestUnion::ProgressRequest(_) => {
            session.request_progress();
            None
        }
    }
}

#[tonic::async_trait]
impl<F: WatchApi> Watch for WatchService<F> {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = super::leader::requires_leader(req.metadata());
        let mut leader = self.facade.leader_changes();
        let mut incoming = req.into_inner();
        let mut session = self.facade.watch()?;
        let (tx, rx) = mpsc::channel::<Result<WatchResponse, Status>>(64);
        let limit = self.fragment_bytes;

        // One task both serves the client's requests and forwards the session's
        // events, so a watcher's `created` response is always sent before any of its
        // events (the hub can deliver catch-up events as soon as the watcher exists).
        tokio::spawn(async move {
            let mut fragmenting: HashSet<i64> = HashSet::new();
            loop {
                let out: Vec<WatchResponse> = tokio::select! {
                    msg = incoming.next() => {
                        let Some(Ok(msg)) = msg else { break };
                        handle_request(session.as_mut(), &mut fragmenting, msg)
                            .into_iter()
                            .collect()
                    }
                    _ = super::leader::leader_lost(&mut leader), if require_leader => {
                        // etcd ends a hasleader watch when its member loses the leader.
                        let _ = tx.send(Err(super::leader::no_leader())).await;
                        break;
                    }
                    r = session.next() => {
                        let Some(resp) = r else { break };
                        if fragmenting.contains(&resp.watch_id) {
                            fragments(resp, limit)
                        } else {
                            vec![resp]
                        }
                    }
                };
                for r in out {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
            // Client gone: dropping the session removes its watchers.
            drop(session);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use skiff_proto::mvccpb::{Event, KeyValue};

    fn ev(n: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from(format!("k{n}")),
                value: Bytes::from(vec![b'x'; 100]),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_split_on_size_and_flag_all_but_last() {
        let resp = WatchResponse {
            watch_id: 3,
            events: (0..10).map(ev).collect(),
            ..Default::default()
        };
        let one = ev(0).encoded_len();
        let parts = fragments(resp.clone(), 3 * one + 1);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        assert!(parts.len() >= 3);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);
        assert!(parts.iter().all(|p| p.watch_id == 3));
        // Small responses are not split.
        assert_eq!(fragments(resp, usize::MAX).len(), 1);
    }
}
