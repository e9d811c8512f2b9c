//! The receiving side of the peer transport: the `skiffpb.Peer` gRPC service.
//!
//! Refuses (and so never steps into Raft) anything from another cluster, from a
//! non-member, or addressed to another member; decoding uses the raft codec, which
//! bounds every length before allocating.
//!
//! Lease keep-alives forwarded over `LeaseRenewStream` are answered concurrently (up
//! to [`RENEWALS_IN_FLIGHT`] per stream, in the stream's own task: no task per
//! renewal), each answer carrying its request's sequence number; a renewal's error
//! travels in its answer and the stream stays open.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use skiff_proto::skiffpb::peer_server::Peer;
use skiff_proto::skiffpb::{
    HandOffRequest, HandOffResponse, HelloRequest, HelloResponse, LeaseRenewRequest,
    LeaseRenewResponse, LeaseTtlRequest, LeaseTtlResponse, MemberPromoteRequest,
    MemberPromoteResponse, MembersRequest, MembersResponse, RaftFrame, SnapshotAck, SnapshotChunk,
    StreamClosed,
};
use skiff_raft::{Decode, Message, MessageType, NodeId};
use tonic::{Request, Response, Status, Streaming};

use super::{
    read_lock, EventSink, LeaseSlot, MembershipHandler, MembershipSlot, PeerConfig, PeerEvent,
};
use crate::metrics::PeerSource;

/// Renewals of one follower's stream answered at once; past this the stream's next
/// requests wait (HTTP/2 flow control then holds the follower back).
pub const RENEWALS_IN_FLIGHT: usize = 1024;

/// What `LeaseRenewStream` answers with.
type RenewAnswers = Pin<Box<dyn Stream<Item = Result<LeaseRenewResponse, Status>> + Send>>;

/// A renewal's outcome as its answer on the stream.
fn renew_answer(seq: u64, outcome: Result<i64, Status>) -> LeaseRenewResponse {
    match outcome {
        Ok(ttl) => LeaseRenewResponse {
            ttl,
            seq,
            ..Default::default()
        },
        Err(status) => LeaseRenewResponse {
            ttl: 0,
            seq,
            error_code: status.code() as i32,
            error_message: status.message().to_string(),
        },
    }
}

#[derive(Clone)]
pub struct PeerService {
    cfg: Arc<PeerConfig>,
    members: Arc<RwLock<HashSet<NodeId>>>,
    removed: Arc<RwLock<HashSet<NodeId>>>,
    sink: EventSink,
    lease: LeaseSlot,
    membership: MembershipSlot,
}

impl PeerService {
    pub(super) fn new(
        cfg: Arc<PeerConfig>,
        members: Arc<RwLock<HashSet<NodeId>>>,
        removed: Arc<RwLock<HashSet<NodeId>>>,
        sink: EventSink,
        lease: LeaseSlot,
        membership: MembershipSlot,
    ) -> PeerService {
        PeerService {
            cfg,
            members,
            removed,
            sink,
            lease,
            membership,
        }
    }

    fn membership_handler(&self) -> Result<&Arc<dyn MembershipHandler>, Status> {
        self.membership
            .get()
            .ok_or_else(|| Status::unavailable("etcdserver: not capable"))
    }

    fn lease_handler(&self) -> Result<&Arc<dyn super::LeaseHandler>, Status> {
        self.lease
            .get()
            .ok_or_else(|| Status::unavailable("etcdserver: not capable"))
    }

