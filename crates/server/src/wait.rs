//! Rendezvous between a request and the apply loop.
//!
//! [`Wait`]: a proposer registers its request ID before proposing and awaits the
//! result the apply loop delivers for that ID. An ID the apply loop reports that no
//! one waits for (a proposal from another member, or one whose caller gave up) is
//! simply dropped. A [`Registration`] removes its ID when it is dropped, on every way
//! out of the wait, including a caller that gave up mid-wait (a deadline, a closed
//! connection), so the IDs of proposals that never apply do not pile up. [`AppliedIndex`]: readers wait until the apply loop has applied up
//! to an index (a linearizable read waits for its ReadIndex this way).
//!
//! Guarantees: a waiter is woken exactly once, outside the map's lock; [`Wait::fail_all`]
//! wakes every waiter (member stopping) so no request hangs; a registration that
//! replaced another of the same ID is never forgotten by the dropping of the one it
//! replaced (that one is woken with an error); waiting on [`AppliedIndex`] returns as
//! soon as the index is reached, including when it already was.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::sync::oneshot::error::RecvError;
use tokio::sync::{oneshot, watch};

/// Pending requests by ID.
#[derive(Debug)]
pub struct Wait<T> {
    pending: Mutex<Pending<T>>,
}

/// The waiters, each with the number of its registration, so that a registration
/// removes its own entry only (see [`Registration`]'s `Drop`).
#[derive(Debug)]
struct Pending<T> {
    by_id: HashMap<u64, (u64, oneshot::Sender<T>)>,
    registered: u64,
}

impl<T> Default for Wait<T> {
    fn default() -> Self {
        Wait {
            pending: Mutex::new(Pending {
                by_id: HashMap::new(),
                registered: 0,
            }),
        }
    }
}

impl<T> Wait<T> {
    /// Registers `id`; awaiting the registration yields the value given to
    /// [`Wait::trigger`], or an error if the member stops. Dropping it forgets `id`.
    /// A second registration of an ID replaces the first, which is woken with an error.
    pub fn register(&self, id: u64) -> Registration<'_, T> {
        let (tx, rx) = oneshot::channel();
        let (number, replaced) = {
            let mut pending = self.lock();
            pending.registered += 1;
            let number = pending.registered;
            (number, pending.by_id.insert(id, (number, tx)))
        };
        // The replaced waiter is woken (with an error) outside the lock.
        drop(replaced);
        Registration {
            wait: self,
            id,
            number,
            rx,
        }
    }

    /// Delivers `value` to the waiter of `id`, if any; returns whether there was one.
    pub fn trigger(&self, id: u64, value: T) -> bool {
        // Taken out first, so the waiter is woken after the lock is released.
        let waiter = self.lock().by_id.remove(&id);
        match waiter {
            // A receiver dropped since (caller gave up) is not an error.
            Some((_, tx)) => tx.send(value).is_ok(),
            None => false,
        }
    }

    /// Whether someone waits for `id` (on this member).
    pub fn is_waiting(&self, id: u64) -> bool {
        self.lock().by_id.contains_key(&id)
    }

    /// Wakes every waiter with an error (their senders are dropped).
    pub fn fail_all(&self) {
        let waiters = std::mem::take(&mut self.lock().by_id);
        drop(waiters);
    }

    /// Number of requests waiting.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending<T>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A waiter registered with [`Wait::register`]: a future of its result, whose ID the
/// wait forgets when it is dropped (unless a later registration of the ID replaced it).
#[derive(Debug)]
pub struct Registration<'a, T> {
    wait: &'a Wait<T>,
    id: u64,
    /// Which registration of `id` this is.
    number: u64,
    rx: oneshot::Receiver<T>,
}

impl<T> Future for Registration<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx)
    }
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        let mut pending = self.wait.lock();
        if pending.by_id.get(&self.id).map(|(n, _)| *n) == Some(self.number) {
            pending.by_id.remove(&self.id);
        }
    }
}

/// The highest applied Raft index, observable by waiters.
#[derive(Debug)]
pub struct AppliedIndex {
    tx: watch::Sender<u64>,
}

impl AppliedIndex {
    pub fn new(start: u64) -> AppliedIndex {
        AppliedIndex {
            tx: watch::Sender::new(start),
        }
    }

    /// Records that everything up to `index` is applied (never moves backwards).
    pub fn advance(&self, index: u64) {
        self.tx.send_if_modified(|cur| {
            if index > *cur {
                *cur = index;
                true
            } else {
                false
            }
        });
    }

    pub fn get(&self) -> u64 {
        *self.tx.borrow()
    }

    /// Waits until the applied index is at least `index`.
    pub async fn wait_for(&self, index: u64) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, which outlives this borrow, so this cannot fail.
        let _ = rx.wait_for(|cur| *cur >= index).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_reaches_the_registered_waiter_once() {
        let w: Wait<&str> = Wait::default();
        let rx = w.register(7);
        assert!(!w.trigger(8, "other"));
        assert!(w.trigger(7, "done"));
        assert!(!w.trigger(7, "again"));
        assert_eq!(rx.await.unwrap(), "done");
        assert!(w.is_empty());
    }

    #[test]
    fn a_dropped_registration_is_forgotten() {
        let w: Wait<u32> = Wait::default();
        let kept = w.register(1);
        drop(w.register(2));
        assert!(w.is_waiting(1));
        assert!(!w.is_waiting(2));
        drop(kept);
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn a_replaced_registration_does_not_forget_its_successor() {
        let w: Wait<&str> = Wait::default();
        let first = w.register(5);
        let second = w.register(5);
        // The first is woken with an error, and dropping it leaves the second waiting.
        assert!(first.await.is_err());
        assert!(w.is_waiting(5));
        assert!(w.trigger(5, "done"));
        assert_eq!(second.await.unwrap(), "done");
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn fail_all_wakes_waiters_with_an_error() {
        let w: Wait<u32> = Wait::default();
        let a = w.register(1);
        let b = w.register(2);
        w.fail_all();
        assert!(a.await.is_err());
        assert!(b.await.is_err());
    }

    #[tokio::test]
    async fn applied_index_wakes_readers() {
        let applied = Arc::new(AppliedIndex::new(3));
        applied.wait_for(2).await; // already reached
        let a2 = applied.clone();
        let reader = tokio::spawn(async move { a2.wait_for(10).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!reader.is_finished());
        applied.advance(9);
        applied.advance(5); // ignored: never backwards
        assert_eq!(applied.get(), 9);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!reader.is_finished());
        applied.advance(10);
        tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("reader woke")
            .unwrap();
    }
}
