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

use std::collections::{BTreeSet, VecDeque};

use crate::error::Error;
use crate::session::policy::{AgentTokens, outlives};
use crate::store::{Stored, Swap, Version};
use crate::token::Token;

#[cfg(test)]
mod model;
mod reads;
mod recovery;
#[cfg(test)]
mod tests;
mod writes;

pub(crate) use recovery::{Failed, LockTaken};
pub(crate) use writes::Refreshed;

/// Someone waiting for an answer from the owner: a call, an explicit change, a flush.
pub(crate) type WaiterId = u64;

/// What the owner answers a waiter.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// An explicit change, a flush or a refresh write is over: its result.
    Done(Result<(), Error>),
    /// The session was recovered: go on (replay) with the token it holds now.
    Replay,
    /// The session could not be recovered.
    Failed(Error),
    /// Run the re-authenticator for recovery `n`, and report with [`Owner::reauthenticated`].
    Reauthenticate(u64),
}

/// A read of the store to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOp {
    /// Tidy the store first (a session's start).
    pub(crate) tidy: bool,
}

/// A write of the store to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteOp {
    /// An explicit write: replace whatever is there.
    Store(Token),
    /// An explicit removal.
    Clear,
    /// A refresh: replace `expected` with `new`, or report what is there.
    Swap {
        /// What this process last read or wrote.
        expected: Option<Token>,
        /// The refreshed token.
        new: Token,
    },
}

/// What a write reported.
#[derive(Debug, Clone)]
pub(crate) enum Written {
    /// [`WriteOp::Store`]'s version.
    Stored(Version),
    /// [`WriteOp::Clear`] done.
    Cleared,
    /// [`WriteOp::Swap`]'s outcome.
    Swapped(Swap),
}

/// What the driver must do after a step.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Start this read (none is in flight).
    pub(crate) read: Option<ReadOp>,
    /// Start this write (none is in flight). Boxed: a write holds two tokens, and the effects
    /// move through every step (a refresh that writes nothing moves them three times).
    pub(crate) write: Option<Box<WriteOp>>,
    /// Answers to hand to waiters.
    pub(crate) answers: Vec<(WaiterId, Answer)>,
    /// The token calls use changed: publish it.
    pub(crate) publish: bool,
    /// Take or release the re-authentication lock, in this order.
    pub(crate) lock: Vec<LockOp>,
}

/// What to do with the re-authentication lock beside the store (see `file/reauth_lock.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockOp {
    /// Try for it, and report with [`Owner::reauth_lock_taken`].
    Take,
    /// Let it go.
    Release,
}

/// Counters of what the owner did, for `SessionStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) refreshes: u64,
    pub(crate) writes: u64,
    pub(crate) skipped_writes: u64,
    pub(crate) lost_refreshes: u64,
    pub(crate) external_changes: u64,
    pub(crate) lock_timeouts: u64,
    pub(crate) failed_writes: u64,
    pub(crate) reads: u64,
    pub(crate) reauth_runs: u64,
    pub(crate) reauth_failures: u64,
    pub(crate) reauth_shared: u64,
}

/// The state of one session, and every decision about it.
#[derive(Debug)]
pub(crate) struct Owner {
    agent_tokens: AgentTokens,
    epoch: u64,
    /// The token calls use.
    current: Option<Token>,
    /// What the store holds, as far as this process knows: what it last read or wrote there.
    synced: Option<Token>,
    version: Option<Version>,
    /// The target of the last write that failed: a write can fail after its rename (an
    /// `fsync` of the directory), so a read that finds it there finds this process's doing.
    unconfirmed: Option<Option<Token>>,
    next_waiter: WaiterId,
    reads: reads::Reads,
    writes: writes::Writes,
    recovery: recovery::Recovery,
    /// Re-authenticator runs started so far, to number them.
    runs: u64,
    /// Recoveries begun so far, to number them.
    recoveries: u64,
    /// The run whose runner has not reported yet: at most one at a time, whatever the
    /// recovery it was started for became.
    running: Option<u64>,
    /// The epoch the last re-authentication's token started.
    recovered_epoch: Option<u64>,
    /// The re-authentication lock, as this process holds it.
    reauth_lock: recovery::LockState,
    /// Whether this process holds the re-authentication lock around a lock all.
    held_for_clear: bool,
    counts: Counts,
    effects: Effects,
}

impl Owner {
    /// A session with no token, in epoch 0.
    pub(crate) fn new(agent_tokens: AgentTokens) -> Self {
        Self {
            agent_tokens,
            epoch: 0,
            current: None,
            synced: None,
            version: None,
            unconfirmed: None,
            next_waiter: 0,
            reads: reads::Reads::default(),
            writes: writes::Writes::default(),
            recovery: recovery::Recovery::default(),
            runs: 0,
            recoveries: 0,
            running: None,
            recovered_epoch: None,
            reauth_lock: recovery::LockState::Free,
            held_for_clear: false,
            counts: Counts::default(),
            effects: Effects::default(),
        }
    }

    /// The token calls use, and its epoch.
    pub(crate) fn current(&self) -> (Option<&Token>, u64) {
        (self.current.as_ref(), self.epoch)
    }

    /// What the owner did so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// What the last step asks the driver to do.
    pub(crate) fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    fn waiter(&mut self) -> WaiterId {
        self.next_waiter += 1;
        self.next_waiter
    }

    fn answer(&mut self, waiter: WaiterId, answer: Answer) {
        self.effects.answers.push((waiter, answer));
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
        self.begin_epoch(stored.token);
    }

    // --- Explicit changes --------------------------------------------------------------------

    /// `Session::start`: read the store, and use what it holds unless the session changed
    /// meanwhile. Returns the waiter answered when it is done.
    pub(crate) fn start(&mut self) -> WaiterId {
        let waiter = self.waiter();
        self.reads.starts.push((self.epoch, waiter));
        self.want_read();
        waiter
    }

    /// An unlock: `token` in use at once, then written. Returns the waiter answered with the
    /// write's result.
    pub(crate) fn unlock(&mut self, token: Token) -> WaiterId {
        let waiter = self.waiter();
        self.begin_epoch(Some(token.clone()));
        self.queue_explicit(WriteOp::Store(token), Some(waiter));
        waiter
    }

    /// A lock: no token from now on, and the store's removed. Returns the waiter answered with
    /// the removal's result.
    pub(crate) fn clear(&mut self) -> WaiterId {
        let waiter = self.waiter();
        self.begin_epoch(None);
        self.queue_explicit(WriteOp::Clear, Some(waiter));
        waiter
    }

    /// The token a password call sent in `epoch` brought: it starts the session (an explicit
    /// write) unless the session changed since. The waiter, if any, is answered when the write
    /// is over.
    pub(crate) fn password_token(&mut self, token: Token, epoch: u64) -> Option<WaiterId> {
        if self.current.as_ref() == Some(&token) {
            return None;
        }
        if epoch != self.epoch {
            tracing::debug!("password call's token dropped: the session changed since");
            return None;
        }
        let waiter = self.waiter();
        self.begin_epoch(Some(token.clone()));
        self.queue_explicit(WriteOp::Store(token), Some(waiter));
        Some(waiter)
    }
}

/// A set of write sequence numbers not yet settled, and what waits for them.
#[derive(Debug, Default)]
struct Outstanding {
    seqs: BTreeSet<u64>,
    waiters: VecDeque<(u64, WaiterId)>,
}
