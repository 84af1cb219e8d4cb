//! What the watch tests share: how long a pickup may take, and what this process holds of a
//! session's watch (Linux's `/proc/self`).
#![allow(dead_code)] // each test uses its own part of this

use std::time::Duration;

/// Far longer than a pickup takes (milliseconds, or a second while a session polls), so that
/// only a missed change fails.
pub const BOUND: Duration = Duration::from_secs(30);

/// The inotify instances this process holds.
pub fn inotify_instances() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("inotify"))
        .count()
}

/// The sessions' polling threads alive in this process (`tower-agent-session-watch`, as the kernel
/// keeps a thread's name: 15 bytes).
pub fn polling_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "agent-session-w")
        .count()
}

/// Waits, within [`BOUND`], for `condition`; panics with `what` otherwise.
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(BOUND, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}
