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
//! that one's token instead of running its own. The lock (`reauth_lock.rs`) is let go once the
//! recovery's token is written, or at once when the recovery ends otherwise.

use crate::error::Error;
use crate::token::Token;

use super::{Answer, Note, Owner, WaiterId, WriteOp};

/// Recoveries: the one under way, and the re-authenticator's runs.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    active: Option<Active>,
    /// The waiter the run whose runner has not reported yet was handed to: at most one at a
    /// time, whatever the recovery it was started for became. A run is numbered by its
    /// runner's waiter, answered once: a report of an earlier run names another.
    running: Option<WaiterId>,
    /// The epoch the last re-authentication's token started.
    recovered_epoch: Option<u64>,
}

#[derive(Debug)]
struct Active {
    /// The tokens that failed; `None` stands for "no token".
    failed: Vec<Option<Token>>,
    /// The calls waiting for it (its runner not among them).
    waiters: Vec<WaiterId>,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the re-authentication lock; `tried`: a try was made for it (a try made
    /// before it began, for another, does not serve its wait).
    Locking { tried: bool },
    /// Waiting for a read of the store started after this number of reads.
    Reading { after: u64 },
    /// Waiting for the re-authenticator that runs now.
    Reauthenticating,
}

impl Recovery {
    /// Whether the re-authentication lock is wanted for a recovery: one under way, or a run
    /// whose token is still to come.
    pub(super) fn wants_lock(&self) -> bool {
        self.active.is_some() || self.running.is_some()
    }

    /// The recovery waiting for the re-authentication lock, if one is: whether a try was made
    /// for it.
    pub(super) fn locking(&mut self) -> Option<&mut bool> {
        let Stage::Locking { tried } = &mut self.active.as_mut()?.stage else {
            return None;
        };
        Some(tried)
    }
}

impl Owner {
    /// Whether the token in `epoch` came from a re-authentication: it is not renewed again
    /// before the agent refused it, even if its `exp` looks past (a clock ahead of the agent's).
    pub(crate) fn just_recovered(&self, epoch: u64) -> bool {
        self.recovery.recovered_epoch == Some(epoch)
    }

    /// A call sent with `token` (or none) in `epoch` failed for its session; `expired`: that
    /// token's `exp` has passed by this machine's clock.
    ///
    /// It is replayed at once with the token the session holds if that token is another, and
    /// came after the call was sent (a new epoch: another process's, an unlock, a recovery's),
    /// or the call's token simply expired. A refresh of the same epoch is no such token: a lock
    /// all ends it with the token that failed.
    pub(super) fn call_failed(
        &mut self,
        token: Option<Token>,
        epoch: u64,
        expired: bool,
        waiter: WaiterId,
    ) -> Option<Answer> {
        let known_dead =
            matches!(&self.recovery.active, Some(a) if a.failed.contains(&self.current));
        if self.current.is_some()
            && self.current != token
            && (epoch != self.epoch || expired)
            && !known_dead
        {
            return Some(Answer::Replay);
        }
        let shared = self.recovery.active.is_some();
        let active = self.recovery.active.get_or_insert_with(|| Active {
            failed: Vec::with_capacity(2),
            waiters: Vec::new(),
            stage: Stage::Locking { tried: false },
        });
        // The session's own token fails with it: another, or none, or a refresh of this epoch.
        for token in [token, self.current.clone()] {
            if !active.failed.contains(&token) {
                active.failed.push(token);
            }
        }
        active.waiters.push(waiter);
        if shared {
            self.counts.shared_recoveries += 1;
        } else {
            self.lock_for_recovery();
        }
        None
    }

    /// Under the lock (or without it, when it cannot be had): for the recovery waiting for it, if
    /// one is, a read started now tells whether another process's token is there.
    pub(super) fn locked(&mut self) {
        if let Some(active) = &mut self.recovery.active
            && let Stage::Locking { .. } = active.stage
        {
            active.stage = Stage::Reading {
                after: self.reads.started,
            };
            self.want_read();
        }
    }

