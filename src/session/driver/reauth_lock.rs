//! The driver's side of the re-authentication lock beside the session file: tries for it on a
//! thread of their own, each reported to the owner exactly once, and the guards that hold it.

use super::*;
use crate::file::Taken;
use crate::session::owner::LockTaken;

/// The re-authentication lock, held by this process: for a recovery, or around a lock all.
#[derive(Debug, Default)]
pub(crate) struct ReauthGuards {
    pub(crate) recovery: Option<crate::file::ReauthLock>,
    pub(crate) explicit: Option<crate::file::ReauthLock>,
}

impl Shared {
    /// Takes the re-authentication lock beside the session file (on a thread of its own, which
    /// waits for another holder at most the bound, and only while a recovery wants it). A store
    /// that is not the session file has none: the owner is told so at once.
    pub(super) fn reauth_lock(self: &Arc<Self>, op: LockOp) {
        match op {
            // Let go in the step that asked for it (`Shared::step_in_driven`).
            LockOp::Release => {}
            LockOp::Take => {
                let Some(file) = self.file.clone() else {
                    self.step(|owner| owner.reauth_lock_taken(LockTaken::No));
                    return;
                };
                let report = LockReport(Some(self.clone()));
                spawn_blocking_anywhere(move || {
                    let Some(shared) = &report.0 else { return };
                    let wanted = || shared.step(|owner| owner.reauth_lock_wanted());
                    let waiting = |pid: Option<u32>| {
                        // Another session of this process on the same file: no process to name.
                        let pid = pid.filter(|&pid| pid != std::process::id());
                        tracing::info!(?pid, "waiting for another process to re-authenticate");
                        if let Some(on_wait) = &shared.on_reauth_wait {
                            on_wait(pid);
                        }
                    };
                    let taken = match file.take_reauth_lock(wanted, waiting) {
                        Ok(Taken::Held(guard)) => {
                            shared.reauth_guard().recovery = Some(guard);
                            LockTaken::Held
                        }
                        Ok(Taken::TimedOut | Taken::Unwanted) => LockTaken::No,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot take the re-authentication lock");
                            LockTaken::No
                        }
                    };
                    report.send(taken);
                });
            }
        }
    }

    pub(crate) fn reauth_guard(&self) -> MutexGuard<'_, ReauthGuards> {
        // Holds a file handle and nothing else: never half-made.
        self.reauth_guard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reports the end of a try for the re-authentication lock, once: the try's own outcome, or,
/// if the try is dropped before it ran (a runtime shutting down), that it was not had, so that
/// the owner never waits for a try that will not come.
struct LockReport(Option<Arc<Shared>>);

impl LockReport {
    fn send(mut self, taken: LockTaken) {
        if let Some(shared) = self.0.take() {
            shared.step(|owner| owner.reauth_lock_taken(taken));
        }
    }
}

impl Drop for LockReport {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        tracing::error!("the try for the re-authentication lock stopped before it ran");
        let effects = shared.step_effects(|owner| owner.reauth_lock_taken(LockTaken::No));
        // As for a dropped store job: what that step asks for is done on a thread of its own.
        let spawned = std::thread::Builder::new()
            .name("agent-session".into())
            .spawn(move || drop(shared.run(effects, None)));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for the session's file work");
        }
    }
}
