//! The owner's side of the re-authentication lock beside the store: one try at a time, one
//! holder (this process), and who wants it: a recovery, the re-authenticator's token still to
//! be written, and lock alls (`Session::clear_after`).
//!
//! Whether the lock is held follows from who wants it, settled at the end of every step
//! ([`Owner::settle_lock`]): held while anyone wants it, let go in the step in which the last
//! one stops wanting it, and a try no one wants is abandoned. So a lock all and a recovery of
//! the same process share the one lock: a recovery that begins inside a lock all goes on under
//! it, a lock all that begins while a recovery holds it has it at once, and neither ever waits
//! for its own process.

use std::time::Duration;

use crate::error::Error;

use super::{Answer, LockOp, LockOutcome, LockTry, Note, Owner, WaiterId};

/// The re-authentication lock, as this process holds it.
#[derive(Debug, Default)]
pub(super) struct ReauthLock {
    /// How long a try waits for another holder; `None`: the store has no such lock.
    wait: Option<Duration>,
    state: State,
    /// Tries made so far, to number them: the last is the one under way, or the one that took
    /// the lock (a try is made only when none is under way and the lock is not held).
    attempts: u64,
    /// Held while this write (the recovered token's) is not settled.
    until_write: Option<u64>,
    /// The lock alls that want it. Those there while it is held were answered so: it is held
    /// while they want it, and a try that does not take it answers and drops them.
    pub(super) lock_alls: Vec<WaiterId>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Free,
    /// The last try under way, and whether it was abandoned.
    Taking { abandoned: bool },
    /// Held, by the last try.
    Held,
}

impl ReauthLock {
    pub(super) fn new(wait: Option<Duration>) -> Self {
        Self {
            wait,
            ..Self::default()
        }
    }

    /// Keeps the lock, if held, until write `seq` is over: a recovered token is written under it.
    pub(super) fn hold_until_written(&mut self, seq: u64) {
        if self.state == State::Held {
            self.until_write = Some(seq);
        }
    }
}

impl Owner {
    /// A recovery begins: it waits for the lock, unless this process holds it already (a lock
    /// all, or the last recovery's write) or the store has none.
    pub(super) fn lock_for_recovery(&mut self) {
        match self.lock.state {
            State::Free if self.lock.wait.is_some() => self.take_lock(),
            State::Free | State::Held => self.locked(),
            // A try under way: its report tells.
            State::Taking { .. } => {}
        }
    }

    /// A lock all begins (`Event::LockAll`): answered once the lock is held.
    pub(super) fn lock_all(&mut self, waiter: WaiterId) -> Option<Answer> {
        if self.lock.wait.is_none() {
            // Nothing to hold: no other process can re-authenticate in between.
            return Some(Answer::Done(Ok(())));
        }
        let held = self.lock.state == State::Held;
        self.lock.lock_alls.push(waiter);
        if self.lock.state == State::Free {
            self.take_lock();
        }
        // Else held (answered now), or a try under way (its report answers).
        held.then_some(Answer::Done(Ok(())))
    }

    /// Whether the try numbered `attempt` is still wanted: the try asks between its waits.
    pub(crate) fn lock_try_wanted(&self, attempt: u64) -> bool {
        self.lock.state == State::Taking { abandoned: false } && attempt == self.lock.attempts
    }

    /// A try, for the recovery waiting if one is (a lock all's else: a recovery that waits
    /// always has a try under way, so a lock all never makes one then).
    fn take_lock(&mut self) {
        let Some(wait) = self.lock.wait else {
            return;
        };
        debug_assert!(
            self.deadline_step,
            "a deadline set in a step whose event does not read the clock"
        );
        self.lock.attempts += 1;
        self.lock.state = State::Taking { abandoned: false };
        let recovery = self.recovery.locking().map(|tried| *tried = true).is_some();
        self.effects.lock.push(LockOp::Take(LockTry {
            attempt: self.lock.attempts,
            until: self.now + wait,
            recovery,
        }));
    }

    /// The try numbered `attempt` is over.
    ///
    /// Not had in time, it is tried again for whoever still waits and did not have a try of its
    /// own: a recovery that began after it was made for another (an earlier recovery, a lock
    /// all), or anyone after it was abandoned. Otherwise, and whenever the try could not be made
    /// at all, those waiting go on without it.
    pub(super) fn lock_taken(&mut self, attempt: u64, outcome: LockOutcome) {
        let abandoned = match self.lock.state {
            State::Taking { abandoned } if attempt == self.lock.attempts => abandoned,
            // A try no longer the one under way: a lock it took is let go at once.
            _ => {
                if matches!(outcome, LockOutcome::Held) {
                    self.effects.lock.push(LockOp::Release(attempt));
                }
                return;
            }
        };
        match outcome {
            LockOutcome::Held => {
                self.lock.state = State::Held;
                for &waiter in &self.lock.lock_alls {
                    self.effects.answers.push((waiter, Answer::Done(Ok(()))));
                }
                self.locked();
            }
            LockOutcome::NotHeld(error) => {
                self.lock.state = State::Free;
                let in_time = matches!(error, None | Some(Error::Locked { .. }));
                // A recovery's try is made even when a lock all waits too: it serves both.
                let recovery_again = self.recovery.locking().is_some_and(|tried| !*tried);
                let lock_all_again = abandoned && !self.lock.lock_alls.is_empty();
                if in_time && (recovery_again || lock_all_again) {
                    self.take_lock();
                    return;
                }
                let error = error.unwrap_or_else(|| {
                    Error::Store(std::sync::Arc::new(std::io::Error::other(
                        "the re-authentication lock could not be had",
                    )))
                });
                if !matches!(error, Error::Locked { .. }) {
                    self.note(Note::LockUnavailable(error.clone()));
                }
                self.locked();
                let not_held = self.lock.lock_alls.drain(..);
                let answers = not_held.map(|w| (w, Answer::Done(Err(error.clone()))));
                self.effects.answers.extend(answers);
            }
        }
    }

    /// Holds the lock while anyone wants it, and no longer: at the end of every step.
    pub(super) fn settle_lock(&mut self) {
        let wanted = self.recovery.wants_lock()
            || matches!(self.lock.until_write, Some(seq) if self.writes.unsettled.contains(&seq))
            || !self.lock.lock_alls.is_empty();
        if wanted {
            return;
        }
        match &mut self.lock.state {
            State::Held => {
                self.lock.state = State::Free;
                self.effects.lock.push(LockOp::Release(self.lock.attempts));
            }
            // The try sees it (`Owner::lock_try_wanted`), ends soon, and still reports.
            State::Taking { abandoned, .. } => *abandoned = true,
            State::Free => {}
        }
    }
}
