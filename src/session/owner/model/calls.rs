//! The model's calls: sent with the token a process holds, answered by the simulated agent
//! in any order, and their answers (a refresh, a session failure) taken in by the owner.

use super::*;
use crate::token::Token;

impl World {
    pub(super) fn send(&mut self, p: usize, replayed: bool) {
        let (token, epoch) = {
            let (token, epoch) = self.owner(p).current();
            (token.cloned(), epoch)
        };
        self.next_call += 1;
        let id = self.next_call;
        let call = Call {
            token,
            epoch,
            replayed,
            waiting: false,
            answered: None,
        };
        self.process(p).calls.insert(id, call);
    }

    pub(super) fn agent_answers(&mut self, p: usize) {
        let ids: Vec<u64> = self
            .process(p)
            .calls
            .iter()
            .filter(|(_, c)| c.answered.is_none() && !c.waiting)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.below(ids.len())];
        let token = self.process(p).calls[&id].token.clone();
        let accepted = token
            .as_ref()
            .is_some_and(|t| self.valid.contains(t.expose()));
        let answer = if accepted { Some(self.mint()) } else { None };
        if let Some(call) = self.process(p).calls.get_mut(&id) {
            call.answered = Some(answer);
        }
    }

    pub(super) fn deliver_answer(&mut self, p: usize) {
        let ids: Vec<u64> = self
            .process(p)
            .calls
            .iter()
            .filter(|(_, c)| c.answered.is_some())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.below(ids.len())];
        let call = self.process(p).calls.remove(&id).expect("the call");
        match call.answered.flatten() {
            Some(refresh) => {
                self.ok_calls += 1;
                let before = self.owner(p).current().1;
                let exp = refresh.exp_secs();
                let current_before = self.owner(p).current().0.cloned();
                self.process(p)
                    .refreshed
                    .insert(key(&Some(refresh.clone())));
                let (waiter, reply) = self.ask(
                    p,
                    |waiter| Event::Refresh {
                        token: refresh,
                        epoch: call.epoch,
                        waiter,
                    },
                    None,
                );
                // Refreshes are not waited for, as the agent's tokens live until they expire.
                assert!(reply.is_some(), "refresh {waiter} waits");
                let (now, epoch) = self.owner(p).current();
                if before != call.epoch {
                    assert_eq!(
                        now.cloned(),
                        current_before,
                        "a late refresh changed the session"
                    );
                } else if epoch == before {
                    let have = now.and_then(Token::exp_secs);
                    assert!(have >= exp, "an older refresh replaced a fresher token");
                }
            }
            None if call.replayed => self.failed_calls += 1,
            None => {
                self.process(p).failed_tokens.insert(key(&call.token));
                let (token, epoch) = (call.token.clone(), call.epoch);
                self.process(p).calls.insert(
                    id,
                    Call {
                        answered: None,
                        waiting: true,
                        ..call
                    },
                );
                let (_, reply) = self.ask(
                    p,
                    |waiter| Event::CallFailed {
                        token,
                        epoch,
                        expired: false,
                        waiter,
                    },
                    Some(id),
                );
                if let Some(answer) = reply {
                    assert!(matches!(answer, Answer::Replay), "a failed call {answer:?}");
                    assert!(
                        self.owner(p).current().0.is_some(),
                        "replayed without a token"
                    );
                    self.process(p).calls.remove(&id);
                    self.send(p, true);
                }
            }
        }
    }
}