    /// The session holds a token that did not fail: the recovery under way is over.
    pub(super) fn recovered_if_usable(&mut self) {
        let Some(active) = &self.recovery.active else {
            return;
        };
        if self.current.is_none() || active.failed.contains(&self.current) {
            return;
        }
        if matches!(active.stage, Stage::Reading { .. }) {
            self.note(Note::RecoveredByAnother);
        }
        self.end_recovery(&Answer::Replay);
    }

    /// The read last started (the one in flight: one at a time) is over (`ok`: it read the
    /// store). Taken in, a recovery that waited for it re-authenticates unless the read ended it.
    pub(super) fn recovery_read(&mut self, ok: bool) {
        let Some(active) = &mut self.recovery.active else {
            return;
        };
        // Not reading; or a read started before the failure, which the read `locked` asked for
        // follows.
        if !matches!(active.stage, Stage::Reading { after } if self.reads.started > after) {
            return;
        }
        active.stage = Stage::Reauthenticating;
        if !ok {
            self.note(Note::RereadFailed);
        }
        if self.recovery.running.is_none() {
            self.start_run();
        }
    }

    /// The recovery under way, if any, is over: its calls are answered so.
    fn end_recovery(&mut self, answer: &Answer) {
        let waiters = self.recovery.active.take().map(|a| a.waiters);
        for waiter in waiters.into_iter().flatten() {
            self.answer(waiter, answer.clone());
        }
    }

    /// Has the first waiting call run the re-authenticator.
    fn start_run(&mut self) {
        let Some(active) = &mut self.recovery.active else {
            return;
        };
        if active.waiters.is_empty() {
            self.recovery.active = None;
            return;
        }
        // The runner is answered by its own report, not with the others.
        let runner = active.waiters.remove(0);
        self.recovery.running = Some(runner);
        self.counts.reauthentications += 1;
        self.note(Note::Reauthenticating);
        self.answer(runner, Answer::Reauthenticate(runner));
    }

    /// Run `run` of the re-authenticator is done. Returns what its runner does next.
    pub(super) fn reauthenticated(&mut self, run: u64, result: Result<Token, Error>) -> Answer {
        if self.recovery.running.take_if(|r| *r == run).is_none() {
            // A run already taken for gone: its result is not used.
            return result.map_or_else(Answer::Failed, |_| Answer::Replay);
        }
        match result {
            Ok(token) if self.recovery.active.is_some() || self.current.is_none() => {
                // The recovery's token; or one whose recovery another token ended, and that
                // token went since (a lock): the runner's call must not go without one.
                self.begin_epoch(Some(token.clone()));
                self.recovery.recovered_epoch = Some(self.epoch);
                let seq = self.queue_explicit(WriteOp::Store(token), None);
                // Written under the lock, if this process holds it.
                self.lock.hold_until_written(seq);
                // A token that failed before (an agent handing out the same token again) is
                // the session's all the same: the calls waiting replay with it once.
                self.end_recovery(&Answer::Replay);
                Answer::Replay
            }
            Ok(_) => {
                self.note(Note::ReauthUnused);
                Answer::Replay
            }
            Err(e) => {
                self.note(Note::ReauthFailed);
                self.counts.failed_reauthentications += 1;
                let failed = Answer::Failed(e);
                self.end_recovery(&failed);
                failed
            }
        }
    }

    /// A waiting call went away before it read its answer: it is no longer answered. If it was
    /// handed a run of the re-authenticator, and that run did not report, another waiting call
    /// runs it, or the recovery ends and the next failure starts one.
    pub(super) fn recovery_waiter_gone(&mut self, waiter: WaiterId) {
        if let Some(active) = &mut self.recovery.active {
            active.waiters.retain(|w| *w != waiter);
        }
        if self.recovery.running.take_if(|r| *r == waiter).is_none() {
            return;
        }
        if matches!(&self.recovery.active, Some(a) if a.stage == Stage::Reauthenticating) {
            self.start_run();
        }
        // A later recovery, still locking or reading under the lock, keeps it.
    }
}
