//! The owner's write lane: explicit writes in the order of their epochs, then the newest
//! refresh, one at a time; and who waits for them (a call's refresh, a flush, an explicit
//! change).

use std::collections::{BTreeSet, VecDeque};

use crate::error::Error;
use crate::session::policy::outlives;
use crate::store::{Stored, Swap};
use crate::token::Token;

use super::{Answer, Failure, Note, Owner, WaiterId, WriteOp, Written};

/// The write lane.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// Explicit writes not yet started, oldest first, each with its sequence number.
    explicit: VecDeque<(WriteOp, u64)>,
    /// The newest refresh not yet started, and its sequence number.
    pending: Option<(Token, u64)>,
    /// The write in flight: what it writes, its number, and the epoch it started in.
    in_flight: Option<InFlight>,
    /// Sequence numbers handed out so far.
    submitted: u64,
    /// The numbers of the writes not settled (done or superseded).
    pub(super) unsettled: BTreeSet<u64>,
    /// The calls, flushes and explicit changes waiting for them: each for every write up to its
    /// number. (An explicit write is settled last of those up to its own: the change dropped
    /// the refresh waiting, and it waits behind the writes before it.)
    pub(super) waiters: VecDeque<(u64, WaiterId)>,
    /// The last write's error, for `Session::flush`; an explicit change starts afresh.
    last_error: Option<Error>,
    /// How writes are failing now, if they are: warned of once per episode.
    pub(super) failing: Option<Failure>,
}

#[derive(Debug)]
struct InFlight {
    op: WriteOp,
    seq: u64,
    epoch: u64,
    /// A read adopted what the store held while this write was under way: it saw the store
    /// after this write began, so this write's report no longer says what the store holds.
    overtaken: bool,
}

impl Writes {
    /// What the write in flight puts in the store, if one is.
    pub(super) fn in_flight_target(&self) -> Option<Option<Token>> {
        self.in_flight.as_ref().map(|w| target(&w.op))
    }

    /// A read adopted what the store holds: the write under way, if any, no longer tells.
    pub(super) fn overtaken(&mut self) {
        if let Some(w) = &mut self.in_flight {
            w.overtaken = true;
        }
    }

    /// The number of the refresh's write, waiting or under way, whose token passes `test`.
    fn refresh_write(&self, test: impl Fn(&Token) -> bool) -> Option<u64> {
        match (&self.pending, &self.in_flight) {
            (Some((token, seq)), _) if test(token) => Some(*seq),
            (_, Some(w)) if matches!(&w.op, WriteOp::Swap { new, .. } if test(new)) => Some(w.seq),
            _ => None,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.submitted += 1;
        self.unsettled.insert(self.submitted);
        self.submitted
    }
}

fn target(op: &WriteOp) -> Option<Token> {
    match op {
        WriteOp::Store(token) | WriteOp::Swap { new: token, .. } => Some(token.clone()),
        WriteOp::Clear => None,
    }
}

impl Owner {
    /// Queues an explicit write, answered to `waiter` once over; returns its number.
    pub(super) fn queue_explicit(&mut self, op: WriteOp, waiter: Option<WaiterId>) -> u64 {
        self.writes.last_error = None;
        self.unconfirmed = None;
        let seq = self.writes.next_seq();
        self.writes.explicit.push_back((op, seq));
        self.writes
            .waiters
            .extend(waiter.map(|waiter| (seq, waiter)));
        self.next_write();
        seq
    }

    /// A refresh waiting to be written is superseded by an explicit change.
    pub(super) fn drop_pending_refresh(&mut self) {
        if let Some((_, seq)) = self.writes.pending.take() {
            self.settle(seq);
        }
    }

    /// A refreshed token that came back on a response to a call sent in `epoch`: answered at
    /// once, or `waiter` waits for the write that covers it.
    pub(super) fn refresh(&mut self, token: Token, epoch: u64, waiter: WaiterId) -> Option<Answer> {
        const DONE: Option<Answer> = Some(Answer::Done(Ok(())));
        if epoch != self.epoch {
            self.note(Note::StaleRefresh);
            return DONE;
        }
        if self.synced.as_ref() == Some(&token) {
            return DONE;
        }
        if let Some(seq) = self.writes.refresh_write(|t| *t == token) {
            return self.wait_for_write(seq, waiter);
        }
        // Keep the freshest token in memory (responses can arrive out of order); of two that
        // expire together, the newer.
        if !outlives(self.current.as_ref(), &token) {
            self.current = Some(token.clone());
            self.effects.publish = true;
        }
        self.counts.refreshes += 1;
        // A token the store's (or one on its way there) covers, as the agent's tokens go,
        // buys nothing by being written.
        let agent_tokens = self.agent_tokens;
        let covered = |held: Option<&Token>| agent_tokens.covers(held, &token);
        if covered(self.synced.as_ref()) {
            self.counts.skipped_writes += 1;
            self.note(Note::RefreshCovered);
            return DONE;
        }
        if let Some(seq) = self.writes.refresh_write(|t| covered(Some(t))) {
            self.counts.skipped_writes += 1;
            return self.wait_for_write(seq, waiter);
        }
        self.note(Note::RefreshAccepted);
        // A newer refresh takes the place of one not yet started, and its number: the calls
        // waiting for that one wait for this one's write.
        let seq = match self.writes.pending.take() {
            Some((_, seq)) => seq,
            None => self.writes.next_seq(),
        };
        self.writes.pending = Some((token, seq));
        let wait = self.wait_for_write(seq, waiter);
        self.next_write();
        wait
    }

