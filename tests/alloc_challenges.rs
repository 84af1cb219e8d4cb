//! Reading a rejection's `www-authenticate` challenges takes a small, constant amount of memory,
//! whatever the header's size: a raw `h2` stack lets an agent send 16 MiB of headers, and only
//! the bearer challenge's `error` is ever read.
//!
//! A counting global allocator keeps the bytes the measuring thread holds, and their peak, while
//! it measures; other tests' threads are not counted.
// The thread-locals are const already: clippy 1.96 says otherwise for Windows targets, whose
// `thread_local!` expands differently.
#![cfg_attr(windows, allow(clippy::missing_const_for_thread_local))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{HeaderMap, HeaderValue, StatusCode};
use tower_agent_session::{Error, Polykey, Rfc6750, SessionFailures};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed since the measure began (frees of older blocks make it
    /// go below zero).
    static HELD: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn held(change: i64) {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = HELD.try_with(|held| {
            let now = held.get() + change;
            held.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }
}

fn size(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

// SAFETY: every call is passed to `System` unchanged; counting touches only const-initialised
// thread locals, which never allocate.
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
        held(i64::try_from(new_size).unwrap_or(i64::MAX) - size(layout));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        held(-size(layout));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The most bytes this thread held at once while `work` ran, beyond what it held before.
fn peak_bytes<T>(work: impl FnOnce() -> T) -> (i64, T) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    COUNTING.with(|c| c.set(true));
    let out = work();
    COUNTING.with(|c| c.set(false));
    (PEAK.with(Cell::get), out)
}

const HEADER_LEN: usize = 4 * 1024 * 1024;
/// A small constant: far below the header, far above what reading a challenge needs.
const LIMIT: i64 = 64 * 1024;

/// `Bearer ` then `unit` repeated to about 4 MiB, then `tail`.
fn challenge(unit: &str, tail: &str) -> HeaderMap {
    let mut text = String::with_capacity(HEADER_LEN + 64);
    text.push_str("Bearer ");
    while text.len() < HEADER_LEN {
        text.push_str(unit);
    }
    text.push_str(tail);
    let mut headers = HeaderMap::new();
    headers.insert(
        "www-authenticate",
        HeaderValue::from_str(&text).expect("visible ASCII"),
    );
    headers
}

#[test]
fn a_4_mib_challenge_is_read_in_constant_memory() {
    let cases = [
        // Millions of empty auth-params.
        ("a=,", "error=invalid_token", Some(true)),
        // Long names and values, quoted ones with escapes.
        (
            r#"name_that_goes_on="a value \" with \\ escapes", "#,
            r#"error="invalid_token""#,
            Some(true),
        ),
        // One huge quoted `error`: not a code this crate knows.
        ("", "", None),
        // Millions of challenges of another scheme.
        ("Basic realm=x, Bearer, ", "", Some(false)),
        // Junk.
        ("=\"=,,\" ", "", None),
    ];
    for (unit, tail, expect_invalid) in cases {
        let headers = if unit.is_empty() {
            let mut quoted = String::from(r#"error=""#);
            quoted.push_str(&"x".repeat(HEADER_LEN));
            quoted.push('"');
            challenge(" ", &quoted)
        } else {
            challenge(unit, tail)
        };
        let (peak, failure) = peak_bytes(|| Error::from_parts(StatusCode::UNAUTHORIZED, &headers));
        eprintln!("{unit:?}: peak {peak} bytes, {failure:?}");
        assert!(
            peak < LIMIT,
            "{unit:?}: reading a {HEADER_LEN}-byte challenge held {peak} bytes at its peak"
        );
        match expect_invalid {
            Some(true) => assert!(matches!(failure, Some(Error::TokenInvalid)), "{unit:?}"),
            Some(false) => assert!(matches!(failure, Some(Error::TokenNotProvided)), "{unit:?}"),
            None => {}
        }
        for failures in [&Rfc6750 as &dyn SessionFailures, &Polykey] {
            let (peak, _) =
                peak_bytes(|| failures.session_failure(StatusCode::UNAUTHORIZED, &headers));
            assert!(
                peak < LIMIT,
                "{failures:?}, {unit:?}: {peak} bytes at the peak"
            );
        }
    }
}

/// The measure can fail: a copy of the header shows.
#[test]
fn a_copy_of_the_header_is_seen() {
    let headers = challenge("a=,", "");
    let (peak, _) = peak_bytes(|| {
        headers
            .get("www-authenticate")
            .map(|v| v.as_bytes().to_vec())
    });
    assert!(peak >= HEADER_LEN as i64, "{peak}");
}
