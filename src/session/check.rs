//! Another process's change to the session file: looked for by the first call after the
//! check interval, and by a recovery before it re-authenticates.

use super::*;

impl<St: TokenStore> Session<St> {
    /// Re-reads the file; if it holds a token that is neither `sent` (the one that just failed)
    /// nor the one this process last wrote, another process put it there: use it.
    pub(crate) async fn reload_if_other(&self, sent: Option<Token>) -> Result<bool, Error> {
        self.explicit(move |shared| {
            let snapshot = shared.store.load()?;
            let mut state = shared.lock();
            let other = snapshot.token.is_some()
                && snapshot.token != sent
                && snapshot.token != state.synced;
            if other {
                shared
                    .stats
                    .external_changes
                    .fetch_add(1, Ordering::Relaxed);
                shared.adopt(&mut state, snapshot);
            }
            Ok(other)
        })
        .await
    }

    /// Whether this call should look at the file first; at most one call at a time is told yes.
    pub(crate) fn claim_check(&self) -> bool {
        let now = monotonic_nanos();
        now >= self.shared.next_check.load(Ordering::Relaxed)
            && !self.shared.checking.swap(true, Ordering::Acquire)
    }

    /// Looks for a change made to the file by another process (one `stat`; a read only when it
    /// changed), off the async workers. Call only after [`Session::claim_check`] said yes; the
    /// receiver resolves when the look is over, however it ended.
    pub(crate) fn check_file(&self) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        // Made before spawning, so that even a task dropped unrun releases the claim.
        let claim = CheckClaim {
            session: self.clone(),
            _done: done,
        };
        spawn_blocking_anywhere(move || claim.session.shared.check_file_blocking());
        finished
    }
}

impl<St: TokenStore> Shared<St> {
    pub(super) fn schedule_next_check(&self) {
        let next = monotonic_nanos().saturating_add(nanos(self.check_interval));
        self.next_check.store(next, Ordering::Relaxed);
    }

    fn check_file_blocking(&self) {
        let now = match self.store.version() {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the session file");
                return;
            }
        };
        if now == self.lock().stamp {
            return;
        }
        // Changed. Inside the gate no write of ours is half-recorded, so a stamp that still
        // differs from the one the state records is another process's doing.
        let _gate = self.gate();
        let known = self.lock().stamp;
        let snapshot = match self.store.load() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // Keep the token we have: a bad file must not replace a good token.
                tracing::warn!(error = %e, "the session file changed but cannot be used");
                self.lock().stamp = self.store.version().ok().flatten();
                return;
            }
        };
        let mut state = self.lock();
        if snapshot.version == known {
            return;
        }
        if state.synced == snapshot.token {
            state.stamp = snapshot.version;
            return;
        }
        tracing::info!(
            token_found = snapshot.token.is_some(),
            "session file changed by another process"
        );
        self.stats.external_changes.fetch_add(1, Ordering::Relaxed);
        self.adopt(&mut state, snapshot);
    }
}

/// The claim on the file check; released (and the next check scheduled) when dropped, however
/// the check ended: done, panicked, or never run.
struct CheckClaim<St: TokenStore> {
    session: Session<St>,
    _done: oneshot::Sender<()>,
}

impl<St: TokenStore> Drop for CheckClaim<St> {
    fn drop(&mut self) {
        let shared = &self.session.shared;
        shared.schedule_next_check();
        shared.checking.store(false, Ordering::Release);
    }
}

/// A monotonic clock in nanoseconds, read on every call to see whether the file is due a look.
///
/// On Linux the coarse clock: a few milliseconds of resolution is plenty for an interval of a
/// second, and it costs a fraction of `Instant::now` on the hot path.
#[cfg(target_os = "linux")]
pub(super) fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec`, and Linux has CLOCK_MONOTONIC_COARSE.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    if read != 0 {
        // Cannot happen on Linux; were it to, "always due" is slow but never wrong.
        return u64::MAX;
    }
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

/// `Instant`, counted from the first reading in this process.
#[cfg(not(target_os = "linux"))]
pub(super) fn monotonic_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    nanos(ORIGIN.get_or_init(Instant::now).elapsed())
}

/// A duration in nanoseconds, saturating: an interval too long to count is "never".
pub(super) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
