//! The owner's recovery from a session failure: one for all the calls failing together.
//!
//! A call that failed with token `t` is answered at once if the session holds a token other
//! than `t` (another process's, or a recovery's that finished meanwhile). Otherwise it joins the
//! recovery under way, or starts one: a read of the store started after the failure, then, if
//! the store holds no token that did not fail, the re-authenticator, run by one of the waiting
//! calls. A token that did not fail and was not merely a refresh ends the recovery whenever it
//! arrives (another process's through the watch, an unlock of this process, the
//! re-authenticator's); a change to no token (a lock, a lock all seen through the watch) never
//! does. A refresh does not either: one minted before a lock all is as dead as the token that
//! failed.
//!
//! At most one re-authenticator runs at a time: a recovery that needs one while another still
//! runs (its recovery ended by another token meanwhile) waits for it and takes its token.
//!
//! Across processes, a recovery first takes the re-authentication lock beside the session file
//! (waiting at most its bound, while no usable token arrives through the watch), then reads
//! the store under it: a process whose calls fail while another re-authenticates waits for
//! that one's token instead of running its own. The lock is let go once the recovery's token
//! is written, or at once when the recovery ends otherwise.

use super::*;

/// The recovery under way.
#[derive(Debug, Default)]
pub(super) enum Recovery {
    #[default]
    Idle,
    Active(Active),
}

#[derive(Debug)]
pub(super) struct Active {
    /// Which recovery this is (the owner numbers them): a try for the lock made for an
    /// earlier one does not serve this one's wait.
    number: u64,
    /// The tokens that failed; `None` stands for "no token".
    failed: Vec<Option<Token>>,
    /// The calls waiting for it (its runner not among them).
    waiters: Vec<WaiterId>,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the re-authentication lock.
    Locking,
    /// Waiting for a read of the store started after this number of reads.
    Reading { after: u64 },
    /// Waiting for the re-authenticator that runs now.
    Reauthenticating,
}

/// The re-authentication lock, as this process holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LockState {
    Free,
    /// Asked for, for this recovery; the answer is on its way.
    Taking(u64),
    Held,
    /// Held until the write of this number (the recovered token) is over.
    HeldUntilWrite(u64),
}

/// How a try for the re-authentication lock ended ([`Owner::reauth_lock_taken`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockTaken {
    /// This process holds it.
    Held,
    /// Not had: the wait passed its bound (a holder stopped), no recovery wanted it any more,
    /// the store has no such lock, or the try could not be made.
    No,
}

/// What a failing call does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Replay at once: the session holds a token that did not fail.
    Replay,
    /// Wait for this waiter's answer.
    Wait(WaiterId),
}

impl Owner {
    /// A call sent with `token` (or none) in `epoch` failed for its session; `expired`: that
    /// token's `exp` has passed by this machine's clock.
    ///
    /// It is replayed at once with the token the session holds if that token is another, and
    /// came after the call was sent (a new epoch: another process's, an unlock, a recovery's),
    /// or the call's token simply expired. A refresh of the same epoch is no such token: a lock
    /// all ends it with the token that failed.
    pub(crate) fn call_failed(
        &mut self,
        token: Option<Token>,
        epoch: u64,
        expired: bool,
    ) -> Failed {
        let known_dead =
            matches!(&self.recovery, Recovery::Active(a) if a.failed.contains(&self.current));
        if self.current.is_some()
            && self.current != token
            && (epoch != self.epoch || expired)
            && !known_dead
        {
            return Failed::Replay;
        }
        let waiter = self.waiter();
        // The session's own token fails with it: another, or none, or a refresh of this epoch.
        let failing = [token, self.current.clone()];
        match &mut self.recovery {
            Recovery::Active(active) => {
                for token in failing {
                    if !active.failed.contains(&token) {
                        active.failed.push(token);
                    }
                }
                active.waiters.push(waiter);
                self.counts.reauth_shared += 1;
            }
            Recovery::Idle => {
                self.recoveries += 1;
                let mut failed = Vec::with_capacity(2);
                for token in failing {
                    if !failed.contains(&token) {
                        failed.push(token);
                    }
                }
                self.recovery = Recovery::Active(Active {
                    number: self.recoveries,
                    failed,
                    waiters: vec![waiter],
                    stage: Stage::Locking,
                });
                match self.reauth_lock {
                    LockState::Free => self.take_reauth_lock(),
                    // Still held for the last recovery's write: this one goes on under it.
                    LockState::Held | LockState::HeldUntilWrite(_) => self.locked(),
                    // A try under way, made for an earlier recovery: its answer tells.
                    LockState::Taking(_) => {}
                }
            }
        }
        Failed::Wait(waiter)
    }

