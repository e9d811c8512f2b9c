//! The in-flight response budget: a bound on the bytes of range results the member
//! holds at once (`--max-inflight-response-bytes`), so many clients ranging over a
//! large keyspace without a limit slow down, then get an error, instead of growing
//! the member's memory until it is killed.
//!
//! Guarantees:
//! - the bytes charged by all live [`Held`]s never exceed the limit;
//! - a response alone larger than the limit is refused at once with
//!   [`EtcdError::ResponseTooLarge`] (`skiff: response is larger than
//!   --max-inflight-response-bytes; use a limit`, code ResourceExhausted): it could
//!   never be served, and the client must page;
//! - a response that fits but finds the budget taken by others waits (holding
//!   nothing, so waiters cannot deadlock each other) until it fits or its deadline
//!   passes, then is refused with etcd's [`EtcdError::TooManyRequests`]
//!   (`etcdserver: too many requests`, code ResourceExhausted);
//! - the uncontended path reserves in chunks of [`CHUNK`] bytes, so a small range
//!   costs one lock to reserve and one to release, and no copy of its data.
//!
//! The caller reads in one of [`READERS`] slots ([`ResponseBudget::reader`]: few
//! threads allocate responses, so memory freed by the encoder is reused rather than
//! cached in many threads' allocator heaps) and charges rows as it reads them
//! ([`Held::charge`], which never waits); when a charge fails for lack of room, it
//! drops what it held, measures the whole response
//! ([`skiff_storage::mvcc::KvStore::range_cost`]), leaves its slot, waits for that
//! much ([`ResponseBudget::reserve_async`]) and reads again. A [`Held`] returns its bytes when
//! dropped: `server/kv.rs` shares it among the response's values (so the bytes stay
//! held until gRPC has encoded the response) and hands it to [`keep_until_sent`], so
//! on gRPC ([`holding_until_sent`], called by the client port's front) they stay held until
//! the encoded response has been written out but for HTTP/2's send buffer: a client
//! that reads slowly keeps its response's bytes, and so slows the others, instead of
//! letting encoded responses pile up. Memory: while a response is encoded its rows
//! and its encoding both exist, so the member's RSS grows by at most about twice the
//! limit (plus one row per concurrent reader) under any number of ranging clients.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use skiff_api::EtcdError;

tokio::task_local! {
    /// The holdings of the responses the current gRPC call returns.
    static SENDING: Arc<Mutex<Vec<Arc<Held>>>>;
}

/// Keeps `held` until the current gRPC call's response body is done (no effect
/// outside [`holding_until_sent`], e.g. on the JSON gateway).
pub fn keep_until_sent(held: &Arc<Held>) {
    let _ = SENDING.try_with(|s| {
        s.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(held.clone())
    });
}

/// Runs a gRPC call's handler, and returns with its response the holdings it passed
/// to [`keep_until_sent`]: the client port's front (`crate::front`) keeps them in the
/// response body, which the connection (`skiff_h2`, or hyper for HTTP/1.1) drops
/// once the body's last frame is in its write buffer (after the client's flow-control
/// window let the data out).
pub async fn holding_until_sent<F: Future>(handler: F) -> (F::Output, Vec<Arc<Held>>) {
    let cell = Arc::new(Mutex::new(Vec::new()));
    let out = SENDING.scope(cell.clone(), handler).await;
    let held = std::mem::take(&mut *cell.lock().unwrap_or_else(|p| p.into_inner()));
    (out, held)
}

/// Bytes reserved from the shared budget at a time.
pub const CHUNK: u64 = 1 << 20;

/// Range reads that build responses at once ([`ResponseBudget::reader`]).
pub const READERS: usize = 4;

/// The member's budget of in-flight response bytes.
#[derive(Debug)]
pub struct ResponseBudget {
    limit: u64,
    /// How long a response may wait for room before `too many requests`.
    wait: Duration,
    used: Mutex<u64>,
    freed: Condvar,
    /// Threads waiting on `freed`, counted under `used`'s lock: a `Condvar`'s notify is
    /// a futex syscall even with no waiter, and every response gives bytes back (twice:
    /// trimmed when built, the rest when sent), which made these notifies half of a
    /// member's futex calls under a linearizable range load (`bench/PROFILE.md`).
    sleepers: AtomicUsize,
    /// Wakes async waiters ([`ResponseBudget::reserve_async`]) when bytes come back.
    freed_async: tokio::sync::Notify,
    /// Range reads running at once: few threads build responses, so the allocator's
    /// per-thread caches of freed response memory stay few.
    readers: tokio::sync::Semaphore,
}

