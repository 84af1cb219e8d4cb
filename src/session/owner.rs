//! [`Owner`]: the one owner of a session's state, a state machine that takes events in order
//! and says what to do, without I/O, threads or a runtime.
//!
//! Why a sans-IO state machine (quinn-proto's `Connection`, rustls's connection state) rather
//! than a task that owns the state (tokio-postgres's `Connection`): a session must work on any
//! executor and on none (a response polled outside Tokio, a watch thread, a blocking thread),
//! so it cannot count on a task being there to run; and every decision about the token can then
//! be driven in a test, from many simulated processes on one simulated store, with no clock and
//! no disk. The driver (`driver.rs`) holds it behind one mutex, never held across I/O: each
//! event is one step, the steps are the order of events, and what a step says to do (a read, a
//! write, an answer to a waiting call, the re-authenticator to run) is done after it by the
//! driver, whose results come back as the next events.
//!
//! What it decides, each in one place:
//!
//! - the token calls use and its epoch (a new epoch on every explicit change and every token
//!   taken from the store, so that a refresh answering a call sent before is dropped);
//! - what the store holds as far as this process knows (`synced`), so that a refresh is a
//!   compare-and-swap against it and a read of the store can tell another process's change
//!   from this process's own write;
//! - the store operations: at most one read and one write at a time, explicit writes in the
//!   order of their epochs, then the newest refresh (group commit);
//! - the recovery from a session failure: one for all the calls failing together, ended by a
//!   token that is not one that failed (another process's, or the re-authenticator's), never
//!   by a change to no token;
//! - who waits for what: explicit changes, refresh writes, flushes, recoveries.

use std::time::{Duration, Instant};

use crate::session::SessionStats;
use crate::session::policy::AgentTokens;
use crate::store::{Stored, Version};
use crate::token::Token;

mod event;
#[cfg(test)]
mod model;
mod notes;
mod reads;
mod reauth_lock;
mod recovery;
#[cfg(test)]
mod tests;
mod writes;

pub(crate) use event::{
    Answer, Effects, Event, LockOp, LockOutcome, LockTry, ReadOp, WaiterId, WriteOp, Written,
};
pub(crate) use notes::{Failure, Note};

/// The state of one session, and every decision about it.
#[derive(Debug)]
pub(crate) struct Owner {
    /// Set by the builder before the first step.
    pub(super) agent_tokens: AgentTokens,
    /// The time of the event being handled, as the driver gave it.
    now: Instant,
    /// Whether the event being handled is one that may set a deadline
    /// ([`Event::sets_deadlines`]): the driver reads the clock for those alone.
    deadline_step: bool,
    epoch: u64,
    /// The token calls use.
    current: Option<Token>,
    /// What the store holds, as far as this process knows: what it last read or wrote there.
    synced: Option<Token>,
    version: Option<Version>,
    /// The target of the last write that failed: a write can fail after its rename (an
    /// `fsync` of the directory), so a read that finds it there finds this process's doing.
    unconfirmed: Option<Option<Token>>,
    reads: reads::Reads,
    writes: writes::Writes,
    recovery: recovery::Recovery,
    /// The re-authentication lock, and who wants it.
    lock: reauth_lock::ReauthLock,
    counts: SessionStats,
    /// What the step under way asks for, returned by [`Owner::handle`].
    effects: Effects,
}

impl Owner {
    /// A session with no token, in epoch 0. `reauth_lock`: the bound of a wait for the store's
    /// re-authentication lock, if the store has one.
    pub(crate) fn new(
        agent_tokens: AgentTokens,
        reauth_lock: Option<Duration>,
        now: Instant,
    ) -> Self {
        Self {
            agent_tokens,
            now,
            deadline_step: false,
            epoch: 0,
            current: None,
            synced: None,
            version: None,
            unconfirmed: None,
            reads: reads::Reads::default(),
            writes: writes::Writes::default(),
            recovery: recovery::Recovery::default(),
            lock: reauth_lock::ReauthLock::new(reauth_lock),
            counts: SessionStats::default(),
            effects: Effects::default(),
        }
    }

