//! The owner's read lane: one read of the store at a time; what a read found (this process's
//! own doing, a blank file being written, or another process's change); and the starts and
//! recoveries waiting for a read.

use crate::error::Error;
use crate::store::Stored;
use crate::token::Token;

use super::{Answer, Failure, Note, Owner, ReadOp, WaiterId};

/// The read lane: one read at a time, and what waits for the next.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// The read in flight, if any, and what it answers.
    pub(super) in_flight: Option<InFlight>,
    /// Another read is wanted once this one is done (it may have started too early).
    pub(super) wanted: bool,
    /// What the next read answers: the starts waiting for it, and whether it tidies.
    pub(super) starts: Vec<(u64, WaiterId)>,
    /// Reads started so far, to number them: the last is the one in flight, if one is. A
    /// recovery waits for one started after it.
    pub(super) started: u64,
    /// How reads are failing now, if they are: warned of once per episode (a keyring gone
    /// fails every read until it is back).
    pub(super) failing: Option<Failure>,
}

#[derive(Debug)]
pub(super) struct InFlight {
    /// Every token this process held in the store, or was writing there, while the read
    /// was under way: a read that finds one of them finds this process's doing.
    pub(super) ours: Vec<Option<Token>>,
    /// `Session::start`s it answers: the epoch each was asked in, and its waiter.
    pub(super) starts: Vec<(u64, WaiterId)>,
}
impl Owner {
    pub(super) fn want_read(&mut self) {
        if self.reads.in_flight.is_some() {
            self.reads.wanted = true;
            return;
        }
        self.reads.wanted = false;
        self.reads.started += 1;
        let starts = std::mem::take(&mut self.reads.starts);
        let mut ours = vec![self.synced.clone()];
        ours.extend(self.writes.in_flight_target());
        self.effects.read = Some(ReadOp {
            tidy: !starts.is_empty(),
        });
        self.reads.in_flight = Some(InFlight { ours, starts });
    }

    /// The read started last is over.
    pub(crate) fn read_done(&mut self, result: Result<Stored, Error>) {
        let Some(read) = self.reads.in_flight.take() else {
            return;
        };
        let failed = result.as_ref().err().map(std::mem::discriminant);
        let read_it = result.as_ref().map(|_| ()).map_err(Error::clone);
        match result {
            Ok(stored) if read.starts.iter().any(|(epoch, _)| *epoch == self.epoch) => {
                let token_found = stored.token.is_some();
                self.adopt(stored);
                self.note(Note::Started { token_found });
            }
            Ok(stored) => self.take_read(stored, &read.ours),
            // Keep the token we have: a bad file must not replace a good token. Once per
            // episode of one kind of failure, and not for one the writes are in the midst of (a
            // keyring gone fails both).
            Err(error) if read.starts.is_empty() => {
                let first = self.is_news(&error);
                self.note(Note::Unusable { error, first });
            }
            Err(_) => {}
        }
        self.reads.failing = failed;
        for (_, waiter) in read.starts {
            self.answer(waiter, Answer::Done(read_it.clone()));
        }
        self.recovery_read(read_it.is_ok());
        if self.reads.wanted || !self.reads.starts.is_empty() {
            self.want_read();
        }
    }

    /// Whether a read's or a write's failure is worth a warning: neither lane is in the midst
    /// of one of its kind already.
    pub(super) fn is_news(&self, error: &Error) -> bool {
        let kind = Some(std::mem::discriminant(error));
        self.reads.failing != kind && self.writes.failing != kind
    }

    /// What a read found, not asked for by a start: this process's own doing, a blank file
    /// being written, or another process's change.
    pub(super) fn take_read(&mut self, stored: Stored, ours: &[Option<Token>]) {
        if stored.token == self.synced {
            self.version = stored.version;
            return;
        }
        if self.unconfirmed.as_ref() == Some(&stored.token) {
            // A write that reported a failure had landed after all.
            self.unconfirmed = None;
            self.synced = stored.token;
            self.version = stored.version;
            return;
        }
        if ours.contains(&stored.token) {
            // Read while this process was writing: what the store held then, or holds now, is
            // known from the write's own report.
            return;
        }
        if stored.token.is_none() && stored.version.is_some() {
            // No writer of this library makes a blank file (a lock removes it), but a shell's
            // `echo … > token` truncates before it writes: keep the token until the write lands.
            self.note(Note::Blank);
            self.version = stored.version;
            return;
        }
        let token_found = stored.token.is_some();
        self.note(Note::ExternalChange { token_found });
        // Counted before the new epoch is published, so that whoever waits for the change
        // sees it counted.
        self.counts.external_changes += 1;
        self.adopt(stored);
    }
}
