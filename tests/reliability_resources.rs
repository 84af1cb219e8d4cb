//! File descriptors and memory: 10 000 refreshing calls in one process, every refresh a new
//! token worth writing, leave the number of open file descriptors, the files in the session
//! directory, and the heap bytes in use where they were after a warm-up.
//!
//! One test in its own binary, so that nothing else opens files or allocates meanwhile. The
//! heap is counted by a global allocator that wraps the system's. The session directory is on a
//! memory filesystem where there is one, so that the run counts calls, not `fsync`s (the write
//! path is the same). `RELIABILITY_SCALE=n` multiplies the calls.
// Unix only: counts descriptors and threads in /proc/self (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;
use tower_agent_session::store::TokenStore as _;

use http::{HeaderValue, Request, Response, header};
use tower::{Layer as _, Service as _, ServiceExt as _};
use tower_agent_session::{Session, SessionLayer, Token};

mod reliability_common;
use reliability_common::{fast_tempdir, runtime, scaled};

/// Counts the heap bytes in use.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed to `System` unchanged; only the counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CALLS: u64 = 10_000;
const WARM_UP: u64 = 1_000;
/// Calls in flight at once: concurrent refreshes share writes, as in a busy client.
const CONCURRENCY: u64 = 8;
/// Heap growth tolerated over the run: the runtime's own bookkeeping (a blocking thread
/// started or retired) moves by a few KiB. A leak of even one token (a few dozen bytes) per
/// call would be ten times this.
const HEAP_SLACK: i64 = 128 * 1024;

fn open_fds() -> usize {
    // The directory's own descriptor is counted both times.
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    fds: usize,
    heap: i64,
    rss_kib: u64,
}

fn snapshot() -> Snapshot {
    Snapshot {
        fds: open_fds(),
        heap: LIVE.load(Ordering::Relaxed),
        rss_kib: rss_kib(),
    }
}

#[test]
fn ten_thousand_refreshing_calls_leak_no_descriptor_file_or_memory() {
    let calls = scaled(CALLS);
    let rt = runtime();
    let dir = fast_tempdir();
    // Watches the file (the default): the watch's reactions to every write are part of the
    // run.
    let session = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    let counter = Arc::new(AtomicU64::new(0));
    let agent = tower::service_fn(move |_: Request<()>| {
        // An opaque token, new on every call: no JWT `exp` to skip its write.
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let value = HeaderValue::try_from(format!("Bearer refreshed.{n}")).unwrap();
        async move {
            let mut response = Response::new(());
            response.headers_mut().insert(header::AUTHORIZATION, value);
            Ok::<_, Infallible>(response)
        }
    });
    let service = SessionLayer::new(session.clone()).layer(agent);

    let run = |n: u64| {
        rt.block_on(async {
            let tasks: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let mut service = service.clone();
                    tokio::spawn(async move {
                        for _ in 0..n / CONCURRENCY {
                            let response = service
                                .ready()
                                .await
                                .unwrap()
                                .call(Request::new(()))
                                .await
                                .unwrap();
                            assert_eq!(response.status(), 200);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            session.flush().await.unwrap();
        });
    };

    rt.block_on(session.start_with_token(Token::new("first").unwrap()))
        .unwrap();
    run(WARM_UP);
    let files_before = files_in(dir.path());
    let before = snapshot();
    let stats_before = session.stats();
    let started = Instant::now();
    run(calls);
    let elapsed = started.elapsed();
    let after = snapshot();
    let files_after = files_in(dir.path());
    let stats = session.stats();

    let refreshes = stats.refreshes - stats_before.refreshes;
    let writes = stats.writes - stats_before.writes;
    assert_eq!(refreshes, calls, "every call brought a refresh");
    assert!(writes > 0);
    assert_eq!(files_before, ["token", "token.lock"]);
    assert_eq!(files_after, files_before, "files in the session directory");
    assert_eq!(after.fds, before.fds, "open file descriptors");
    let growth = after.heap - before.heap;
    assert!(
        growth < HEAP_SLACK,
        "the heap grew by {growth} bytes over {calls} calls"
    );
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        session.token(),
        "the file ends with the token in use"
    );
    println!(
        "resources: {calls} refreshing calls ({CONCURRENCY} at a time) in {elapsed:.1?}, {writes} \
         durable writes (group commit); open fds {} -> {}, session dir {:?} -> {:?}, heap in use \
         {} -> {} bytes ({growth:+}), RSS {} -> {} KiB",
        before.fds,
        after.fds,
        files_before,
        files_after,
        before.heap,
        after.heap,
        before.rss_kib,
        after.rss_kib
    );
}
