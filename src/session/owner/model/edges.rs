//! The model's edges, as the driver's are: reads and writes of the shared store landing at
//! any point between their start and their report, the watch's events (delayed, coalesced,
//! lost), the re-authentication lock held elsewhere or not to be had, the re-authenticator
//! (which may fail), and lock alls.

use super::*;

impl World {
    pub(super) fn run_read(&mut self, p: usize) {
        let stored = Stored {
            token: self.store.clone(),
            version: self
                .store
                .as_ref()
                .map(|_| Version::new(self.store_version)),
        };
        if let Some((_, result @ None)) = &mut self.process(p).read {
            *result = Some(Ok(stored));
        }
    }

    pub(super) fn run_write(&mut self, p: usize, faults: bool) {
        let Some((op, None)) = self.process(p).write.clone() else {
            return;
        };
        let result = if faults && self.rng.chance(15) {
            if self.rng.chance(30) {
                // Written, then failed (an `fsync` of the directory; a store of the user's own
                // that panics after its write): the store changed, the report says it failed.
                if let WriteOp::Store(token) | WriteOp::Swap { new: token, .. } = &op {
                    self.store = Some(token.clone());
                    self.process(p).seen.insert(key(&Some(token.clone())));
                    self.changed();
                }
                Err(Error::Store(std::sync::Arc::new(std::io::Error::other(
                    "the session's store work stopped before it was done",
                ))))
            } else if self.rng.chance(50) {
                Err(Error::Locked {
                    path: "token.lock".into(),
                    waited: std::time::Duration::ZERO,
                })
            } else {
                Err(Error::Store(std::sync::Arc::new(std::io::Error::other(
                    "disk full",
                ))))
            }
        } else {
            match op {
                WriteOp::Store(token) => {
                    self.store = Some(token.clone());
                    self.process(p).seen.insert(key(&Some(token)));
                    self.changed();
                    Ok(Written::Stored(Version::new(self.store_version)))
                }
                WriteOp::Clear => {
                    self.store = None;
                    self.process(p).seen.insert(key(&None));
                    self.changed();
                    Ok(Written::Cleared)
                }
                WriteOp::Swap { expected, new } => {
                    assert!(
                        expected.is_none() || self.process(p).seen.contains(&key(&expected)),
                        "a swap expecting a token it never saw"
                    );
                    if self.store == expected {
                        self.store = Some(new.clone());
                        self.process(p).seen.insert(key(&Some(new)));
                        self.changed();
                        Ok(Written::Swapped(Swap::Replaced(Version::new(
                            self.store_version,
                        ))))
                    } else {
                        let found = self.store.clone();
                        self.process(p).seen.insert(key(&found.clone()));
                        let version = found.as_ref().map(|_| Version::new(self.store_version));
                        Ok(Written::Swapped(Swap::Lost(Stored {
                            token: found,
                            version,
                        })))
                    }
                }
            }
        };
        if let Some((_, slot)) = &mut self.process(p).write {
            *slot = Some(result);
        }
    }

    pub(super) fn deliver_io(&mut self, p: usize) {
        if self.rng.chance(50) {
            if let Some((_, Some(_))) = &self.process(p).read
                && let Some((_, Some(result))) = self.process(p).read.take()
            {
                if let Ok(stored) = &result {
                    self.process(p).seen.insert(key(&stored.token.clone()));
                }
                self.tell(p, Event::ReadDone(result));
            }
        } else if let Some((_, Some(_))) = &self.process(p).write
            && let Some((_, Some(result))) = self.process(p).write.take()
        {
            self.tell(p, Event::WriteDone(result));
        }
    }

    pub(super) fn deliver_watch(&mut self, p: usize, faults: bool) {
        if !std::mem::take(&mut self.process(p).watch_event) {
            return;
        }
        if faults && self.rng.chance(20) {
            return; // lost
        }
        self.tell(p, Event::StoreChanged);
    }

