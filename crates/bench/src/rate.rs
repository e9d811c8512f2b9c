//! A global request-rate limiter shared by all clients of a run (`--rate`).
//!
//! It hands out evenly spaced start times, one per request, `1/rate` apart. A caller that
//! arrives late starts at once and the schedule continues from its start: idle time is not
//! banked, so a stalled server is never followed by a burst above the configured rate.
//! Guarantee: over any window, the number of requests started is at most
//! `rate × window + 1`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    /// `None` = unlimited.
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `rate` requests per second; 0 means unlimited.
    pub fn new(rate: u64) -> Self {
        let interval = (rate > 0).then(|| Duration::from_nanos((1_000_000_000 / rate).max(1)));
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Reserves the next slot for a caller arriving at `now`; returns when it may start.
    pub fn reserve(&self, now: Instant) -> Instant {
        let Some(interval) = self.interval else {
            return now;
        };
        // A poisoned lock only means another client panicked mid-update of an Instant,
        // which leaves a valid value behind; keep going.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match *next {
            Some(n) if n > now => n,
            _ => now,
        };
        *next = Some(slot + interval);
        slot
    }

    /// Waits until this caller may start its request.
    pub async fn acquire(&self) {
        if self.interval.is_none() {
            return;
        }
        let at = self.reserve(Instant::now());
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let l = RateLimiter::new(0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.reserve(t), t);
        }
    }

    #[test]
    fn slots_are_evenly_spaced() {
        let l = RateLimiter::new(10);
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(l.reserve(t0), t0);
        assert_eq!(l.reserve(t0), t0 + ms(100));
        assert_eq!(l.reserve(t0 + ms(50)), t0 + ms(200));
    }

    #[test]
    fn idle_time_is_not_banked() {
        let l = RateLimiter::new(10);
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        l.reserve(t0);
        // Arrive a whole second later: start now, and the next slot is one interval on,
        // not a burst of ten catch-up slots.
        assert_eq!(l.reserve(t0 + ms(1000)), t0 + ms(1000));
        assert_eq!(l.reserve(t0 + ms(1000)), t0 + ms(1100));
    }

    #[test]
    fn window_bound_holds() {
        let l = RateLimiter::new(1000);
        let t0 = Instant::now();
        let slots: Vec<Instant> = (0..5000).map(|_| l.reserve(t0)).collect();
        let in_first_second = slots.iter().filter(|&&s| s < t0 + ms(1000)).count();
        assert!(in_first_second <= 1001, "{in_first_second}");
        fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
    }

    #[tokio::test]
    async fn acquire_paces_real_time() {
        let l = RateLimiter::new(200);
        let start = Instant::now();
        for _ in 0..21 {
            l.acquire().await;
        }
        // 21 requests at 200/s: the last starts 100 ms after the first.
        assert!(
            start.elapsed() >= Duration::from_millis(95),
            "{:?}",
            start.elapsed()
        );
    }
}