    /// Asks for the re-authentication lock, for the recovery under way.
    /// Held already when this process holds it around a lock all
    /// ([`Owner::lock_all_holds_reauth_lock`]): a call failing inside must not wait for its own
    /// process.
    fn take_reauth_lock(&mut self) {
        if self.held_for_clear {
            self.reauth_lock = LockState::Held;
            self.locked();
            return;
        }
        if let Recovery::Active(active) = &self.recovery {
            self.reauth_lock = LockState::Taking(active.number);
            self.effects.lock.push(LockOp::Take);
        }
    }

    /// The try for the re-authentication lock is over. A recovery that waited for it reads the
    /// store now, under the lock or (past the bound) without it. A try made for an earlier
    /// recovery is no answer for one that began while it was under way (it found the try and
    /// asked for nothing): whether it gave up because that recovery ended, or at that
    /// recovery's bound, the new one asks again, and waits its own bound.
    pub(crate) fn reauth_lock_taken(&mut self, taken: LockTaken) {
        let asked_for = match self.reauth_lock {
            LockState::Taking(number) => Some(number),
            _ => None,
        };
        self.reauth_lock = match taken {
            LockTaken::Held => LockState::Held,
            LockTaken::No => LockState::Free,
        };
        if taken == LockTaken::No
            && let Recovery::Active(active) = &self.recovery
            && active.stage == Stage::Locking
            && Some(active.number) != asked_for
        {
            self.take_reauth_lock();
            return;
        }
        if self.reauth_lock_wanted() {
            self.locked();
        } else {
            self.release_reauth_lock();
        }
    }

    /// This process holds the re-authentication lock around a lock all: a recovery that begins
    /// meanwhile goes on under it.
    pub(crate) fn lock_all_holds_reauth_lock(&mut self) {
        self.held_for_clear = true;
    }

    /// The lock all lets go of the re-authentication lock. Returns whether a recovery that
    /// began inside (or its token's write) holds it still: the lock is then the recovery's,
    /// until the owner releases it.
    pub(crate) fn lock_all_lets_go(&mut self) -> bool {
        self.held_for_clear = false;
        matches!(
            self.reauth_lock,
            LockState::Held | LockState::HeldUntilWrite(_)
        )
    }

    /// Whether a recovery still waits for the re-authentication lock.
    pub(crate) fn reauth_lock_wanted(&self) -> bool {
        matches!(
            &self.recovery,
            Recovery::Active(Active {
                stage: Stage::Locking,
                ..
            })
        )
    }

    /// Under the lock (or without it, when it cannot be had): a read started now tells whether
    /// another process's token is there.
    fn locked(&mut self) {
        if let Recovery::Active(active) = &mut self.recovery {
            active.stage = Stage::Reading {
                after: self.reads.started,
            };
            self.want_read();
        }
    }

    fn release_reauth_lock(&mut self) {
        // Kept while this process's re-authenticator still runs (its token is written under
        // it), and while a recovery is under way (it reads and re-authenticates under it).
        if self.reauth_lock == LockState::Held
            && self.running.is_none()
            && matches!(self.recovery, Recovery::Idle)
        {
            self.reauth_lock = LockState::Free;
            self.effects.lock.push(LockOp::Release);
        }
    }

    /// Write `seq` is over: the lock held for it goes.
    pub(super) fn write_settled(&mut self, seq: u64) {
        if self.reauth_lock == LockState::HeldUntilWrite(seq) {
            self.reauth_lock = LockState::Held;
            if matches!(self.recovery, Recovery::Idle) {
                self.release_reauth_lock();
            }
        }
    }

    /// The session holds a token that did not fail: the recovery under way is over.
    pub(super) fn recovered_if_usable(&mut self) {
        let Recovery::Active(active) = &self.recovery else {
            return;
        };
        if self.current.is_none() || active.failed.contains(&self.current) {
            return;
        }
        if let Recovery::Active(active) = std::mem::take(&mut self.recovery) {
            if matches!(active.stage, Stage::Reading { .. }) {
                tracing::info!("another process holds a new token; using it");
            }
            for waiter in active.waiters {
                self.answer(waiter, Answer::Replay);
            }
        }
        self.release_reauth_lock();
    }

