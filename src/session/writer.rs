//! Refreshed tokens on their way to the store: which are worth writing, the writer that
//! writes them one at a time (group commit), and what calls wait for.

use super::policy::outlives;
use super::*;

impl Session {
    /// Waits until every refreshed token this session accepted so far, and every token a
    /// password call brought, is on disk (or was found superseded there), and reports the last
    /// write's error if it failed.
    ///
    /// # Errors
    ///
    /// The last write's error: [`Error::Locked`] when another process held the session file's
    /// lock past the bound, [`Error::WriteFile`] when the file could not be written.
    pub async fn flush(&self) -> Result<(), Error> {
        let mut password_writes = self.shared.password_writes.subscribe();
        // The sender lives in the session: waiting cannot fail.
        let _ = password_writes.wait_for(|&n| n == 0).await;
        let wait = {
            let mut state = self.shared.lock();
            if state.finished >= state.submitted {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let seq = state.submitted;
                state.waiters.push((seq, tx));
                Some(rx)
            }
        };
        if let Some(rx) = wait {
            let _ = rx.await;
        }
        match self.shared.lock().last_write_error.clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts the session with the token a password call sent in `epoch` brought (an explicit
    /// write, off the async workers), unless the session changed since (a lock, say). A failed
    /// write is reported by [`Session::flush`].
    pub(crate) fn start_from_password(&self, token: Token, epoch: u64) -> Refresh {
        if self.shared.current.load().token.as_ref() == Some(&token) {
            return Refresh::Done;
        }
        let (done, saved) = oneshot::channel::<()>();
        let write = PasswordWrite::new(self.clone());
        spawn_blocking_anywhere(move || {
            let shared = &write.session.shared;
            watch::arm(shared);
            shared.in_gate(|| {
                if shared.lock().epoch != epoch {
                    tracing::debug!("password call's token dropped: the session changed since");
                } else if let Err(e) = shared.start_blocking(token) {
                    tracing::warn!(error = %e, "cannot write the token a password call brought");
                    shared.lock().last_write_error = Some(e);
                }
            });
            drop(done);
        });
        Refresh::Saving(Saved::new(saved, self.shared.call_wait))
    }

    /// Keeps a failed write of a token the session took on its own (a recovery's) for
    /// [`Session::flush`] to report.
    pub(crate) fn note_write_error(&self, error: Error) {
        self.shared.lock().last_write_error = Some(error);
    }

    /// Takes a refreshed token that came back on a response to a call sent in `epoch`.
    pub(crate) fn accept_refresh(&self, token: Token, epoch: u64) -> Refresh {
        let shared = &self.shared;
        if shared.current.load().epoch != epoch {
            tracing::debug!("refreshed token dropped: the session changed since the call");
            return Refresh::Done;
        }
        let mut state = shared.lock();
        if state.epoch != epoch {
            tracing::debug!("refreshed token dropped: the session changed since the call");
            return Refresh::Done;
        }
        // The same token again (an agent that does not rotate, or two responses carrying one
        // token): wait for whatever write is taking it to disk, if any.
        if state.synced.as_ref() == Some(&token) {
            return Refresh::Done;
        }
        if state.pending.as_ref() == Some(&token) {
            let seq = state.submitted;
            return shared.wait_for(&mut state, seq);
        }
        if let Some((writing, seq)) = &state.writing
            && *writing == token
        {
            let seq = *seq;
            return shared.wait_for(&mut state, seq);
        }
        // Keep the freshest token in memory (responses can arrive out of order); of two that
        // expire together, the newer.
        if !outlives(shared.current.load().token.as_ref(), &token) {
            shared.current.store(Arc::new(Current {
                token: Some(token.clone()),
                epoch,
            }));
        }
        shared.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        // A token the store's (or one on its way there) covers, as the agent's tokens go,
        // buys nothing by being written.
        let covered = |held: Option<&Token>| shared.agent_tokens.covers(held, &token);
        if covered(state.synced.as_ref()) {
            shared.stats.skipped_writes.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("refresh accepted; the file's token lives as long");
            return Refresh::Done;
        }
        let covering = match (&state.pending, &state.writing) {
            (Some(pending), _) if covered(Some(pending)) => Some(state.submitted),
            (_, Some((writing, seq))) if covered(Some(writing)) => Some(*seq),
            _ => None,
        };
        if let Some(seq) = covering {
            shared.stats.skipped_writes.fetch_add(1, Ordering::Relaxed);
            return shared.wait_for(&mut state, seq);
        }
        tracing::debug!("refresh accepted");
        state.pending = Some(token);
        state.submitted += 1;
        let seq = state.submitted;
        let wait = shared.wait_for(&mut state, seq);
        if !state.writer_running {
            state.writer_running = true;
            drop(state);
            let writer = Writer {
                session: self.clone(),
                done: false,
            };
            spawn_blocking_anywhere(move || writer.run());
        }
        wait
    }
}

impl Shared {
    /// What a call whose refresh is covered by write `seq` waits for.
    fn wait_for(&self, state: &mut State, seq: u64) -> Refresh {
        if !self.agent_tokens.call_waits() {
            return Refresh::Done;
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push((seq, tx));
        Refresh::Saving(Saved::new(rx, self.call_wait))
    }

    /// One refresh write: the newest pending refresh, compare-and-swapped against what this
    /// process last read or wrote. Returns false when there is nothing left to write.
    fn write_next(&self) -> bool {
        self.in_gate(|| self.write_next_in_gate())
    }

    fn write_next_in_gate(&self) -> bool {
        let (token, expected, seq) = {
            let mut state = self.lock();
            let Some(token) = state.pending.take() else {
                state.writer_running = false;
                return false;
            };
            let seq = state.submitted;
            // The write that just finished may have put a fresher token on disk than this
            // one, which arrived while it was under way: never write an older token over it.
            if self.agent_tokens.covers(state.synced.as_ref(), &token) {
                state.finished = state.finished.max(seq);
                release_waiters(&mut state);
                return true;
            }
            state.writing = Some((token.clone(), seq));
            (token, state.synced.clone(), seq)
        };
        let started = Instant::now();
        let result = self.store.swap(expected.as_ref(), &token);
        // A write that failed after its rename left the token on disk all the same: find out,
        // so that it is not taken for another process's later.
        let on_disk = match &result {
            Err(Error::Locked { .. }) | Ok(_) => None,
            Err(_) => self.store.load().ok(),
        };
        let mut state = self.lock();
        state.writing = None;
        // Every change of epoch happens inside the gate, so the epoch is the one the refresh
        // was accepted in.
        match result {
            Ok(Swap::Replaced(version)) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                state.synced = Some(token);
                state.version = Some(version);
                state.last_write_error = None;
                tracing::debug!(elapsed = ?started.elapsed(), "refreshed token written");
            }
            Ok(Swap::Lost(snapshot)) => {
                self.stats.lost_refreshes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    token_found = snapshot.token.is_some(),
                    "refresh lost to another process; using what the file holds"
                );
                if !self.keep_while_blank(&mut state, &snapshot) {
                    self.adopt(&mut state, snapshot);
                }
            }
            Err(e) => {
                if let Error::Locked { .. } = e {
                    self.stats.lock_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        "refreshed token kept in memory; it is written with a later refresh"
                    );
                } else {
                    tracing::warn!(error = %e, "cannot write the refreshed token");
                }
                if let Some(stored) = on_disk
                    && stored.token.as_ref() == Some(&token)
                {
                    state.synced = stored.token;
                    state.version = stored.version;
                }
                state.last_write_error = Some(e);
            }
        }
        state.finished = state.finished.max(seq);
        release_waiters(&mut state);
        true
    }
}