impl ResponseBudget {
    /// A budget of `limit` bytes (0: unlimited) whose waiters give up after `wait`.
    pub fn new(limit: u64, wait: Duration) -> Arc<ResponseBudget> {
        Arc::new(ResponseBudget {
            limit: if limit == 0 { u64::MAX } else { limit },
            wait,
            used: Mutex::new(0),
            freed: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            freed_async: tokio::sync::Notify::new(),
            readers: tokio::sync::Semaphore::new(READERS),
        })
    }

    /// A slot to read a response in (at most [`READERS`] at once), waiting until
    /// `deadline` (`too many requests`).
    pub async fn reader(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, EtcdError> {
        tokio::time::timeout_at(deadline.into(), self.readers.acquire())
            .await
            .map_err(|_| EtcdError::TooManyRequests)?
            .map_err(|_| EtcdError::Stopped)
    }

    /// [`ResponseBudget::reserve`] for async callers (waiting without a thread).
    pub async fn reserve_async(
        self: &Arc<Self>,
        bytes: u64,
        deadline: Instant,
    ) -> Result<Held, EtcdError> {
        if bytes > self.limit {
            return Err(EtcdError::ResponseTooLarge);
        }
        loop {
            let notified = self.freed_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut used = self.lock();
                if *used + bytes <= self.limit {
                    *used += bytes;
                    return Ok(Held {
                        budget: self.clone(),
                        reserved: bytes,
                        charged: 0,
                        wanted: 0,
                    });
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(EtcdError::TooManyRequests);
            }
        }
    }

    /// The limit in bytes (`u64::MAX` when unlimited).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now by all responses.
    pub fn used(&self) -> u64 {
        *self.lock()
    }

    /// How long a response may wait for room.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty holding, to charge rows against as they are read.
    pub fn hold(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            reserved: 0,
            charged: 0,
            wanted: 0,
        }
    }

    /// A holding of `bytes`, waiting until they fit or `deadline` passes
    /// (`too many requests`); `response too large` at once if they never can.
    pub fn reserve(self: &Arc<Self>, bytes: u64, deadline: Instant) -> Result<Held, EtcdError> {
        if bytes > self.limit {
            return Err(EtcdError::ResponseTooLarge);
        }
        let mut used = self.lock();
        while *used + bytes > self.limit {
            let now = Instant::now();
            if now >= deadline {
                return Err(EtcdError::TooManyRequests);
            }
            // Counted and uncounted while holding the lock (the wait gives it back
            // before it returns), so a giver that sees no sleeper leaves a `used` this
            // thread reads before it would sleep.
            self.sleepers.fetch_add(1, Ordering::Relaxed);
            used = self
                .freed
                .wait_timeout(used, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
        *used += bytes;
        Ok(Held {
            budget: self.clone(),
            reserved: bytes,
            charged: 0,
            wanted: 0,
        })
    }

    /// Takes up to `bytes` (at least `min`) without waiting; how many were taken.
    fn try_take(&self, min: u64, bytes: u64) -> Option<u64> {
        let mut used = self.lock();
        let room = self.limit - *used;
        if room < min {
            return None;
        }
        let take = bytes.min(room);
        *used += take;
        Some(take)
    }

    fn give_back(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let sleepers = {
            let mut used = self.lock();
            *used -= bytes;
            self.sleepers.load(Ordering::Relaxed)
        };
        if sleepers > 0 {
            self.freed.notify_all();
        }
        self.freed_async.notify_waiters();
    }
}

/// Bytes one response holds of the budget; returned when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<ResponseBudget>,
    reserved: u64,
    charged: u64,
    /// What the response needed when a charge last failed.
    wanted: u64,
}

impl Held {
    /// Charges `bytes` more of the response, reserving another chunk when needed,
    /// never waiting: `response too large` when the response outgrows the whole
    /// budget, `too many requests` when others hold the room it needs now (then
    /// [`Held::wanted`] says how much it needed).
    pub fn charge(&mut self, bytes: u64) -> Result<(), EtcdError> {
        let need = self.charged + bytes;
        if need > self.budget.limit {
            self.wanted = need;
            return Err(EtcdError::ResponseTooLarge);
        }
        if need > self.reserved {
            let missing = need - self.reserved;
            match self.budget.try_take(missing, missing.max(CHUNK)) {
                Some(got) => self.reserved += got,
                None => {
                    self.wanted = need;
                    return Err(EtcdError::TooManyRequests);
                }
            }
        }
        self.charged = need;
        Ok(())
    }

    /// The budget's limit.
    pub fn limit(&self) -> u64 {
        self.budget.limit
    }

    /// Bytes charged so far.
    pub fn charged(&self) -> u64 {
        self.charged
    }

    /// What the response needed when a charge last failed (0 if none did).
    pub fn wanted(&self) -> u64 {
        self.wanted
    }

