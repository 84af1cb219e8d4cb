//! A counting global allocator: each target checks that what it calls holds at most a small
//! constant plus a few bytes per input byte at any one time. libFuzzer's `-malloc_limit_mb`
//! catches one huge allocation; this catches many small ones that add up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Room for the constant part of any call: small next to the megabytes a bug would take.
pub const SLACK: usize = 64 * 1024;

/// Counts the bytes held while [`within`] runs; passes every call to `System`.
pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HELD: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn held(change: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        let now = HELD.fetch_add(change, Ordering::Relaxed) + change;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

// SAFETY: every call is passed to `System` unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        held(size(layout));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        held(size(layout));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        held(isize::try_from(new_size).unwrap_or(isize::MAX) - size(layout));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        held(-size(layout));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `work`, and panics (a finding) if it held more than [`SLACK`] plus `per_byte` bytes
/// for each of the input's `input_len` at any one time.
pub fn within<T>(what: &str, input_len: usize, per_byte: usize, work: impl FnOnce() -> T) -> T {
    HELD.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let out = work();
    COUNTING.store(false, Ordering::Relaxed);
    let peak = usize::try_from(PEAK.load(Ordering::Relaxed)).unwrap_or(0);
    let bound = SLACK + per_byte * input_len;
    assert!(
        peak <= bound,
        "{what} held {peak} bytes at its peak for {input_len} bytes of input (bound {bound})"
    );
    out
}
