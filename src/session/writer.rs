//! What calls hand the session on their way back: a refreshed token, a password call's token,
//! a session failure to recover from; and [`Session::flush`]. Each is one event for the owner.

use super::*;

impl Session {
    /// Waits until every refreshed token this session accepted so far, and every token a
    /// password call or a recovery brought, is in the store (or was found superseded there),
    /// and reports the last write's error if it failed.
    ///
    /// # Errors
    ///
    /// The last write's error: [`Error::Locked`] when another process held the session file's
    /// lock past the bound, [`Error::WriteFile`] when the file could not be written.
    pub async fn flush(&self) -> Result<(), Error> {
        self.explicit(owner::Owner::flush).await
    }

    /// Starts the session with the token a password call sent in `epoch` brought (an explicit
    /// write, off the async workers), unless the session changed since (a lock, say). A failed
    /// write is reported by [`Session::flush`].
    pub(crate) fn start_from_password(&self, token: Token, epoch: u64) -> Refresh {
        let waiting = self
            .shared
            .step_and_wait(|owner| owner.password_token(token, epoch));
        self.saving(waiting)
    }

    /// Takes a refreshed token that came back on a response to a call sent in `epoch`.
    pub(crate) fn accept_refresh(&self, token: Token, epoch: u64) -> Refresh {
        if self.shared.current.load().epoch != epoch {
            tracing::debug!("refreshed token dropped: the session changed since the call");
            return Refresh::Done;
        }
        let waiting = self
            .shared
            .step_and_wait(|owner| match owner.refresh(token, epoch) {
                owner::Refreshed::Done => None,
                owner::Refreshed::Wait(waiter) => Some(waiter),
            });
        self.saving(waiting)
    }

    fn saving(&self, waiting: Option<Waiting>) -> Refresh {
        match waiting {
            Some(waiting) => Refresh::Saving(Saved::new(waiting, self.shared.call_wait)),
            None => Refresh::Done,
        }
    }

    /// A call sent with `sent` (the session's token then, or none) failed for its session:
    /// `None` when the session already holds a token that did not fail (replay at once), else
    /// the recovery's answer to wait for.
    pub(crate) fn call_failed(&self, sent: Option<Token>) -> Option<Waiting> {
        self.shared
            .step_and_wait(|owner| match owner.call_failed(sent) {
                Failed::Replay => None,
                Failed::Wait(waiter) => Some(waiter),
            })
    }

    /// The re-authenticator of recovery `number` is done: what its runner does next.
    pub(crate) fn reauthenticated(&self, number: u64, result: Result<Token, Error>) -> Answer {
        self.shared
            .step(|owner| owner.reauthenticated(number, result))
    }

    /// The runner of recovery `number` stopped before its re-authenticator finished.
    pub(crate) fn runner_gone(&self, number: u64) {
        self.shared.step(|owner| owner.runner_gone(number));
    }

    /// Whether the token in `epoch` came from a re-authentication.
    pub(crate) fn just_recovered(&self, epoch: u64) -> bool {
        self.shared.step(|owner| owner.just_recovered(epoch))
    }
}