    /// Takes in one event at time `now` (never earlier than the last step's: an earlier one is
    /// taken as the last), and says what to do.
    pub(crate) fn handle(&mut self, now: Instant, event: Event) -> Effects {
        self.now = self.now.max(now);
        self.deadline_step = event.sets_deadlines();
        match event {
            // `Session::start`: read the store, and use what it holds unless the session
            // changed meanwhile.
            Event::Start(waiter) => {
                self.reads.starts.push((self.epoch, waiter));
                self.want_read();
            }
            Event::Unlock(token, waiter) => self.change(Some(token), waiter),
            Event::Clear(waiter) => self.change(None, waiter),
            Event::Flush(waiter) => self.flush(waiter),
            Event::LockAll(waiter) => self.effects.reply = self.lock_all(waiter),
            Event::Refresh {
                token,
                epoch,
                waiter,
            } => self.effects.reply = self.refresh(token, epoch, waiter),
            Event::PasswordToken {
                token,
                epoch,
                waiter,
            } => self.effects.reply = self.password_token(token, epoch, waiter),
            Event::CallFailed {
                token,
                epoch,
                expired,
                waiter,
            } => self.effects.reply = self.call_failed(token, epoch, expired, waiter),
            Event::Reauthenticated { run, result } => {
                self.effects.reply = Some(self.reauthenticated(run, result))
            }
            Event::StoreVersion(version) if version == self.version => {}
            Event::StoreVersion(_) | Event::StoreChanged => self.want_read(),
            Event::ReadDone(result) => self.read_done(result),
            Event::WriteDone(result) => self.write_done(result),
            Event::LockTaken { attempt, outcome } => self.lock_taken(attempt, outcome),
            Event::Gone(waiter) => {
                self.recovery_waiter_gone(waiter);
                // A call or flush waiting for writes, or a lock all that wanted the lock.
                self.writes.waiters.retain(|(_, w)| *w != waiter);
                self.lock.lock_alls.retain(|w| *w != waiter);
            }
        }
        self.settle_lock();
        std::mem::take(&mut self.effects)
    }

    /// The time of the last step.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// The token calls use, and its epoch.
    pub(crate) fn current(&self) -> (Option<&Token>, u64) {
        (self.current.as_ref(), self.epoch)
    }

    /// What the owner did so far.
    pub(crate) fn counts(&self) -> SessionStats {
        self.counts
    }

    /// Reads of the store started so far (for the watch's inotify test, Linux's alone).
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn reads_started(&self) -> u64 {
        self.reads.started
    }

    fn answer(&mut self, waiter: WaiterId, answer: Answer) {
        self.effects.answers.push((waiter, answer));
    }

    /// Notes `note` for the log, if anyone could see it at its level.
    #[inline]
    fn note(&mut self, note: Note) {
        if note.wanted() {
            self.effects.notes.push(note);
        }
    }

    /// A new epoch with `token` in use: refreshes of calls sent before are dropped, and a
    /// refresh waiting to be written is superseded. A token that did not fail ends a recovery.
    fn begin_epoch(&mut self, token: Option<Token>) {
        self.epoch += 1;
        self.current = token;
        self.effects.publish = true;
        self.drop_pending_refresh();
        self.recovered_if_usable();
    }

    /// Takes what the store holds as the session's state, in a new epoch.
    fn adopt(&mut self, stored: Stored) {
        self.synced = stored.token.clone();
        self.version = stored.version;
        self.writes.overtaken();
        self.begin_epoch(stored.token);
    }

    // --- Explicit changes --------------------------------------------------------------------

    /// An unlock (`Some`) or a lock (`None`): the token in use at once, then written (a lock
    /// removes the store's); answered with the write's result.
    fn change(&mut self, token: Option<Token>, waiter: WaiterId) {
        self.begin_epoch(token.clone());
        let op = token.map_or(WriteOp::Clear, WriteOp::Store);
        self.queue_explicit(op, Some(waiter));
    }

    /// The token a password call sent in `epoch` brought: it starts the session (an explicit
    /// write) unless the session changed since; answered when the write is over.
    fn password_token(&mut self, token: Token, epoch: u64, waiter: WaiterId) -> Option<Answer> {
        if self.current.as_ref() == Some(&token) {
            return Some(Answer::Done(Ok(())));
        }
        if epoch != self.epoch {
            self.note(Note::StalePasswordToken);
            return Some(Answer::Done(Ok(())));
        }
        self.change(Some(token), waiter);
        None
    }
}
