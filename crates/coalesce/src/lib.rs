//! Fewer, larger writes to a connection: the responses of calls that finish close
//! together leave in one syscall. A member wraps each client connection in it (the
//! server's `serve` module); skiff-bench wraps each of its connections, whose requests
//! hyper's client otherwise wrote in about two `writev`s each (`crates/bench/src/conn.rs`).
//! The story below is the server's, where it began.
//!
//! Under many concurrent calls on one HTTP/2 connection, responses become ready one at a
//! time: a call's task finishes, hands its frames to the connection and wakes the
//! connection's task, which tokio runs next (a task woken by the running one takes the
//! worker's LIFO slot). So every response went out in a `writev` of its own, ahead of the
//! calls finished by the same Raft apply that were still queued: 0.95 writes per put at
//! 1000 clients over 100 connections, 2 to 2.5 per linearizable range a member served
//! (`bench/PROFILE.md`). On loopback a write also runs the receiving side's TCP input, so
//! these writes were a fifth of the leader's samples.
//!
//! [`Coalesce`] keeps what the server writes in a buffer of its own, and the first flush
//! of a batch yields once, as `tokio::task::yield_now` does: the connection's task is
//! woken again only after the worker has run the tasks it already had (the calls about
//! to finish) and polled for I/O. Their frames join the buffer, and the next flush
//! writes all of them in one syscall. A call's response that wakes the connection's task
//! meanwhile does not end the wait (that woke it after one more response, not after the
//! batch). The wait is bounded: tokio wakes deferred tasks whenever a worker runs out of
//! work and, at the latest, every 61 polls of its tasks. (A task that wakes itself
//! instead goes to the back of the queue at once, and tokio then unparks an idle worker
//! to share it: a futex wake and a thread switch per response, which made a lone
//! client's puts 4% slower.)
//!
//! Guarantees:
//! - bytes reach the connection in the order they were written, and a flush is `Ready`
//!   only once every byte written before it was handed to the connection and the
//!   connection was flushed;
//! - a flush waits for nothing but one turn of the worker: its waker is handed to the
//!   scheduler before `Pending` is returned (outside a runtime it is woken at once), so
//!   a lone call's response leaves as soon as the worker has nothing else to run;
//! - the buffer holds at most [`LIMIT`] bytes; a write that would not fit first sends
//!   what is buffered, and a write of [`LIMIT`] or more bytes goes to the connection
//!   without a copy (large values, snapshots);
//! - shutdown sends what is buffered first;
//! - a connection's buffer memory is released once it is written out, if it grew past
//!   [`KEEP`] bytes, so idle connections hold little.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The most bytes buffered before they are sent; also the size from which a write
/// bypasses the buffer.
pub const LIMIT: usize = 64 * 1024;

/// Buffer capacity kept between batches; a larger buffer is released once sent.
pub const KEEP: usize = 8 * 1024;

/// A connection whose writes are coalesced (see the module docs).
pub struct Coalesce<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already handed to `inner`.
    sent: usize,
    /// The turn the pending flush waits for, once it has asked for one.
    turn: Option<Arc<Turn>>,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Coalesce<S> {
        Coalesce {
            inner,
            buf: Vec::new(),
            sent: 0,
            turn: None,
        }
    }
}

/// The worker's next turn for a task: woken the way `tokio::task::yield_now` is, and
/// remembering that it was, so wakes by anything else before it do not end the wait.
struct Turn {
    came: AtomicBool,
    task: Waker,
}

