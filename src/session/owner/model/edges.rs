//! The model's edges, as the driver's are: reads and writes of the shared store landing at
//! any point between their start and their report, the watch's events (delayed, coalesced,
//! lost), the re-authentication lock held elsewhere, and the re-authenticator.

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
            if self.rng.chance(50) {
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
                self.owner(p).read_done(result);
                self.effects(p, &[]);
            }
        } else if let Some((_, Some(_))) = &self.process(p).write
            && let Some((_, Some(result))) = self.process(p).write.take()
        {
            self.owner(p).write_done(result);
            self.effects(p, &[]);
        }
    }

    pub(super) fn deliver_watch(&mut self, p: usize, faults: bool) {
        if !std::mem::take(&mut self.process(p).watch_event) {
            return;
        }
        if faults && self.rng.chance(20) {
            return; // lost
        }
        self.owner(p).store_changed();
        self.effects(p, &[]);
    }

    /// The process's try for the lock: taken if free; with faults, it may give up (its bound
    /// passed: the holder is stopped).
    pub(super) fn try_lock(&mut self, p: usize, faults: bool) {
        if !self.process(p).lock_asked {
            return;
        }
        let wanted = self.owner(p).reauth_lock_wanted();
        let gives_up = faults && self.rng.chance(10);
        let taken = match self.lock_holder {
            None => LockTaken::Held,
            Some(_) if !wanted || gives_up => LockTaken::No,
            Some(_) => return,
        };
        self.process(p).lock_asked = false;
        if taken == LockTaken::Held {
            self.lock_holder = Some(p);
            self.process(p).lock_held = true;
        }
        self.owner(p).reauth_lock_taken(taken);
        self.effects(p, &[]);
    }

    pub(super) fn run_reauth(&mut self, p: usize) {
        let Some((number, call)) = self.process(p).reauths.pop() else {
            return;
        };
        self.process(p).reauth_runs += 1;
        let token = self.mint();
        let answer = self.owner(p).reauthenticated(number, Ok(token));
        assert!(
            matches!(answer, Answer::Replay),
            "a re-authentication answered {answer:?}"
        );
        // The runner's own call replays.
        assert!(
            self.owner(p).current().0.is_some(),
            "the runner replays without a token"
        );
        self.process(p).calls.remove(&call);
        self.send(p, true);
        self.effects(p, &[]);
    }

    /// A waiting call goes away (dropped, timed out): a runner's tells `runner_gone`, and another
    /// waiting call's `waiter_gone`.
    pub(super) fn drop_waiting(&mut self, p: usize) {
        if self.rng.chance(50) {
            let Some((number, call)) = self.process(p).reauths.pop() else {
                return;
            };
            self.process(p).calls.remove(&call);
            self.owner(p).runner_gone(number);
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
            self.owner(p).waiter_gone(waiter);
        }
        self.effects(p, &[]);
    }

    /// `Session::clear_after`: the process takes the lock if it is free, and locks all under
    /// it; a recovery that begins meanwhile goes on under it.
    pub(super) fn begin_clear(&mut self, p: usize) {
        if self.process(p).clearing || self.lock_holder.is_some() {
            return;
        }
        self.lock_holder = Some(p);
        self.process(p).clearing = true;
        self.owner(p).lock_all_holds_reauth_lock();
        self.valid.clear();
        let waiter = self.owner(p).clear();
        self.effects(p, &[(waiter, None)]);
    }

    /// The lock all is over: its lock goes, unless a recovery that began inside holds it still,
    /// which then has it as its own.
    pub(super) fn end_clear(&mut self, p: usize) {
        if !std::mem::take(&mut self.process(p).clearing) {
            return;
        }
        if self.owner(p).lock_all_lets_go() {
            self.process(p).lock_held = true;
        } else {
            assert!(!self.process(p).lock_held, "two guards of one lock");
            self.lock_holder = None;
        }
        self.effects(p, &[]);
    }
}
