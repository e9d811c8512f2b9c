//! Key and value generation for the writing workloads.
//!
//! Key number `n` of the key space is written big-endian into the low bytes of a
//! `key_size`-byte key (zero-padded on the left), so distinct numbers always give distinct
//! keys and all keys have exactly `key_size` bytes, as in etcd's tool.

use rand::{Rng, RngCore};

#[derive(Debug, Clone)]
pub struct KeyGen {
    size: usize,
    space: u64,
    sequential: bool,
    start: u64,
}

impl KeyGen {
    /// `space` must fit in `size` bytes (checked by `Cli::validate`).
    pub fn new(size: usize, space: u64, sequential: bool) -> Self {
        Self {
            size,
            space: space.max(1),
            sequential,
            start: 0,
        }
    }

    /// Sequential keys begin at number `start` instead of 0 (to add keys after a load).
    pub fn starting_at(mut self, start: u64) -> Self {
        self.start = start;
        self
    }

    /// The key for request number `idx`: `(start + idx) mod space` if sequential, else
    /// random.
    pub fn number(&self, idx: u64, rng: &mut impl Rng) -> u64 {
        if self.sequential {
            self.start.wrapping_add(idx) % self.space
        } else {
            rng.random_range(0..self.space)
        }
    }

    /// The bytes of key number `n` (taken modulo the key space).
    pub fn key(&self, n: u64) -> Vec<u8> {
        let n = n % self.space;
        let be = n.to_be_bytes();
        let mut k = vec![0u8; self.size];
        let take = self.size.min(be.len());
        k[self.size - take..].copy_from_slice(&be[be.len() - take..]);
        k
    }
}

/// A random value of `size` bytes (random so that no layer can compress it away).
pub fn value(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    rand::rng().fill_bytes(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        let g = KeyGen::new(8, 1000, true);
        assert_eq!(g.key(1), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(g.key(258), vec![0, 0, 0, 0, 0, 0, 1, 2]);
        let all: std::collections::HashSet<Vec<u8>> = (0..1000).map(|n| g.key(n)).collect();
        assert_eq!(all.len(), 1000);
        assert_eq!(g.key(1000), g.key(0));
        let wide = KeyGen::new(10, 5, false);
        assert_eq!(wide.key(4).len(), 10);
        let narrow = KeyGen::new(2, 65536, false);
        assert_eq!(narrow.key(65535), vec![255, 255]);
    }

    #[test]
    fn sequential_and_random_numbers_stay_in_space() {
        let mut rng = rand::rng();
        let s = KeyGen::new(8, 3, true);
        let seq: Vec<u64> = (0..6).map(|i| s.number(i, &mut rng)).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
        let from = KeyGen::new(8, 5, true).starting_at(3);
        let seq: Vec<u64> = (0..4).map(|i| from.number(i, &mut rng)).collect();
        assert_eq!(seq, vec![3, 4, 0, 1]);
        let r = KeyGen::new(8, 3, false);
        assert!((0..1000).all(|i| r.number(i, &mut rng) < 3));
        assert_eq!(value(256).len(), 256);
    }
}