impl Turn {
    /// Asks the scheduler to wake the task of `cx` once the worker has run the tasks it
    /// has and polled for I/O (outside a runtime: at once).
    fn wait(cx: &mut Context<'_>) -> Arc<Turn> {
        let turn = Arc::new(Turn {
            came: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(turn.clone());
        let mut turn_cx = Context::from_waker(&waker);
        // The first poll of `yield_now` hands the waker to the scheduler and is Pending.
        let _ = std::pin::pin!(tokio::task::yield_now()).poll(&mut turn_cx);
        turn
    }

    fn came(&self) -> bool {
        self.came.load(Ordering::Acquire)
    }
}

impl Wake for Turn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.came.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Hands the buffer to the connection; `Ready(Ok)` once it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.buf.capacity() > KEEP {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: sends the buffer if they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.buf.len() + len > LIMIT {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        ready!(this.poll_room(cx, len))?;
        if len >= LIMIT {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    /// `false`, although vectored writes are accepted: h2 sends a DATA payload of 256 B
    /// or more to a vectored connection as a slice of its own, and flushes before it
    /// takes the next frame, so the responses of a batch would each need a flush (and
    /// yield) of their own. To a connection that is not vectored it copies payloads
    /// under 1 KiB into its frame buffer, and a batch of small responses reaches this
    /// buffer in one flush (measured on each member under linearizable ranges at 1000
    /// clients: 0.22-0.24 sends per range with `true`, 0.08-0.10 with `false`).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.len() > this.sent {
            match &this.turn {
                None => {
                    // Let the calls already queued on this worker add their frames first.
                    this.turn = Some(Turn::wait(cx));
                    return Poll::Pending;
                }
                // Woken by a call's frames before the turn came: more may follow.
                Some(turn) if !turn.came() => return Poll::Pending,
                Some(_) => {}
            }
            ready!(this.poll_send(cx))?;
        }
        this.turn = None;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Connected> Connected for Coalesce<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A connection that records each write, takes at most `max` bytes per write and
    /// answers `Pending` (waking at once) while `stalls` is above zero.
    #[derive(Default)]
    struct Conn {
        writes: Vec<Vec<u8>>,
        max: Option<usize>,
        stalls: usize,
        flushes: usize,
        shut: bool,
    }

    impl Conn {
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }

        fn stall(&mut self, cx: &mut Context<'_>) -> bool {
            if self.stalls > 0 {
                self.stalls -= 1;
                cx.waker().wake_by_ref();
                return true;
            }
            false
        }
    }

    impl AsyncWrite for Conn {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stall(cx) {
                return Poll::Pending;
            }
            let n = self.max.map_or(data.len(), |m| m.min(data.len()));
            self.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    fn write(c: &mut Coalesce<Conn>, cx: &mut Context<'_>, data: &[u8]) -> usize {
        match Pin::new(c).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    /// Polls `poll_flush` until it is ready, as a task woken each time would.
    fn flush(c: &mut Coalesce<Conn>, cx: &mut Context<'_>) -> usize {
        for polls in 1..100 {
            if let Poll::Ready(r) = Pin::new(&mut *c).poll_flush(cx) {
                r.expect("flush");
                return polls;
            }
        }
        panic!("flush never completed");
    }

    #[test]
    fn a_batch_leaves_in_one_write_after_one_yield() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Conn::default());
        for part in [&b"one "[..], b"two ", b"three"] {
            assert_eq!(write(&mut c, &mut cx, part), part.len());
        }
        assert!(c.inner.writes.is_empty(), "nothing is sent before a flush");
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the yield wakes its own task"
        );
        // Frames written during the yield join the batch.
        write(&mut c, &mut cx, b" four");
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.inner.writes, vec![b"one two three four".to_vec()]);
        assert_eq!(c.inner.flushes, 1);
        // The next batch yields again; an empty flush does not.
        write(&mut c, &mut cx, b"five");
        assert_eq!(flush(&mut c, &mut cx), 2);
        assert_eq!(flush(&mut c, &mut cx), 1);
        assert_eq!(c.inner.bytes(), b"one two three fourfive");
    }

