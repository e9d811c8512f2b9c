//! How the member's allocator (mimalloc, `main.rs`'s global allocator) gives freed
//! memory back to the kernel.
//!
//! mimalloc 3 keeps pages it no longer uses committed for `purge_delay` milliseconds,
//! 1000 by default, in case they are wanted again. A member serving large responses
//! allocates and frees tens of MiB per request (the rows, their protobuf copy, the
//! encoded frame), mostly on different threads, so a second's worth of freed buffers
//! stayed resident: `tests/hostile_load.rs`'s txns of ranges over every key, under a
//! 32 MiB in-flight response budget, grew the member's peak RSS by 255-370 MiB, of
//! which about 105-135 MiB is what the responses in flight need (measured with
//! `MIMALLOC_PURGE_DELAY` at 0-5 ms).
//!
//! Returning memory too promptly costs CPU instead: at 10 ms, a leader taking puts from
//! 1000 clients gave pages back and faulted them in again all the time (`madvise`,
//! page faults and zeroing were about 5% of its samples), and the members used 57 ms
//! of CPU per 1000 puts against 50 ms at 100 ms or at 1000 ms (`bench/ab_cpu.sh`,
//! `bench/PROFILE.md`). At 100 ms the hostile-load peaks grow by 119-138 MiB against
//! 80-88 MiB at 10 ms, well under their bounds; at 1000 ms they failed one.
//!
//! Guarantee: [`return_freed_memory_promptly`] sets the delay to [`PURGE_DELAY_MS`]
//! unless the operator set it (`MIMALLOC_PURGE_DELAY`, or its older name
//! `MIMALLOC_RESET_DELAY`, in any case, as mimalloc reads them), whose value then
//! stands. mimalloc has no timer: it purges at its next call after the delay, so under
//! load "about 100 ms".

use std::os::raw::{c_int, c_long};

/// The purge delay the member runs with: a tenth of mimalloc 3's default (see the
/// module docs for what 10 ms cost and what 100 ms costs).
pub const PURGE_DELAY_MS: c_long = 100;

/// `mi_option_purge_delay`'s place in `mi_option_t` (`mimalloc.h`, the same in
/// mimalloc 2 and 3); a unit test checks it names the option whose default is 1000 ms.
const MI_OPTION_PURGE_DELAY: c_int = 15;

#[allow(unsafe_code)]
mod ffi {
    use std::os::raw::{c_int, c_long};

    // mimalloc's C API, linked in by the `mimalloc` crate (`libmimalloc-sys`).
    extern "C" {
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
        fn mi_option_set(option: c_int, value: c_long);
    }

    #[cfg(test)]
    pub fn option(option: c_int) -> c_long {
        // SAFETY: reads one entry of mimalloc's option table; any `mi_option_t` value
        // below `_mi_option_last` is valid, and the callers pass constants that are.
        unsafe { mi_option_get(option) }
    }

    /// # Safety
    /// No other thread may be running (mimalloc's setter is not thread-safe).
    pub unsafe fn set_option(option: c_int, value: c_long) {
        // SAFETY: stores one entry of the option table (same bounds as above); the
        // caller guarantees no other thread reads it meanwhile.
        unsafe { mi_option_set(option, value) }
    }
}

// The C library the declarations above resolve to.
use mimalloc as _;

/// Whether the environment sets the purge delay for mimalloc itself.
fn operator_set_it() -> bool {
    std::env::vars_os().any(|(k, _)| {
        k.to_str().is_some_and(|k| {
            k.eq_ignore_ascii_case("MIMALLOC_PURGE_DELAY")
                || k.eq_ignore_ascii_case("MIMALLOC_RESET_DELAY")
        })
    })
}

/// Makes mimalloc return freed pages after [`PURGE_DELAY_MS`] instead of a second,
/// unless the operator set the delay (see the module docs).
///
/// # Safety
/// Call before the process starts any other thread: mimalloc's option setter is not
/// thread-safe (the member calls it first thing in `main`).
#[allow(unsafe_code)]
pub unsafe fn return_freed_memory_promptly() {
    if operator_set_it() {
        return;
    }
    // SAFETY: the caller guarantees no other thread runs yet.
    unsafe { ffi::set_option(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if operator_set_it() {
            // The operator's value stands; nothing of ours to check.
            return;
        }
        // Index 15 is the option whose default is mimalloc 3's 1000 ms purge delay:
        // a mimalloc whose option table moved fails here rather than the member
        // silently changing another option. (Setting it is not thread-safe, so this
        // test only reads; tests/hostile_load.rs shows the member's setting at work.)
        assert_eq!(ffi::option(MI_OPTION_PURGE_DELAY), 1000);
    }
}
