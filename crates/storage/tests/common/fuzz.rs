//! Shared by the fuzz tests that bound allocations (`wal_fuzz`, `etcd_wal`): a counting
//! global allocator and a fixed-seed xorshift64 PRNG. Including this module installs the
//! allocator for the whole test binary, so only those binaries include it (by `#[path]`,
//! not through `common`).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Records the largest single allocation made by a tracking thread since the last
/// [`reset`] (the harness's threads allocate too, and must not count).
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if TRACKED.with(|t| t.get()) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// A global allocator can only be written as an unsafe impl.
// SAFETY: every call is forwarded unchanged to the System allocator, whose contract is
// the one GlobalAlloc requires; `note` only reads a const-initialised thread-local and
// updates an atomic, so it neither allocates nor unwinds.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's guarantees for `layout` are passed on as they are.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System with `layout` (every allocation here does).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for dealloc, and the caller's guarantees for `new_size` pass on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts or stops counting this thread's allocations.
pub fn track(on: bool) {
    TRACKED.with(|t| t.set(on));
}

/// Forgets the largest allocation seen so far.
pub fn reset() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// The largest single allocation of a tracking thread since the last [`reset`].
pub fn largest() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

/// xorshift64 (13, 7, 17); the seed is used as given, so a failure reproduces from it.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Up to `max - 1` random bytes.
    pub fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}
