//! The owner's interface: [`Event`], everything that can happen to a session, and [`Effects`],
//! what a step asks the driver to do. The driver hands the owner one event at a time, with the
//! time, and carries out what comes back; nothing else reaches the owner.

use std::time::Instant;

use crate::error::Error;
use crate::store::{Stored, Swap, Version};
use crate::token::Token;

use super::notes::Note;

/// Someone waiting for an answer from the owner: a call, an explicit change, a flush, a lock
/// all. The driver numbers them; the owner answers each exactly once.
pub(crate) type WaiterId = u64;

/// Everything that can happen to a session.
#[derive(Debug)]
pub(crate) enum Event {
    /// `Session::start`: read the store and use what it holds.
    Start(WaiterId),
    /// An unlock: this token in use at once, then written.
    Unlock(Token, WaiterId),
    /// A lock: no token from now on, and the store's removed.
    Clear(WaiterId),
    /// `Session::flush`: answered once every write handed out so far is settled.
    Flush(WaiterId),
    /// A lock all begins: hold the re-authentication lock until [`Event::Gone`]. Answered
    /// `Done(Ok)` once held, `Done(Err)` when it cannot be had (the lock all goes on without).
    LockAll(WaiterId),
    /// A refreshed token came back on a response to a call sent in `epoch`.
    Refresh {
        /// The refreshed token.
        token: Token,
        /// The epoch the call was sent in.
        epoch: u64,
        /// Answered when the write covering it is over, if the call waits for it.
        waiter: WaiterId,
    },
    /// A call made with the password brought a token: it starts the session, unless the
    /// session changed since `epoch`.
    PasswordToken {
        /// The token.
        token: Token,
        /// The epoch the call was sent in.
        epoch: u64,
        /// Answered when its write is over.
        waiter: WaiterId,
    },
    /// A call sent with `token` (or none) in `epoch` failed for its session.
    CallFailed {
        /// What the call carried.
        token: Option<Token>,
        /// The epoch it was sent in.
        epoch: u64,
        /// Whether that token's `exp` has passed by this machine's clock.
        expired: bool,
        /// Answered `Replay` (at once or after a recovery), `Reauthenticate` or `Failed`.
        waiter: WaiterId,
    },
    /// Run `run` of the re-authenticator is over; the reply (`Effects::reply`) is what its
    /// runner does next.
    Reauthenticated {
        /// The run's number (its runner's waiter), from `Answer::Reauthenticate`.
        run: u64,
        /// Its token, or why not.
        result: Result<Token, Error>,
    },
    /// A poll of the store found this version.
    StoreVersion(Option<Version>),
    /// The OS said the store changed.
    StoreChanged,
    /// The read asked for is over.
    ReadDone(Result<Stored, Error>),
    /// The write asked for is over.
    WriteDone(Result<Written, Error>),
    /// The try for the re-authentication lock numbered `attempt` is over.
    LockTaken {
        /// The number in [`LockTry`].
        attempt: u64,
        /// Whether it is held.
        outcome: LockOutcome,
    },
    /// The waiter with this number is gone: a call or change that went away before it read
    /// its answer (dropped, timed out), the runner of the run so numbered before it reported
    /// (its call dropped, its task panicked: another waiting call runs it), or the lock all
    /// begun with it, over (done, failed or dropped). Waiters are numbered once, so the number
    /// says which.
    Gone(WaiterId),
}

impl Event {
    /// Whether the owner may set a deadline in this event's step (a try for the
    /// re-authentication lock runs until the owner's time plus its bound): only then does the
    /// driver read the clock for it.
    #[inline]
    pub(crate) fn sets_deadlines(&self) -> bool {
        matches!(
            self,
            Self::CallFailed { .. } | Self::LockAll(_) | Self::LockTaken { .. }
        )
    }
}

/// What the owner answers a waiter.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// An explicit change, a flush, a refresh write or a lock all's lock: its result.
    Done(Result<(), Error>),
    /// The session holds a token to go on (replay) with.
    Replay,
    /// The session could not be recovered.
    Failed(Error),
    /// Run the re-authenticator (run `n`: the waiter answered so), and report with
    /// [`Event::Reauthenticated`].
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

/// What to do with the re-authentication lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockOp {
    /// Try for it, and report with [`Event::LockTaken`].
    Take(LockTry),
    /// Let go of the lock the try numbered so took.
    Release(u64),
}

/// A try for the re-authentication lock: until `until` at the latest; `recovery`: a recovery
/// asked (a command-line client says it waits for another process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockTry {
    /// The try's number.
    pub(crate) attempt: u64,
    /// When it gives up: the owner's time plus the store's bound.
    pub(crate) until: Instant,
    /// Asked for by a recovery.
    pub(crate) recovery: bool,
}

/// How a try for the re-authentication lock ended.
#[derive(Debug, Clone)]
pub(crate) enum LockOutcome {
    /// This process holds it.
    Held,
    /// Not had: the bound passed (a holder stopped), the try was abandoned, or it could not be
    /// made (the error says why).
    NotHeld(Option<Error>),
}

/// What the driver must do after a step.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// The answer to the event's own waiter, when it is answered at once. `None` for an event
    /// with a waiter: it waits, and its answer comes in a later step's `answers` (or this one's).
    pub(crate) reply: Option<Answer>,
    /// Start this read (none is in flight).
    pub(crate) read: Option<ReadOp>,
    /// Start this write (none is in flight). Boxed: a write holds two tokens, and the effects
    /// move through every step.
    pub(crate) write: Option<Box<WriteOp>>,
    /// Answers to hand to waiters.
    pub(crate) answers: Vec<(WaiterId, Answer)>,
    /// The token calls use changed: publish it.
    pub(crate) publish: bool,
    /// Take or release the re-authentication lock, in this order.
    pub(crate) lock: Vec<LockOp>,
    /// What to log, once the owner's mutex is let go.
    pub(crate) notes: Vec<Note>,
}
