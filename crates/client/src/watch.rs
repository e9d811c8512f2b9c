//! A watch that survives member failures.
//!
//! Guarantees (etcd's watch guarantees, kept across reconnects):
//! - **exactly once, in order**: after a broken stream (a killed member, a member that
//!   lost its leader: the watch is created with etcd's `hasleader` requirement), the
//!   watch is re-created on another member from the revision after the last one
//!   delivered (or after the revision the first creation reported, if no event came
//!   yet), and any event at or below the last delivered revision is dropped. A
//!   revision's events arrive together (this client never asks for fragments), so
//!   resuming at a revision boundary loses nothing.
//! - **a refused token** (it expired, or the member restarted and forgot it) while
//!   (re-)creating the watch: the client authenticates again (shared with its other
//!   calls) and re-creates the watch from the same revision, on the same member; a
//!   token refused again right after that renewal ends the watch with the error.
//! - **no silent gap**: if the revision the watch needs was compacted, the watcher
//!   yields [`Error::WatchCompacted`] and ends.
//! - The task ends when the [`Watcher`] is dropped, which cancels the stream.
//! - [`Watcher::request_progress`] asks the member serving the watch for a progress
//!   notification (etcd's `ProgressRequest`), which arrives like any response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use skiff_proto::etcdserverpb::watch_client::WatchClient;
use skiff_proto::etcdserverpb::watch_request::RequestUnion;
use skiff_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use skiff_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::pool::Pool;
use crate::{Client, Error, Result};

/// A running watch: call [`Watcher::message`] for each response.
pub struct Watcher {
    rx: mpsc::Receiver<Result<WatchResponse>>,
    progress: mpsc::UnboundedSender<()>,
    reconnects: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

impl Watcher {
    /// The next response: the creation (once), events, progress notifications; an
    /// error ends the watch; `None` once it ended.
    pub async fn message(&mut self) -> Option<Result<WatchResponse>> {
        self.rx.recv().await
    }

    /// Asks for a progress notification (a response without events whose header
    /// revision says every event up to it has been delivered); a no-op once the watch
    /// ended.
    pub fn request_progress(&self) {
        let _ = self.progress.send(());
    }

    /// A handle that asks for progress notifications from elsewhere (another task)
    /// while this watcher is being read.
    pub fn progress_requester(&self) -> ProgressRequester {
        ProgressRequester(self.progress.clone())
    }