/// A write of the token a password call brought, counted while it is under way (dropped unrun
/// included), so that [`Session::flush`] waits for it.
struct PasswordWrite {
    session: Session,
}

impl PasswordWrite {
    fn new(session: Session) -> Self {
        session.shared.password_writes.send_modify(|n| *n += 1);
        Self { session }
    }
}

impl Drop for PasswordWrite {
    fn drop(&mut self) {
        let writes = &self.session.shared.password_writes;
        writes.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The refresh writer of a session: writes until nothing is pending (group commit: one runs
/// at a time, and each write takes the newest refresh). If it dies or never runs, dropping it
/// releases every waiter, so no call waits forever.
struct Writer {
    session: Session,
    done: bool,
}

impl Writer {
    fn run(mut self) {
        while self.session.shared.write_next() {}
        self.done = true;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let shared = &self.session.shared;
            let mut state = shared.lock();
            tracing::error!("the session's refresh writer stopped early");
            if state.pending.is_some() || state.writing.is_some() {
                // `flush` must not say the refresh is stored.
                state.last_write_error = Some(Error::Store(Arc::new(std::io::Error::other(
                    "the session's refresh writer stopped before it wrote the refresh",
                ))));
            }
            state.writer_running = false;
            state.pending = None;
            state.writing = None;
            state.finished = state.submitted;
            release_waiters(&mut state);
        }
    }
}

pub(super) fn release_waiters(state: &mut State) {
    let finished = state.finished;
    state.waiters.retain_mut(|(seq, _)| *seq > finished);
    // Dropping a sender wakes its receiver; no value is needed.
}