    /// Wraps the service for a tonic server.
    pub fn into_server(self) -> skiff_proto::skiffpb::peer_server::PeerServer<PeerService> {
        skiff_proto::skiffpb::peer_server::PeerServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    fn check_sender(&self, cluster_id: u64, from: NodeId, to: NodeId) -> Result<(), Status> {
        if cluster_id != self.cfg.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster ID mismatch: this member belongs to {:x}, the sender to {cluster_id:x}",
                self.cfg.cluster_id
            )));
        }
        if to != self.cfg.local_id {
            return Err(Status::failed_precondition(format!(
                "member ID mismatch: this is member {:x}, not {to:x}",
                self.cfg.local_id
            )));
        }
        if read_lock(&self.members).contains(&from) {
            return Ok(());
        }
        if read_lock(&self.removed).contains(&from) {
            return Err(Status::failed_precondition(super::REMOVED));
        }
        Err(Status::permission_denied(format!(
            "member {from:x} is not a member of this cluster (removed?)"
        )))
    }

    fn check_message(&self, m: &Message, from: NodeId) -> Result<(), Status> {
        if m.to != self.cfg.local_id || m.from != from {
            return Err(Status::invalid_argument(format!(
                "message {:?} from {:x} to {:x} arrived on the stream from {from:x} to {:x}",
                m.msg_type, m.from, m.to, self.cfg.local_id
            )));
        }
        if m.msg_type.is_local() {
            return Err(Status::invalid_argument(format!(
                "local message {:?} received from a peer",
                m.msg_type
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let req = req.into_inner();
        self.check_sender(req.cluster_id, req.from, self.cfg.local_id)?;
        Ok(Response::new(HelloResponse {
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.local_id,
            version: crate::version::SKIFF_VERSION.to_string(),
        }))
    }

    async fn stream(
        &self,
        req: Request<Streaming<RaftFrame>>,
    ) -> Result<Response<StreamClosed>, Status> {
        let mut frames = req.into_inner();
        // The sender's series, resolved when its first frame arrives.
        let mut source: Option<(NodeId, PeerSource)> = None;
        while let Some(frame) = frames.message().await? {
            self.check_sender(frame.cluster_id, frame.from, frame.to)?;
            let from = frame.from;
            let counters = match &source {
                Some((id, c)) if *id == from => c,
                _ => {
                    &source
                        .insert((from, self.cfg.metrics.receiving_from(from)))
                        .1
                }
            };
            let size: usize = frame.messages.iter().map(|b| b.len()).sum();
            counters.received_bytes.inc_by(size as u64);
            for bytes in frame.messages {
                let m = Message::decode_bytes(bytes)
                    .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
                    .and_then(|m| self.check_message(&m, from).map(|()| m));
                let m = m.inspect_err(|_| counters.received_failures.inc())?;
                (self.sink)(PeerEvent::Message(m));
            }
        }
        Ok(Response::new(StreamClosed {
            reason: String::new(),
        }))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let req = req.into_inner();
        self.check_sender(req.cluster_id, req.from, self.cfg.local_id)?;
        let ttl = self.lease_handler()?.renew(req.id).await?;
        Ok(Response::new(LeaseRenewResponse {
            ttl,
            ..Default::default()
        }))
    }

    type LeaseRenewStreamStream = RenewAnswers;

    async fn lease_renew_stream(
        &self,
        req: Request<Streaming<LeaseRenewRequest>>,
    ) -> Result<Response<RenewAnswers>, Status> {
        let handler = self.lease_handler()?.clone();
        let this = Arc::new(self.clone());
        let answers = req
            .into_inner()
            .map(move |req| {
                let (this, handler) = (this.clone(), handler.clone());
                async move {
                    // A broken request stream ends the answers with its error.
                    let req = req?;
                    let outcome =
                        match this.check_sender(req.cluster_id, req.from, this.cfg.local_id) {
                            Ok(()) => handler.renew(req.id).await,
                            Err(refused) => Err(refused),
                        };
                    Ok(renew_answer(req.seq, outcome))
                }
            })
            .buffer_unordered(RENEWALS_IN_FLIGHT);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTtlRequest>,
    ) -> Result<Response<LeaseTtlResponse>, Status> {
        let req = req.into_inner();
        self.check_sender(req.cluster_id, req.from, self.cfg.local_id)?;
        let (ttl, granted_ttl, keys) = self.lease_handler()?.time_to_live(req.id, req.keys).await?;
        Ok(Response::new(LeaseTtlResponse {
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn members(
        &self,
        _: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(self.membership_handler()?.members()))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let req = req.into_inner();
        self.check_sender(req.cluster_id, req.from, self.cfg.local_id)?;
        Ok(Response::new(
            match self.membership_handler()?.promote(req.member_id).await {
                Ok(members) => MemberPromoteResponse {
                    error: String::new(),
                    members,
                },
                Err(e) => MemberPromoteResponse {
                    error: e.message().to_string(),
                    members: Vec::new(),
                },
            },
        ))
    }

    async fn hand_off(
        &self,
        req: Request<HandOffRequest>,
    ) -> Result<Response<HandOffResponse>, Status> {
        let req = req.into_inner();
        self.check_sender(req.cluster_id, req.from, self.cfg.local_id)?;
        let moved = self.membership_handler()?.hand_off().await;
        Ok(Response::new(HandOffResponse { moved }))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let mut chunks = req.into_inner();
        let Some(first) = chunks.message().await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        self.check_sender(first.cluster_id, first.from, first.to)?;
        if first.total_size > self.cfg.max_snapshot_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds the limit of {}",
                first.total_size, self.cfg.max_snapshot_bytes
            )));
        }
        let mut msg = Message::decode_bytes(first.header.clone())
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot header: {e}")))?;
        self.check_message(&msg, first.from)?;
        if msg.msg_type != MessageType::Snapshot || msg.snapshot.is_none() {
            return Err(Status::invalid_argument(
                "snapshot stream without a MsgSnap header",
            ));
        }
        let total = first.total_size;
        // Grow as data arrives: the declared size is only trusted as an upper bound.
        let mut payload = BytesMut::with_capacity(total.min(64 * 1024 * 1024) as usize);
        let mut chunk = first;
        loop {
            if payload.len() as u64 + chunk.data.len() as u64 > total {
                return Err(Status::invalid_argument("snapshot longer than declared"));
            }
            payload.extend_from_slice(&chunk.data);
            if chunk.last {
                if payload.len() as u64 != total {
                    return Err(Status::data_loss(format!(
                        "snapshot truncated: {} of {total} bytes",
                        payload.len()
                    )));
                }
                let crc = crc32c::crc32c(&payload);
                if crc != chunk.crc32c {
                    return Err(Status::data_loss(format!(
                        "snapshot checksum mismatch: computed {crc:08x}, sender says {:08x}",
                        chunk.crc32c
                    )));
                }
                break;
            }
            chunk = match chunks.message().await? {
                Some(c) => c,
                None => {
                    return Err(Status::data_loss(
                        "snapshot stream ended before its last chunk",
                    ))
                }
            };
        }
        if let Some(s) = msg.snapshot.as_mut() {
            s.data = payload.freeze();
        }
        (self.sink)(PeerEvent::Message(msg));
        Ok(Response::new(SnapshotAck {}))
    }
}