    /// How many times the watch was re-created on a member after a broken stream.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

/// Asks a [`Watcher`] for progress notifications (see [`Watcher::request_progress`]).
#[derive(Debug, Clone)]
pub struct ProgressRequester(mpsc::UnboundedSender<()>);

impl ProgressRequester {
    /// Asks for a progress notification; `false` once the watch has ended.
    pub fn request(&self) -> bool {
        self.0.send(()).is_ok()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts a watch described by `create` (key, range_end, start_revision, prev_kv,
    /// filters, progress_notify). `start_revision` 0 means "from now".
    /// With credentials, authenticates first if the client has not yet; every stream
    /// (the first and each resumed one) carries the token current when it opens.
    pub async fn watch(&self, create: WatchCreateRequest) -> Result<Watcher> {
        self.pool.ensure_token(self.deadline()).await?;
        let (tx, rx) = mpsc::channel(64);
        let (progress, progress_rx) = mpsc::unbounded_channel();
        let reconnects = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            self.pool.clone(),
            self.pin,
            create,
            tx,
            progress_rx,
            reconnects.clone(),
        ));
        Ok(Watcher {
            rx,
            progress,
            reconnects,
            task,
        })
    }
}

/// The watch's side of its [`Watcher`]: responses out, progress requests in.
struct Caller {
    tx: mpsc::Sender<Result<WatchResponse>>,
    progress: mpsc::UnboundedReceiver<()>,
}

/// What one connection to a member ended with.
enum Ended {
    /// The stream broke or the member gave up: try another member.
    Reconnect,
    /// The member refused the token: authenticate again, then retry.
    Reauthenticate(Error),
    /// Final: the caller has been told (or is gone).
    Done,
}

async fn run(
    pool: Arc<Pool>,
    pin: Option<usize>,
    create: WatchCreateRequest,
    tx: mpsc::Sender<Result<WatchResponse>>,
    progress: mpsc::UnboundedReceiver<()>,
    reconnects: Arc<AtomicU64>,
) {
    let mut caller = Caller { tx, progress };
    let mut next_rev = create.start_revision;
    let mut created_sent = false;
    let mut attempt: u32 = 0;
    let mut last: Option<usize> = None;
    // The member to use next regardless of health (after a refused token).
    let mut again: Option<usize> = None;
    // Whether the next stream opens with a token renewed just before it.
    let mut renewed = false;
    loop {
        if caller.tx.is_closed() {
            return;
        }
        if attempt > 0 && (pin.is_some() || pool.all_down()) {
            tokio::time::sleep(pool.backoff(attempt)).await;
        }
        let i = again.take().or(pin).unwrap_or_else(|| pool.pick(last));
        let generation = pool.auth.generation();
        if attempt > 0 || created_sent {
            reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let mut req = create.clone();
        req.start_revision = next_rev;
        let ended = one_stream(
            &pool,
            i,
            req,
            &mut caller,
            &mut next_rev,
            &mut created_sent,
            &mut attempt,
        )
        .await;
        if attempt == 0 {
            // The watch was created: a later refusal may renew again.
            renewed = false;
        }
        match ended {
            Ended::Done => return,
            Ended::Reauthenticate(e) => {
                if !pool.auth.enabled() || renewed {
                    // No credentials to renew with, or a fresh token refused too.
                    let _ = caller.tx.send(Err(e)).await;
                    return;
                }
                tracing::debug!(next_rev, "watch token refused; authenticating again");
                match pool.renew(generation, None).await {
                    Ok(()) => {
                        renewed = true;
                        again = Some(i);
                        // Counted as an attempt: a creation resets it to 0, which is
                        // how the next turn knows the renewed token was accepted.
                        attempt = attempt.saturating_add(1);
                    }
                    Err(e) if transient(&e) => {
                        pool.mark_down(i);
                        attempt = attempt.saturating_add(1);
                        last = Some(i);
                    }
                    Err(e) => {
                        let _ = caller.tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            Ended::Reconnect => {
                pool.mark_down(i);
                attempt = attempt.saturating_add(1);
                last = Some(i);
                tracing::debug!(
                    endpoint = %pool.members[i].endpoint,
                    next_rev,
                    "watch stream broken; resuming on another member"
                );
            }
        }
    }
}

/// Runs the watch on member `i` until the stream ends.
async fn one_stream(
    pool: &Pool,
    i: usize,
    req: WatchCreateRequest,
    caller: &mut Caller,
    next_rev: &mut i64,
    created_sent: &mut bool,
    attempt: &mut u32,
) -> Ended {
    let Caller { tx, progress } = caller;
    let (req_tx, req_rx) = mpsc::channel(1);
    let first = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(req)),
    };
    if req_tx.send(first).await.is_err() {
        return Ended::Reconnect;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(req_rx));
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = match WatchClient::new(pool.members[i].channel.clone())
        .watch(request)
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) if retryable(status.code()) => return Ended::Reconnect,
        Err(status) if crate::auth::token_refused(&Error::from_status(status.clone())) => {
            return Ended::Reauthenticate(Error::from_status(status));
        }
        Err(status) => {
            let _ = tx.send(Err(Error::from_status(status))).await;
            return Ended::Done;
        }
    };
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            Some(()) = progress.recv() => {
                let ask = WatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(Default::default())),
                };
                if req_tx.send(ask).await.is_err() {
                    return Ended::Reconnect;
                }
                continue;
            }
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => return Ended::Reconnect,
            Err(status) => {
                let e = Error::from_status(status);
                if crate::auth::token_refused(&e) {
                    return Ended::Reauthenticate(e);
                }
                if matches!(e, Error::Etcd(skiff_api::EtcdError::Compacted)) {
                    let _ = tx
                        .send(Err(Error::WatchCompacted {
                            wanted: *next_rev,
                            compact_revision: 0,
                        }))
                        .await;
                    return Ended::Done;
                }
                return Ended::Reconnect;
            }
        };
        if msg.compact_revision != 0 {
            let _ = tx
                .send(Err(Error::WatchCompacted {
                    wanted: *next_rev,
                    compact_revision: msg.compact_revision,
                }))
                .await;
            return Ended::Done;
        }
        if msg.canceled {
            if msg.cancel_reason.contains("no leader") || msg.cancel_reason.is_empty() {
                return Ended::Reconnect;
            }
            // A creation refused for its token, worded as grpc-go renders the error
            // ("rpc error: code = Unauthenticated desc = etcdserver: invalid auth token").
            if msg.cancel_reason.contains(INVALID_TOKEN) {
                return Ended::Reauthenticate(Error::Etcd(skiff_api::EtcdError::InvalidAuthToken));
            }
            if msg.cancel_reason.contains(OLD_REVISION) {
                return Ended::Reauthenticate(Error::Etcd(skiff_api::EtcdError::AuthOldRevision));
            }
            let _ = tx.send(Err(Error::WatchCanceled(msg.cancel_reason))).await;
            return Ended::Done;
        }
        let header_rev = msg.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if msg.created {
            *attempt = 0;
            pool.mark_up(i);
            if *next_rev == 0 {
                *next_rev = header_rev + 1;
            }
            if *created_sent {
                continue;
            }
            *created_sent = true;
            if tx.send(Ok(msg)).await.is_err() {
                return Ended::Done;
            }
            continue;
        }
        let mut msg = msg;
        let had_events = !msg.events.is_empty();
        let floor = *next_rev;
        msg.events.retain(|e: &Event| mod_rev(e) >= floor);
        if had_events && msg.events.is_empty() {
            continue;
        }
        if let Some(max) = msg.events.iter().map(mod_rev).max() {
            *next_rev = max + 1;
        } else if header_rev + 1 > *next_rev {
            // A progress notification: every event up to header_rev has been sent.
            *next_rev = header_rev + 1;
        }
        if tx.send(Ok(msg)).await.is_err() {
            return Ended::Done;
        }
    }
}

/// etcd's message for a refused token.
const INVALID_TOKEN: &str = "invalid auth token";
/// etcd's message for a `jwt` token older than the auth store.
const OLD_REVISION: &str = "revision of auth store is old";

/// Whether a failed renewal is worth trying again later (no member answered in time).
pub(crate) fn transient(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
    )
}

fn mod_rev(e: &Event) -> i64 {
    e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0)
}

/// Codes after which a watch is worth re-creating elsewhere.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}
