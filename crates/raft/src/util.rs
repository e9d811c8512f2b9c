//! Small helpers shared by the log and the node.

use crate::types::Entry;

/// Truncates `ents` so their total size is at most `max` bytes, keeping at least one.
pub fn limit_size(ents: &mut Vec<Entry>, max: u64) {
    if ents.len() <= 1 {
        return;
    }
    let mut size = 0u64;
    let mut keep = 0;
    for e in ents.iter() {
        size += e.size();
        if keep > 0 && size > max {
            break;
        }
        keep += 1;
    }
    ents.truncate(keep);
}

/// A small deterministic PRNG (xorshift64*), so election timeouts are reproducible
/// from a seed without a clock or OS randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