    #[test]
    fn large_writes_bypass_the_buffer_in_order() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Conn::default());
        write(&mut c, &mut cx, b"head");
        let big = vec![7u8; LIMIT];
        assert_eq!(write(&mut c, &mut cx, &big), LIMIT);
        assert_eq!(
            c.inner.writes.len(),
            2,
            "buffer first, then the large write"
        );
        assert_eq!(c.inner.writes[0], b"head");
        // A write that would overflow the buffer sends it first.
        let most = vec![1u8; LIMIT - 10];
        write(&mut c, &mut cx, &most);
        write(&mut c, &mut cx, &[2u8; 20]);
        flush(&mut c, &mut cx);
        let mut want = b"head".to_vec();
        want.extend(&big);
        want.extend(&most);
        want.extend([2u8; 20]);
        assert_eq!(c.inner.bytes(), want);
        assert_eq!(c.inner.writes.len(), 4);
    }

    #[test]
    fn partial_and_pending_writes_keep_every_byte_in_order() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let conn = Conn {
            max: Some(3),
            stalls: 2,
            ..Conn::default()
        };
        let mut c = Coalesce::new(conn);
        let mut want = Vec::new();
        for i in 0..50u8 {
            let part = vec![i; (i as usize % 7) + 1];
            write(&mut c, &mut cx, &part);
            want.extend(part);
        }
        let vectored = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        assert!(matches!(
            Pin::new(&mut c).poll_write_vectored(&mut cx, &vectored),
            Poll::Ready(Ok(4))
        ));
        want.extend(b"abcd");
        flush(&mut c, &mut cx);
        assert_eq!(c.inner.bytes(), want);
        assert!(c.inner.writes.iter().all(|w| w.len() <= 3));
        assert!(c.buf.is_empty() && c.sent == 0);
    }

    #[test]
    fn shutdown_sends_what_is_buffered_first() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Conn::default());
        write(&mut c, &mut cx, b"goaway");
        assert!(Pin::new(&mut c).poll_shutdown(&mut cx).is_ready());
        assert_eq!(c.inner.bytes(), b"goaway");
        assert!(c.inner.shut);
    }

    #[test]
    fn a_grown_buffer_is_released_once_sent() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Conn::default());
        write(&mut c, &mut cx, &vec![0u8; KEEP * 2]);
        flush(&mut c, &mut cx);
        assert_eq!(c.buf.capacity(), 0);
        write(&mut c, &mut cx, b"small");
        flush(&mut c, &mut cx);
        assert!(c.buf.capacity() > 0 && c.buf.capacity() <= KEEP);
    }

    /// As h2 does: each call's frames wake the connection's task, which writes them and
    /// flushes. The frames of calls queued behind the first still leave in one write.
    #[tokio::test(flavor = "current_thread")]
    async fn wakes_before_the_turn_do_not_end_the_batch() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tx.send(b"call0;".to_vec()).expect("send");
        let connection = tokio::spawn(async move {
            let mut c = Coalesce::new(Conn::default());
            let mut polls = 0;
            let mut frames = 0;
            std::future::poll_fn(|cx| {
                polls += 1;
                while let Poll::Ready(Some(frame)) = rx.poll_recv(cx) {
                    frames += 1;
                    write(&mut c, cx, &frame);
                }
                ready!(Pin::new(&mut c).poll_flush(cx)).expect("flush");
                if frames < 6 {
                    return Poll::Pending;
                }
                Poll::Ready(())
            })
            .await;
            (c, polls)
        });
        // Each call finishes in a task queued behind the connection's re-poll.
        fn finish(tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>, i: usize) {
            tokio::spawn(async move {
                tx.send(format!("call{i};").into_bytes()).expect("send");
                if i < 5 {
                    finish(tx, i + 1);
                }
            });
        }
        finish(tx, 1);
        let (c, polls) = connection.await.expect("connection task");
        assert_eq!(c.inner.writes.len(), 1, "{:?}", c.inner.writes);
        assert_eq!(c.inner.bytes(), b"call0;call1;call2;call3;call4;call5;");
        assert!(
            polls >= 6,
            "each call's frames woke the task before its turn ({polls} polls)"
        );
    }
}
