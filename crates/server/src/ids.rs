//! Member, cluster and request IDs, derived exactly as etcd derives them so that
//! `etcdctl member list` and every response header show the IDs an etcd cluster
//! started with the same flags would show.
//!
//! - member ID: the first 8 bytes, big-endian, of SHA-1 over the member's peer URLs
//!   (sorted, concatenated with no separator) followed by the cluster token;
//! - cluster ID: the same over the sorted member IDs, each as 8 bytes big-endian;
//! - request IDs: unique across the cluster without coordination: the low 16 bits of
//!   the member ID, then 40 bits of the start time in milliseconds, then an 8-bit
//!   counter, where the time and counter form one 48-bit number that only increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

fn first_8_be(bytes: &[u8]) -> u64 {
    let digest = Sha1::digest(bytes);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

/// The ID of a member with these peer URLs in a cluster started with `token`.
pub fn member_id<S: AsRef<str>>(peer_urls: &[S], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
    urls.sort_unstable();
    let mut buf = Vec::new();
    for url in urls {
        buf.extend_from_slice(url.as_bytes());
    }
    buf.extend_from_slice(token.as_bytes());
    first_8_be(&buf)
}

/// The ID of a cluster made of these members (order does not matter).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut buf = Vec::with_capacity(8 * ids.len());
    for id in ids {
        buf.extend_from_slice(&id.to_be_bytes());
    }
    first_8_be(&buf)
}

const SUFFIX_BITS: u32 = 48;
const COUNTER_BITS: u32 = 8;
const TIME_BITS: u32 = SUFFIX_BITS - COUNTER_BITS;

fn low_bits(x: u64, n: u32) -> u64 {
    x & ((1u64 << n) - 1)
}

/// Generates request IDs (and default lease IDs) unique in the cluster: two members
/// differ in the prefix (low 16 bits of their IDs), and one member's restarts differ
/// in the start time, which is in the suffix.
#[derive(Debug)]
pub struct RequestIdGen {
    prefix: u64,
    suffix: AtomicU64,
}

impl RequestIdGen {
    /// A generator for `member_id` seeded with the current wall-clock time.
    pub fn new(member_id: u64) -> RequestIdGen {
        // A clock before 1970 would only make IDs less spread; it cannot break
        // uniqueness within this process, so 0 is an acceptable fallback.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        RequestIdGen::with_start(member_id, millis)
    }

    /// A generator with an explicit start time (milliseconds since the epoch).
    pub fn with_start(member_id: u64, unix_millis: u64) -> RequestIdGen {
        RequestIdGen {
            prefix: low_bits(member_id, 16) << SUFFIX_BITS,
            suffix: AtomicU64::new(low_bits(unix_millis, TIME_BITS) << COUNTER_BITS),
        }
    }

    /// The next ID; never 0 in practice and never repeated by this generator.
    pub fn next_id(&self) -> u64 {
        let suffix = self.suffix.fetch_add(1, Ordering::Relaxed) + 1;
        self.prefix | low_bits(suffix, SUFFIX_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_matches_etcd() {
        assert_eq!(
            member_id(&["http://127.0.0.1:2380"], "cluster3"),
            16406310065595058827
        );
    }

    #[test]
    fn cluster_id_matches_etcd() {
        let a = member_id(&["http://127.0.0.1:2380"], "cluster3");
        let b = member_id(&["http://127.0.0.1:22380"], "cluster3");
        let c = member_id(&["http://127.0.0.1:32380"], "cluster3");
        assert_eq!(cluster_id(&[a, b, c]), 6857150283879729890);
        // Order of the members does not matter.
        assert_eq!(cluster_id(&[c, a, b]), 6857150283879729890);
    }

    #[test]
    fn member_id_sorts_urls() {
        let x = member_id(&["http://b:1", "http://a:1"], "t");
        let y = member_id(&["http://a:1", "http://b:1"], "t");
        assert_eq!(x, y);
        assert_ne!(x, member_id(&["http://a:1", "http://b:1"], "u"));
    }

    #[test]
    fn request_ids_carry_member_bits_and_increase() {
        let gen = RequestIdGen::with_start(0xABCD_1234, 1_000);
        let first = gen.next_id();
        let second = gen.next_id();
        assert_eq!(first >> 48, 0x1234);
        assert_eq!(second, first + 1);
        assert_eq!(first & 0xFF, 1);
        assert_eq!((first >> 8) & ((1 << 40) - 1), 1_000);
    }

    #[test]
    fn request_id_counter_overflows_into_time_not_prefix() {
        let gen = RequestIdGen::with_start(7, (1 << 40) - 1);
        let mut last = 0;
        for _ in 0..300 {
            last = gen.next_id();
            assert_eq!(last >> 48, 7);
        }
        // The suffix started at 2^48 - 256 and wrapped within its 48 bits: 300 - 256.
        assert_eq!(last & ((1 << 48) - 1), 44);
    }
}
