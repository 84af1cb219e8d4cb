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

    /// Runs `end_all` (the agent's lock all), then clears the session ([`Session::clear`]), as
    /// one step for every process that shares the session file: this process holds the
    /// re-authentication lock beside the file across both, so that no other process
    /// re-authenticates in between (its new token would be removed with the file, and its calls
    /// fail again). Nothing is cleared if `end_all` fails.
    ///
    /// The lock is waited for at most [`TokenFile::reauth_wait`](crate::TokenFile::reauth_wait); past it, `end_all` runs
    /// without it.
    ///
    /// ```no_run
    /// # async fn run(session: agent_session::Session,
    /// #     mut client: agent_session::proto::AgentServiceClient<tonic::transport::Channel>)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use agent_session::proto::EmptyMessage;
    ///
    /// session
    ///     .clear_after(async { client.sessions_lock_all(EmptyMessage {}).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `end_all`'s error, or [`Session::clear`]'s.
    pub async fn clear_after<T, E: From<Error>>(
        &self,
        end_all: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let held = match self.shared.file.clone() {
            Some(file) => {
                let (tx, rx) = oneshot::channel();
                spawn_blocking_anywhere(move || {
                    let _ = tx.send(file.take_reauth_lock(|| true, |_| {}));
                });
                match rx.await {
                    Ok(Ok(crate::file::Taken::Held(guard))) => {
                        self.shared.reauth_guard().explicit = Some(guard);
                        self.shared.step(|owner| owner.lock_all_holds_reauth_lock());
                        true
                    }
                    Ok(Ok(crate::file::Taken::TimedOut | crate::file::Taken::Unwanted)) => {
                        tracing::warn!(
                            "another process holds the re-authentication lock too long; \
                             locking all without it"
                        );
                        false
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => false,
                }
            }
            None => false,
        };
        // Let go however this ends, a dropped future included.
        let _release = ReleaseOnDrop(held.then_some(&self.shared));
        let ended = end_all.await?;
        self.clear().await?;
        Ok(ended)
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
        // The owner drops it if the session changed since the call (one place decides).
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

    /// A call sent with `sent` (the session's token then, or none) in `epoch` failed for its
    /// session: `None` when the session already holds a token to replay with, else the
    /// recovery's answer to wait for.
    pub(crate) fn call_failed(&self, sent: Option<Token>, epoch: u64) -> Option<Waiting> {
        let expired = sent
            .as_ref()
            .and_then(Token::expires_at)
            .is_some_and(|exp| exp <= SystemTime::now());
        self.shared
            .step_and_wait(|owner| match owner.call_failed(sent, epoch, expired) {
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

    /// Waits for every write handed out so far, at most the call bound
    /// ([`SessionBuilder::call_wait`]).
    pub(crate) async fn written_within_call_bound(&self) {
        if let Some(waiting) = self.shared.step_and_wait(|owner| Some(owner.flush())) {
            Saved::new(waiting, self.shared.call_wait).await;
        }
    }

    /// Whether the token in `epoch` came from a re-authentication.
    pub(crate) fn just_recovered(&self, epoch: u64) -> bool {
        self.shared.step(|owner| owner.just_recovered(epoch))
    }
}

/// Lets go of the lock [`Session::clear_after`] holds.
struct ReleaseOnDrop<'a>(Option<&'a Arc<Shared>>);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            // In the owner's step, so that no recovery begins under a lock already gone, and a
            // release the owner asks for later finds the lock where it looks for it: a recovery
            // that began inside keeps the lock, as its own.
            let let_go = shared.step(|owner| {
                let mut guards = shared.reauth_guard();
                let explicit = guards.explicit.take();
                if owner.lock_all_lets_go() {
                    guards.recovery = explicit;
                    None
                } else {
                    explicit
                }
            });
            drop(let_go);
        }
    }
}