    /// Read number `number` is over (`ok`: it read the store). Taken in, a recovery that waited
    /// for it re-authenticates unless the read ended it.
    pub(super) fn recovery_read(&mut self, number: u64, ok: bool) {
        let Recovery::Active(active) = &mut self.recovery else {
            return;
        };
        let Stage::Reading { after } = active.stage else {
            return;
        };
        if number <= after {
            // Started before the failure: another read is on its way.
            self.reads.wanted = true;
            return;
        }
        if !ok {
            tracing::warn!("cannot re-read the session file; re-authenticating");
        }
        active.stage = Stage::Reauthenticating;
        if self.running.is_none() {
            self.start_run();
        }
    }

    /// Has the first waiting call run the re-authenticator.
    fn start_run(&mut self) {
        let Recovery::Active(active) = &mut self.recovery else {
            return;
        };
        if active.waiters.is_empty() {
            self.recovery = Recovery::Idle;
            self.release_reauth_lock();
            return;
        }
        // The runner is answered by its own report, not with the others.
        let runner = active.waiters.remove(0);
        self.runs += 1;
        self.running = Some(self.runs);
        self.counts.reauth_runs += 1;
        tracing::info!("re-authenticating");
        self.answer(runner, Answer::Reauthenticate(self.runs));
    }

    /// Run `number` of the re-authenticator is done. Returns what its runner does next.
    pub(crate) fn reauthenticated(&mut self, number: u64, result: Result<Token, Error>) -> Answer {
        if self.running != Some(number) {
            // A run already taken for gone: its result is not used.
            return match result {
                Ok(_) => Answer::Replay,
                Err(e) => Answer::Failed(e),
            };
        }
        self.running = None;
        let recovering = matches!(self.recovery, Recovery::Active(_));
        match result {
            Ok(token) if recovering || self.current.is_none() => {
                // The recovery's token; or one whose recovery another token ended, and that
                // token went since (a lock): the runner's call must not go without one.
                let held = matches!(
                    self.reauth_lock,
                    LockState::Held | LockState::HeldUntilWrite(_)
                );
                if held {
                    // Kept through the new epoch, until the token is written.
                    self.reauth_lock = LockState::HeldUntilWrite(0);
                }
                self.begin_epoch(Some(token.clone()));
                self.recovered_epoch = Some(self.epoch);
                let seq = self.queue_explicit(WriteOp::Store(token), None);
                if held {
                    self.reauth_lock = LockState::HeldUntilWrite(seq);
                }
                // A token that failed before (an agent handing out the same token again) is
                // the session's all the same: the calls waiting replay with it once.
                if let Recovery::Active(active) = std::mem::take(&mut self.recovery) {
                    for waiter in active.waiters {
                        self.answer(waiter, Answer::Replay);
                    }
                }
                Answer::Replay
            }
            Ok(_) => {
                tracing::debug!("re-authenticated after the session recovered; token unused");
                self.release_reauth_lock();
                Answer::Replay
            }
            Err(e) => {
                tracing::warn!("re-authentication failed");
                self.counts.reauth_failures += 1;
                if let Recovery::Active(active) = std::mem::take(&mut self.recovery) {
                    for waiter in active.waiters {
                        self.answer(waiter, Answer::Failed(e.clone()));
                    }
                }
                self.release_reauth_lock();
                Answer::Failed(e)
            }
        }
    }

    /// The runner of run `number` went away before the re-authenticator finished (its call was
    /// dropped, on an executor where the run cannot go on without it, or its task panicked):
    /// another waiting call runs it, or the recovery ends and the next failure starts one.
    pub(crate) fn runner_gone(&mut self, number: u64) {
        if self.running != Some(number) {
            return;
        }
        self.running = None;
        match &self.recovery {
            Recovery::Active(Active {
                stage: Stage::Reauthenticating,
                ..
            }) => self.start_run(),
            // A later recovery, still locking or reading under the lock, keeps it.
            Recovery::Active(_) => {}
            Recovery::Idle => self.release_reauth_lock(),
        }
    }

    /// Whether the token in `epoch` came from a re-authentication: it is not renewed again
    /// before the agent refused it, even if its `exp` looks past (a clock ahead of the agent's).
    pub(crate) fn just_recovered(&self, epoch: u64) -> bool {
        self.recovered_epoch == Some(epoch)
    }

    /// A waiting call went away (dropped, timed out): it is no longer answered. (A runner that
    /// goes is told by [`Owner::runner_gone`].)
    pub(crate) fn waiter_gone(&mut self, waiter: WaiterId) {
        if let Recovery::Active(active) = &mut self.recovery {
            active.waiters.retain(|w| *w != waiter);
        }
        self.writes_waiter_gone(waiter);
    }
}
