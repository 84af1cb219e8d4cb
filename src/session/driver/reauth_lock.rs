//! The driver's side of the re-authentication lock: the guard let go in the step that decided
//! it, under the owner's mutex, and the tries themselves, on a thread of their own, each asking
//! the owner between its waits whether it is still wanted, and reported to it exactly once.

use std::sync::Arc;

use super::{Driven, Shared};
use crate::error::Error;
use crate::file::{ReauthLockGuard, Taken};
use crate::session::owner::{Event, LockOp, LockOutcome};

/// Under the owner's mutex, in the step that decided it: the guard to let go, if the step
/// released the lock that guard holds (returned, to be dropped once the mutex is).
#[cold]
pub(super) fn let_go(driven: &mut Driven, ops: &[LockOp]) -> Option<ReauthLockGuard> {
    let released = |(attempt, _): &mut (u64, _)| ops.contains(&LockOp::Release(*attempt));
    driven.guard.take_if(released).map(|(_, guard)| guard)
}

impl Shared {
    /// Starts a try for the lock, if `op` asks for one, on a thread of its own: it waits for
    /// another holder until `until`, and while the owner wants it; the guard it takes goes
    /// beside the owner in the step that tells the owner.
    pub(super) fn try_for_lock(self: &Arc<Self>, op: &LockOp) {
        let LockOp::Take {
            attempt,
            until,
            recovery,
        } = *op
        else {
            return;
        };
        let report = LockReport {
            shared: Some(self.clone()),
            attempt,
        };
        let shared = self.clone();
        spawn_blocking_anywhere(move || {
            let Some(lock) = shared.store.reauth_lock() else {
                report.send(LockOutcome::NotHeld(None), None);
                return;
            };
            let waiting = |pid: Option<u32>| {
                if !recovery {
                    return;
                }
                // Another session of this process on the same file: no process to name.
                let pid = pid.filter(|&pid| pid != std::process::id());
                tracing::info!(?pid, "waiting for another process to re-authenticate");
                if let Some(on_wait) = &shared.on_reauth_wait {
                    on_wait(pid);
                }
            };
            let wanted = || shared.look(|owner| owner.lock_try_wanted(attempt));
            let error = match lock.take(until, wanted, waiting) {
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
