//! `Inflights`: the bounded window of append messages sent to a follower in the
//! replicate state and not yet acknowledged (flow control by count and bytes).

use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflights {
    /// (last index of the message, bytes of its entries), oldest first.
    queue: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    /// 0 = unlimited.
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Inflights {
        Inflights {
            queue: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    /// Records a message whose last entry is `index`.
    pub fn add(&mut self, index: u64, bytes: u64) {
        self.queue.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is `<= to` (acknowledged).
    pub fn free_le(&mut self, to: u64) {
        while let Some(&(i, b)) = self.queue.front() {
            if i > to {
                break;
            }
            self.bytes -= b;
            self.queue.pop_front();
        }
        if self.queue.is_empty() && self.queue.capacity() > 1024 {
            self.queue = VecDeque::new();
        }
    }

    /// Frees the oldest message (used when a heartbeat response shows the follower is
    /// alive but the window is stuck, e.g. after lost messages).
    pub fn free_first_one(&mut self) {
        if let Some(&(i, _)) = self.queue.front() {
            self.free_le(i);
        }
    }

    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_count || (self.max_bytes != 0 && self.bytes >= self.max_bytes)
    }

    pub fn count(&self) -> usize {
        self.queue.len()
    }

    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_by_count_and_bytes() {
        let mut f = Inflights::new(3, 0);
        f.add(1, 10);
        f.add(2, 10);
        assert!(!f.full());
        f.add(3, 10);
        assert!(f.full());
        f.free_le(2);
        assert_eq!(f.count(), 1);
        assert!(!f.full());
        let mut b = Inflights::new(100, 25);
        b.add(1, 10);
        b.add(2, 10);
        assert!(!b.full());
        b.add(3, 10);
        assert!(b.full());
        b.free_first_one();
        assert!(!b.full());
    }
}
