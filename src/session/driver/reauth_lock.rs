//! The driver's side of the re-authentication lock: the bookkeeping a step does under the
//! owner's mutex (the guard kept or let go, a try's flag raised), and the tries themselves, on
//! a thread of their own, each reported to the owner exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{Driven, Shared};
use crate::error::Error;
use crate::file::{ReauthLockGuard, Taken};
use crate::session::owner::{Event, LockOp, LockOutcome};

/// A try the owner asked for, to start once the step is over.
pub(in crate::session) struct Try {
    attempt: u64,
    until: Instant,
    recovery: bool,
    abandon: Arc<AtomicBool>,
}

impl Shared {
    /// Under the owner's mutex, in the step that decided them: a guard to let go (returned, to
    /// be dropped once the mutex is), a try to abandon, the tries to start.
    #[cold]
    pub(super) fn lock_bookkeeping(
        &self,
        driven: &mut Driven,
        ops: &[LockOp],
    ) -> (Vec<Try>, Option<ReauthLockGuard>) {
        let mut tries = Vec::new();
        let mut let_go = None;
        for op in ops {
            match *op {
                LockOp::Take {
                    attempt,
                    until,
                    recovery,
                } => {
                    let abandon = Arc::new(AtomicBool::new(false));
                    driven.attempt = Some((attempt, abandon.clone()));
                    tries.push(Try {
                        attempt,
                        until,
                        recovery,
                        abandon,
                    });
                }
                LockOp::Abandon(attempt) => {
                    if let Some((a, flag)) = &driven.attempt
                        && *a == attempt
                    {
                        flag.store(true, Ordering::Release);
                    }
                }
                LockOp::Release(attempt) => {
                    if driven.guard.as_ref().is_some_and(|(a, _)| *a == attempt) {
                        let_go = driven.guard.take().map(|(_, guard)| guard);
                    }
                }
            }
        }
        (tries, let_go)
    }

    /// Starts a try for the lock, on a thread of its own: it waits for another holder until
    /// the try's time, and while it is not abandoned; the guard it takes goes beside the owner
    /// in the step that tells the owner.
    pub(super) fn try_for_lock(self: &Arc<Self>, attempt: Try) {
        let report = LockReport {
            shared: Some(self.clone()),
            attempt: attempt.attempt,
        };
        let shared = self.clone();
        spawn_blocking_anywhere(move || {
            let Some(lock) = shared.store.reauth_lock() else {
                report.send(LockOutcome::NotHeld(None), None);
                return;
            };
            let waiting = |pid: Option<u32>| {
                if !attempt.recovery {
                    return;
                }
                // Another session of this process on the same file: no process to name.
                let pid = pid.filter(|&pid| pid != std::process::id());
                tracing::info!(?pid, "waiting for another process to re-authenticate");
                if let Some(on_wait) = &shared.on_reauth_wait {
                    on_wait(pid);
                }
            };
            let wanted = || !attempt.abandon.load(Ordering::Acquire);
            let error = match lock.take(attempt.until, wanted, waiting) {
                Ok(Taken::Held(guard)) => return report.send(LockOutcome::Held, Some(guard)),
                Ok(Taken::TimedOut(waited)) => Some(Error::Locked {
                    path: lock.path().to_owned(),
                    waited,
                }),
                Ok(Taken::Unwanted) => None,
                Err(e) => Some(e),
            };
            report.send(LockOutcome::NotHeld(error), None);
        });
    }
}

use super::spawn_blocking_anywhere;

/// Reports the end of a try for the lock, once: its own outcome or, if the try is dropped
/// before it ran (a runtime shutting down), that it was not had, so that the owner never
/// waits for a try that will not come.
struct LockReport {
    shared: Option<Arc<Shared>>,
    attempt: u64,
}

impl LockReport {
    fn send(mut self, outcome: LockOutcome, guard: Option<ReauthLockGuard>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let attempt = self.attempt;
        let (stepped, _) = shared.step(|driven| {
            if let Some(guard) = guard {
                driven.guard = Some((attempt, guard));
            }
            if driven.attempt.as_ref().is_some_and(|(a, _)| *a == attempt) {
                driven.attempt = None;
            }
            Event::LockTaken { attempt, outcome }
        });
        shared.run(stepped, None);
    }
}

impl Drop for LockReport {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        tracing::error!("the try for the re-authentication lock stopped before it ran");
        shared.on_own_thread(Event::LockTaken {
            attempt: self.attempt,
            outcome: LockOutcome::NotHeld(None),
        });
    }
}