    /// The process's try for the lock: taken if free; given up when abandoned or at its
    /// time; with faults, it may fail (the lock file cannot be made).
    pub(super) fn try_lock(&mut self, p: usize, faults: bool) {
        let Some((attempt, until)) = self.process(p).lock_try else {
            return;
        };
        // Asked of the owner between the try's waits, as the driver's try does.
        let abandoned = !self.owner(p).lock_try_wanted(attempt);
        let outcome = if self.lock_holder.is_none() && !(faults && self.rng.chance(10)) {
            LockOutcome::Held
        } else if faults && self.rng.chance(5) {
            LockOutcome::NotHeld(Some(Error::Store(std::sync::Arc::new(
                std::io::Error::other("cannot make the lock file"),
            ))))
        } else if abandoned {
            LockOutcome::NotHeld(None)
        } else if self.now >= until {
            LockOutcome::NotHeld(Some(Error::Locked {
                path: "token.reauth.lock".into(),
                waited: LOCK_WAIT,
            }))
        } else {
            return;
        };
        self.process(p).lock_try = None;
        match &outcome {
            LockOutcome::Held => {
                self.lock_holder = Some(p);
                self.process(p).lock_held = Some(attempt);
                self.process(p).gave_up = false;
            }
            LockOutcome::NotHeld(Some(_)) => self.process(p).gave_up = true,
            LockOutcome::NotHeld(None) => {}
        }
        self.tell(p, Event::LockTaken { attempt, outcome });
    }

    pub(super) fn run_reauth(&mut self, p: usize) {
        let Some((number, call)) = self.process(p).reauths.pop() else {
            return;
        };
        self.process(p).reauth_runs += 1;
        if self.faults && self.rng.chance(15) {
            // The password was refused: the runner's call and those waiting fail.
            let error =
                Error::Reauthentication(std::sync::Arc::new(std::io::Error::other("refused")));
            let answer = self.tell(
                p,
                Event::Reauthenticated {
                    run: number,
                    result: Err(error),
                },
            );
            assert!(
                matches!(answer, Some(Answer::Failed(_))),
                "a failed re-authentication answered {answer:?}"
            );
            self.process(p).calls.remove(&call);
            self.reauth_failed_calls += 1;
            return;
        }
        let token = self.mint();
        let answer = self.tell(
            p,
            Event::Reauthenticated {
                run: number,
                result: Ok(token),
            },
        );
        assert!(
            matches!(answer, Some(Answer::Replay)),
            "a re-authentication answered {answer:?}"
        );
        // The runner's own call replays.
        assert!(
            self.owner(p).current().0.is_some(),
            "the runner replays without a token"
        );
        self.process(p).calls.remove(&call);
        self.send(p, true);
    }

    /// A waiting call goes away (dropped, timed out): a runner, or another waiting call.
    pub(super) fn drop_waiting(&mut self, p: usize) {
        if self.rng.chance(50) {
            let Some((number, call)) = self.process(p).reauths.pop() else {
                return;
            };
            self.process(p).calls.remove(&call);
            self.tell(p, Event::Gone(number));
        } else {
            let waiting: Vec<(WaiterId, u64)> = self
                .process(p)
                .waiting
                .iter()
                .map(|(w, c)| (*w, *c))
                .collect();
            if waiting.is_empty() {
                return;
            }
            let (waiter, call) = waiting[self.rng.below(waiting.len())];
            self.process(p).waiting.remove(&waiter);
            self.process(p).calls.remove(&call);
            self.process(p).answered.insert(waiter);
            self.tell(p, Event::Gone(waiter));
        }
    }

    /// `Session::clear_after` begins: it asks for the lock, and locks all once answered (held,
    /// or not to be had).
    pub(super) fn begin_clear(&mut self, p: usize) {
        if self.process(p).clearing.is_some() {
            return;
        }
        self.process(p).waiters += 1;
        let waiter = self.process(p).waiters;
        self.process(p).clearing = Some((waiter, false));
        let effects = self.owner_handle(p, Event::LockAll(waiter));
        if let Some(answer) = self.effects(p, effects, Some((waiter, None))) {
            // Answered at once: no other process's lock to wait for.
            self.process(p).answered.remove(&waiter);
            self.answered(p, waiter, answer);
        }
    }

    /// The lock all's lock is answered: every token ends at the agent, and this process
    /// locks.
    pub(super) fn lock_all(&mut self, p: usize) {
        self.valid.clear();
        self.ask(p, Event::Clear, None);
    }

    /// The lock all is over, answered or not (a dropped future): the lock goes, unless a
    /// recovery that began inside wants it still.
    pub(super) fn end_clear(&mut self, p: usize) {
        let Some((waiter, _)) = self.process(p).clearing.take() else {
            return;
        };
        self.tell(p, Event::Gone(waiter));
    }
}