    /// A call whose token is covered by write `seq`: `waiter` waits for it, if calls wait.
    fn wait_for_write(&mut self, seq: u64, waiter: WaiterId) -> Option<Answer> {
        if !self.agent_tokens.call_waits() {
            return Some(Answer::Done(Ok(())));
        }
        self.writes.waiters.push_back((seq, waiter));
        self.release_settled();
        None
    }

    /// `Session::flush`: answered once every write handed out so far is settled, with the last
    /// write's error.
    pub(super) fn flush(&mut self, waiter: WaiterId) {
        self.writes
            .waiters
            .push_back((self.writes.submitted, waiter));
        self.release_settled();
    }

    fn settle(&mut self, seq: u64) {
        self.writes.unsettled.remove(&seq);
        self.release_settled();
    }

    /// Answers every waiter whose writes are all settled.
    fn release_settled(&mut self) {
        let first_open = self.writes.unsettled.first().copied();
        let result = self.writes.last_error.clone().map_or(Ok(()), Err);
        let answers = &mut self.effects.answers;
        self.writes.waiters.retain(|&(seq, waiter)| {
            let open = first_open.is_some_and(|open| open <= seq);
            if !open {
                answers.push((waiter, Answer::Done(result.clone())));
            }
            open
        });
    }

    /// Starts the next write if none is in flight: the oldest explicit one, else the newest
    /// refresh (unless what the store holds now covers it).
    fn next_write(&mut self) {
        while self.writes.in_flight.is_none() {
            let (op, seq) = if let Some(next) = self.writes.explicit.pop_front() {
                next
            } else if let Some((token, seq)) = self.writes.pending.take() {
                // The write that just finished may have put a fresher token in the store than
                // this one, which arrived while it was under way: never write an older one.
                if self.agent_tokens.covers(self.synced.as_ref(), &token) {
                    self.settle(seq);
                    continue;
                }
                let op = WriteOp::Swap {
                    expected: self.synced.clone(),
                    new: token,
                };
                (op, seq)
            } else {
                return;
            };
            // A read under way may find its target: this process's doing.
            if let Some(read) = &mut self.reads.in_flight {
                read.ours.push(target(&op));
            }
            self.effects.write = Some(Box::new(op.clone()));
            self.writes.in_flight = Some(InFlight {
                op,
                seq,
                epoch: self.epoch,
                overtaken: false,
            });
        }
    }

    /// The write in flight is over.
    ///
    /// What it wrote is what the store holds, unless a read adopted another process's token
    /// meanwhile (`overtaken`). A compare-and-swap that replaced came before that read (the
    /// read found neither what it expected nor what it wrote), so the read's finding stands. An
    /// explicit write or removal may have come before or after it: a read tells which.
    pub(super) fn write_done(&mut self, result: Result<Written, Error>) {
        let Some(w) = self.writes.in_flight.take() else {
            return;
        };
        self.writes.last_error = result.as_ref().err().cloned();
        let refresh = matches!(w.op, WriteOp::Swap { .. });
        match result {
            Ok(written) => {
                // What the store holds is known again: a failed write's target no longer stands
                // for it.
                self.unconfirmed = None;
                // The store works: a failure of either kind after this is a new episode.
                self.reads.failing = None;
                if self.writes.failing.take().is_some() {
                    self.note(Note::WritableAgain);
                }
                let known = |owner: &mut Self, version| {
                    if !w.overtaken {
                        owner.synced = target(&w.op);
                        owner.version = version;
                    } else if !refresh {
                        // Overtaken: a swap came before the read, an explicit write a read tells.
                        owner.want_read();
                    }
                };
                match written {
                    Written::Stored(version) => known(self, Some(version)),
                    Written::Cleared => known(self, None),
                    Written::Swapped(Swap::Replaced(version)) => {
                        self.counts.writes += 1;
                        known(self, Some(version));
                        self.note(Note::RefreshWritten);
                    }
                    Written::Swapped(Swap::Lost(found)) => self.refresh_lost(found, w.epoch),
                }
            }
            // A lock held elsewhere is warned of each time, since it is rare.
            Err(e @ Error::Locked { .. }) => {
                self.counts.lock_timeouts += 1;
                self.note(Note::LockTimedOut(e));
            }
            Err(e) => {
                // Warned of once per episode of one kind of failure (a read-only or full disk
                // fails every refresh), `DEBUG` after; not at all when reads are in the midst
                // of the same failure (a keyring gone fails both).
                self.counts.failed_writes += 1;
                let first = self.is_news(&e);
                self.writes.failing = Some(std::mem::discriminant(&e));
                self.note(Note::WriteFailed {
                    error: e,
                    refresh,
                    first,
                });
                // It may have failed after its rename: a read tells.
                self.unconfirmed = Some(target(&w.op));
                self.want_read();
            }
        }
        self.settle(w.seq);
        self.next_write();
    }

    /// A refresh's compare-and-swap found another token, or none: another process's unlock or
    /// lock won. Used, unless the session changed since or an explicit write will replace it.
    fn refresh_lost(&mut self, found: Stored, epoch: u64) {
        self.counts.lost_refreshes += 1;
        let token_found = found.token.is_some();
        self.note(Note::RefreshLost { token_found });
        if found.token.is_none() && found.version.is_some() {
            self.note(Note::Blank);
            self.version = found.version;
            return;
        }
        if epoch != self.epoch || !self.writes.explicit.is_empty() {
            self.synced = found.token;
            self.version = found.version;
            return;
        }
        self.adopt(found);
    }
}
