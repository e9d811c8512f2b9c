//! A request's body as the service sees it: the DATA the connection received for the
//! stream, then its trailers. Taking data out of it gives the bytes back to the client's
//! flow-control windows (the stream's and the connection's), so a service that does not
//! read holds the client at one window, and one that dropped the body gives back what
//! was left unread at once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client reset the stream")]
    Reset,
}

/// What the connection and a stream's body share.
#[derive(Default)]
pub(crate) struct RecvState {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    ended: bool,
    reset: bool,
    /// The body was dropped: data arriving later is given back at once.
    dropped: bool,
    waker: Option<Waker>,
    /// Bytes taken out and not yet given back to the stream's window.
    pub(crate) released: u32,
    update_queued: bool,
}

pub(crate) type Recv = Arc<Mutex<RecvState>>;

/// Locks `m`; a panic elsewhere while it was held leaves data still usable here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection's side of what bodies give back (see `conn`).
#[derive(Default)]
pub(crate) struct Returns {
    /// Bytes given back to the connection's window, not yet announced.
    pub(crate) conn: AtomicUsize,
    /// Streams whose `released` passed the threshold.
    pub(crate) streams: Mutex<Vec<u32>>,
}

impl RecvState {
    /// Adds received data; `false` when the body is gone (the caller gives it back).
    pub(crate) fn push(&mut self, data: Bytes) -> bool {
        if self.dropped {
            return false;
        }
        self.chunks.push_back(data);
        self.wake();
        true
    }

    pub(crate) fn end(&mut self, trailers: Option<HeaderMap>) {
        self.ended = true;
        self.trailers = trailers;
        self.wake();
    }

    pub(crate) fn reset(&mut self) {
        self.reset = true;
        self.wake();
    }

    pub(crate) fn take_released(&mut self) -> u32 {
        self.update_queued = false;
        std::mem::take(&mut self.released)
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The body of a request the connection hands to the service.
pub struct RecvBody {
    state: Option<Recv>,
    stream: u32,
    returns: Arc<Returns>,
    /// Give the stream's window back once this much was taken (half the window).
    threshold: u32,
    /// The connection gives its window back once this much was taken, from all streams.
    conn_threshold: usize,
    wake_conn: Waker,
}

impl RecvBody {
    pub(crate) fn new(
        state: Option<Recv>,
        stream: u32,
        returns: Arc<Returns>,
        (threshold, conn_threshold): (u32, usize),
        wake_conn: Waker,
    ) -> RecvBody {
        RecvBody {
            state,
            stream,
            returns,
            threshold,
            conn_threshold,
            wake_conn,
        }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(state) = &this.state else {
            return Poll::Ready(None);
        };
        let mut s = lock(state);
        if let Some(data) = s.chunks.pop_front() {
            let n = data.len() as u32;
            s.released += n;
            let stream_due = s.released >= this.threshold && !s.update_queued && !s.ended;
            if stream_due {
                s.update_queued = true;
            }
            drop(s);
            let before = this.returns.conn.fetch_add(n as usize, Ordering::Relaxed);
            let conn_due =
                before < this.conn_threshold && before + n as usize >= this.conn_threshold;
            if conn_due && !stream_due {
                this.wake_conn.wake_by_ref();
            }
            if stream_due {
                lock(&this.returns.streams).push(this.stream);
                this.wake_conn.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if s.reset {
            return Poll::Ready(Some(Err(BodyError::Reset)));
        }
        if s.ended {
            return Poll::Ready(s.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            None => true,
            Some(state) => {
                let s = lock(state);
                s.ended && s.chunks.is_empty() && s.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let Some(state) = &self.state else { return };
        let mut s = lock(state);
        s.dropped = true;
        let unread: usize = s.chunks.drain(..).map(|c| c.len()).sum();
        drop(s);
        if unread > 0 {
            self.returns.conn.fetch_add(unread, Ordering::Relaxed);
            self.wake_conn.wake_by_ref();
        }
    }
}
