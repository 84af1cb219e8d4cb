//! What the model takes in from a step: the effects each process's owner returns (reads,
//! writes, the lock's tries and releases, answers), checked against the invariants as they
//! come.

use super::*;

impl World {
    /// Takes in what `p`'s owner said to do; `asked`: the step's own waiter, and the call that
    /// waits on it. Returns the step's reply.
    pub(super) fn effects(
        &mut self,
        p: usize,
        effects: Effects,
        asked: Option<(WaiterId, Option<u64>)>,
    ) -> Option<Answer> {
        let now = self.now;
        let mut released = false;
        let process = &mut self.processes[p];
        if let Some((waiter, call)) = asked {
            if effects.reply.is_some() {
                assert!(process.answered.insert(waiter), "a waiter answered twice");
            } else if let Some(call) = call {
                process.waiting.insert(waiter, call);
            }
        }
        if let Some(op) = effects.read {
            assert!(process.read.is_none(), "two reads at once");
            process.read = Some((op, None));
        }
        if let Some(op) = effects.write {
            assert!(process.write.is_none(), "two writes at once");
            process.write = Some((*op, None));
        }
        for op in effects.lock {
            match op {
                LockOp::Take(LockTry { attempt, until, .. }) => {
                    assert!(
                        process.lock_try.is_none() && process.lock_held.is_none(),
                        "a try for a lock this process holds or tries for already"
                    );
                    assert_eq!(until, now + LOCK_WAIT, "a try's time is not the owner's");
                    process.lock_try = Some((attempt, until));
                }
                LockOp::Release(attempt) => {
                    assert_eq!(
                        process.lock_held,
                        Some(attempt),
                        "a lock released that is not held"
                    );
                    process.lock_held = None;
                    released = true;
                }
            }
        }
        if released {
            self.lock_holder = None;
        }
        for (waiter, answer) in effects.answers {
            self.answered(p, waiter, answer);
        }
        effects.reply
    }

    /// `waiter` of `p` is answered.
    pub(super) fn answered(&mut self, p: usize, waiter: WaiterId, answer: Answer) {
        assert!(
            self.process(p).answered.insert(waiter),
            "a waiter answered twice"
        );
        if let Some((w, answered)) = &mut self.process(p).clearing
            && *w == waiter
        {
            *answered = true;
            if matches!(answer, Answer::Done(Ok(()))) {
                assert_eq!(self.lock_holder, Some(p), "a lock all without the lock");
            }
            self.lock_all(p);
            return;
        }
        let Some(call) = self.process(p).waiting.remove(&waiter) else {
            return;
        };
        match answer {
            Answer::Replay => {
                let (token, _) = self.owner(p).current();
                assert!(token.is_some(), "a call replayed without a token");
                let old = self.process(p).calls.remove(&call).expect("the call");
                assert!(!old.replayed, "a call replayed twice");
                self.send(p, true);
            }
            Answer::Reauthenticate(number) => {
                // Once for all the calls failing together: one at a time, and only when the
                // session holds no token that did not fail.
                assert!(
                    self.process(p).reauths.is_empty(),
                    "two re-authentications at once"
                );
                let current = key(&self.owner(p).current().0.cloned());
                assert!(
                    current.is_none()
                        || self.process(p).failed_tokens.contains(&current)
                        || self.process(p).refreshed.contains(&current),
                    "re-authenticating while the session holds a token that did not fail"
                );
                if !self.faults && !self.process(p).gave_up {
                    // Across processes too: a re-authenticator runs under the lock, unless its
                    // wait for another holder passed its bound.
                    assert_eq!(
                        self.lock_holder,
                        Some(p),
                        "re-authenticating without the lock"
                    );
                }
                if self.faults && self.rng.chance(10) {
                    // Gone before it read its answer: another call runs it.
                    self.process(p).calls.remove(&call);
                    self.tell(p, Event::Gone(waiter));
                    return;
                }
                self.process(p).reauths.push((number, call));
            }
            Answer::Failed(_) => {
                // The re-authenticator failed: the call gets its error.
                self.process(p).calls.remove(&call);
                self.reauth_failed_calls += 1;
            }
            Answer::Done(_) => panic!("a call answered {answer:?}"),
        }
    }
}
