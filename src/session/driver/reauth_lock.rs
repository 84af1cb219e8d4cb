//! The driver's side of the re-authentication lock: the guard let go in the step that decided
//! it, under the owner's mutex, and the tries themselves (a `Job` of the driver's workers, so
//! reported to the owner exactly once), each asking the owner between its waits whether it is
//! still wanted.

use super::{Driven, Shared};
use crate::error::Error;
use crate::file::{ReauthLockGuard, Taken};
use crate::session::owner::{LockOp, LockOutcome, LockTry};

/// Under the owner's mutex, in the step that decided it: the guard to let go, if the step
/// released the lock that guard holds (returned, to be dropped once the mutex is).
#[cold]
pub(super) fn let_go(driven: &mut Driven, ops: &[LockOp]) -> Option<ReauthLockGuard> {
    let released = |(attempt, _): &mut (u64, _)| ops.contains(&LockOp::Release(*attempt));
    driven.guard.take_if(released).map(|(_, guard)| guard)
}

impl Shared {
    /// A try for the lock, on a blocking thread: it waits for another holder until its time,
    /// and while the owner wants it; a recovery's tells of the wait.
    pub(super) fn take_lock(&self, t: LockTry) -> (LockOutcome, Option<ReauthLockGuard>) {
        let Some(lock) = self.store.reauth_lock() else {
            return (LockOutcome::NotHeld(None), None);
        };
        let waiting = |pid: Option<u32>| {
            if !t.recovery {
                return;
            }
            // Another session of this process on the same file: no process to name.
            let pid = pid.filter(|&pid| pid != std::process::id());
            tracing::info!(?pid, "waiting for another process to re-authenticate");
            if let Some(on_wait) = &self.on_reauth_wait {
                on_wait(pid);
            }
        };
        let wanted = || self.look(|owner| owner.lock_try_wanted(t.attempt));
        let error = match lock.take(t.until, wanted, waiting) {
            Ok(Taken::Held(guard)) => return (LockOutcome::Held, Some(guard)),
            Ok(Taken::TimedOut(waited)) => Some(Error::Locked {
                path: lock.path().to_owned(),
                waited,
            }),
            Ok(Taken::Unwanted) => None,
            Err(e) => Some(e),
        };
        (LockOutcome::NotHeld(error), None)
    }
}
