//! How soon a session uses a token another process wrote to the session file, with no call
//! made: the watch's pickup latency.
//!
//! The other process is this bench binary, started again with `AGENT_SESSION_PICKUP_WRITER`
//! set: for each token it is sent on stdin, it prints the wall-clock time, then writes the token
//! with `TokenStore::store` (an explicit write: lock, temp file, fsync, rename, fsync of the
//! directory). The session in this process waits with `Session::changed_since` and reads the
//! wall clock when it has the token. The figure is from the start of the other process's write
//! to the session's use of its token, so it includes that write: an upper bound on the pickup
//! itself.
//!
//! Printed for [`Watch::Notify`] (the default, once it has handed over from its first second of
//! polling to inotify) and [`Watch::Poll`] at 40 ms (what the first second does): the median and
//! the worst of `ROUNDS`. Not a criterion bench: the figure is a latency across processes, not a
//! cost per call.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_agent_session::store::TokenStore as _;

use tower_agent_session::{Session, Token, TokenFile, Watch};

const WRITER: &str = "AGENT_SESSION_PICKUP_WRITER";
const ROUNDS: usize = 10;
/// A pickup that takes longer is a missed change: the bench fails rather than hang.
const BOUND: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(WRITER) {
        return writer(&dir);
    }
    // `cargo bench` passes `--bench`; this bench takes no arguments of its own.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    for (name, watch) in [
        ("notify", Watch::Notify),
        (
            "poll 40 ms, as in the first second",
            Watch::Poll(Duration::from_millis(40)),
        ),
    ] {
        let (mut latencies, mut writes) = runtime.block_on(rounds(watch));
        latencies.sort();
        writes.sort();
        eprintln!(
            "pickup/{name}: median {:?}, worst {:?} of {ROUNDS} from the start of the other \
             process's write (the write itself: median {:?})",
            latencies[ROUNDS / 2],
            latencies[ROUNDS - 1],
            writes[ROUNDS / 2]
        );
    }
    ExitCode::SUCCESS
}

/// The pickup latencies, and how long the other process's writes took.
async fn rounds(watch: Watch) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let session = Session::builder(TokenFile::in_dir(dir.path()))
        .watch(watch)
        .build();
    session.start().await.expect("the session starts");
    if watch == Watch::Notify {
        // A session polls for its first second, then hands over to inotify: measure that.
        let deadline = std::time::Instant::now() + BOUND;
        while !watched_by_inotify() {
            assert!(std::time::Instant::now() < deadline, "no inotify instance");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut child = Command::new(std::env::current_exe().expect("this bench's path"))
        .env(WRITER, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the writer starts");
    let mut to_writer = child.stdin.take().expect("the writer's stdin");
    let mut from_writer = BufReader::new(child.stdout.take().expect("the writer's stdout"));
    let mut latencies = Vec::with_capacity(ROUNDS);
    let mut writes = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let token = Token::new(format!("pickup.{round}")).expect("a token");
        let since = session.epoch();
        writeln!(to_writer, "{}", token.expose()).expect("the writer reads");
        let mut started = String::new();
        from_writer
            .read_line(&mut started)
            .expect("the writer says when it starts");
        let started: u128 = started.trim().parse().expect("nanoseconds");
        tokio::time::timeout(BOUND, session.changed_since(since))
            .await
            .expect("the session picks the token up");
        let picked = now_nanos();
        assert_eq!(session.token(), Some(token));
        let nanos = u64::try_from(picked.saturating_sub(started)).unwrap_or(u64::MAX);
        latencies.push(Duration::from_nanos(nanos));
        let mut done = String::new();
        from_writer
            .read_line(&mut done)
            .expect("the writer finishes");
        let done: u128 = done.trim().parse().expect("nanoseconds");
        let nanos = u64::try_from(done.saturating_sub(started)).unwrap_or(u64::MAX);
        writes.push(Duration::from_nanos(nanos));
    }
    drop(to_writer);
    child.wait().expect("the writer exits");
    (latencies, writes)
}

/// The other process: for each token on stdin, prints the time, writes it, prints the time.
fn writer(dir: &str) -> ExitCode {
    let file = TokenFile::in_dir(dir);
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("a line");
        let token = Token::new(line.trim()).expect("a token");
        let mut out = stdout.lock();
        writeln!(out, "{}", now_nanos())
            .and_then(|()| out.flush())
            .expect("stdout");
        file.store(&token).expect("the write");
        writeln!(out, "{}", now_nanos())
            .and_then(|()| out.flush())
            .expect("stdout");
    }
    ExitCode::SUCCESS
}

/// Whether this process holds an inotify instance (Linux).
fn watched_by_inotify() -> bool {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .any(|target| target.to_string_lossy().contains("inotify"))
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos()
}