    /// Returns the reserved bytes not charged (once the response is complete).
    pub fn trim(&mut self) {
        let spare = self.reserved - self.charged;
        self.reserved = self.charged;
        self.budget.give_back(spare);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn charges_within_the_limit_and_returns_bytes_on_drop() {
        let b = ResponseBudget::new(4 * MIB, Duration::from_millis(10));
        let mut h = b.hold();
        h.charge(100).unwrap();
        // A whole chunk is reserved for the first row.
        assert_eq!(b.used(), MIB);
        h.charge(MIB).unwrap();
        assert_eq!(h.charged(), MIB + 100);
        h.trim();
        assert_eq!(b.used(), MIB + 100);
        drop(h);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_response_larger_than_the_budget_is_refused_at_once() {
        let b = ResponseBudget::new(4 * MIB, Duration::from_secs(60));
        let mut h = b.hold();
        h.charge(3 * MIB).unwrap();
        assert_eq!(h.charge(2 * MIB), Err(EtcdError::ResponseTooLarge));
        assert_eq!(h.wanted(), 5 * MIB);
        let t = Instant::now();
        assert_eq!(
            b.reserve(5 * MIB, t + Duration::from_secs(60)).unwrap_err(),
            EtcdError::ResponseTooLarge
        );
        assert!(t.elapsed() < Duration::from_secs(1), "must not wait");
    }

    #[test]
    fn contention_fails_the_charge_then_waits_for_room_until_the_deadline() {
        let b = ResponseBudget::new(4 * MIB, Duration::from_millis(50));
        let other = b.reserve(3 * MIB, Instant::now()).unwrap();
        let mut h = b.hold();
        assert_eq!(h.charge(2 * MIB), Err(EtcdError::TooManyRequests));
        assert_eq!(h.wanted(), 2 * MIB);
        drop(h);
        // Waiting for 2 MiB while 3 of 4 are held: refused at the deadline.
        let t = Instant::now();
        let err = b
            .reserve(2 * MIB, t + Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(err, EtcdError::TooManyRequests);
        assert!(t.elapsed() >= Duration::from_millis(100));
        // Room freed by another thread wakes the waiter.
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || {
            b2.reserve(2 * MIB, Instant::now() + Duration::from_secs(10))
                .map(|h| h.reserved)
        });
        std::thread::sleep(Duration::from_millis(50));
        let freed = Instant::now();
        drop(other);
        assert_eq!(waiter.join().unwrap(), Ok(2 * MIB));
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "the waiter was woken by the give-back, not by its deadline"
        );
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn holdings_never_exceed_the_limit_under_concurrency() {
        let b = ResponseBudget::new(8 * MIB, Duration::from_secs(5));
        let peak = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let b = b.clone();
                let peak = peak.clone();
                std::thread::spawn(move || {
                    for round in 0..50u64 {
                        let size = (1 + (i + round) % 3) * MIB;
                        let h = b
                            .reserve(size, Instant::now() + Duration::from_secs(5))
                            .expect("fits eventually");
                        let used = b.used();
                        let mut p = peak.lock().unwrap();
                        *p = (*p).max(used);
                        drop(p);
                        drop(h);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(*peak.lock().unwrap() <= 8 * MIB);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn async_waiters_wake_when_bytes_come_back_or_give_up() {
        let b = ResponseBudget::new(4 * MIB, Duration::from_secs(10));
        let other = b.reserve(3 * MIB, Instant::now()).unwrap();
        let t = Instant::now();
        let err = b
            .reserve_async(2 * MIB, t + Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err, EtcdError::TooManyRequests);
        assert!(t.elapsed() >= Duration::from_millis(100));
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            b2.reserve_async(2 * MIB, Instant::now() + Duration::from_secs(10))
                .await
                .map(|h| h.reserved)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(other);
        assert_eq!(waiter.await.unwrap(), Ok(2 * MIB));
        assert_eq!(
            b.reserve_async(5 * MIB, Instant::now()).await.unwrap_err(),
            EtcdError::ResponseTooLarge
        );
        // Reader slots: a fifth waits for one of four to be released.
        let slots: Vec<_> = futures_slots(&b).await;
        assert_eq!(
            b.reader(Instant::now() + Duration::from_millis(20))
                .await
                .unwrap_err(),
            EtcdError::TooManyRequests
        );
        drop(slots);
        assert!(b.reader(Instant::now()).await.is_ok());
    }

    async fn futures_slots(b: &ResponseBudget) -> Vec<tokio::sync::SemaphorePermit<'_>> {
        let mut v = Vec::new();
        for _ in 0..READERS {
            v.push(
                b.reader(Instant::now() + Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        v
    }

    #[test]
    fn zero_means_unlimited() {
        let b = ResponseBudget::new(0, Duration::from_millis(1));
        let mut h = b.hold();
        h.charge(1 << 40).unwrap();
    }
}
