//! The owner's decisions, one scenario each, with no I/O.
use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;
use crate::store::{Stored, Swap, Version};
use crate::token::Token;

mod seams;
mod warnings;

/// How long a try for the re-authentication lock waits.
const WAIT: Duration = Duration::from_secs(60);

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

/// An owner driven by hand: its clock (advanced by the test) and the waiters it numbers.
struct Sim {
    owner: Owner,
    now: Instant,
    waiters: WaiterId,
}

impl Sim {
    /// An owner started on `t`, as read from the store at version 1, with a lock to take.
    fn started(t: &str) -> Self {
        let now = Instant::now();
        let owner = Owner::new(AgentTokens::LiveUntilExpiry, Some(WAIT), now);
        let mut sim = Self {
            owner,
            now,
            waiters: 0,
        };
        let start = sim.waiter();
        assert!(sim.step(Event::Start(start)).read.is_some());
        let effects = sim.read(Some(t), Some(1));
        assert!(matches!(effects.answers[..], [(w, Answer::Done(Ok(())))] if w == start));
        sim
    }

    fn step(&mut self, event: Event) -> Effects {
        self.owner.handle(self.now, event)
    }

    fn waiter(&mut self) -> WaiterId {
        self.waiters += 1;
        self.waiters
    }

    /// The read asked for found `t` at version `v`.
    fn read(&mut self, t: Option<&str>, v: Option<u64>) -> Effects {
        self.step(Event::ReadDone(Ok(Stored {
            token: t.map(token),
            version: v.map(Version::new),
        })))
    }

    /// The watch sees another process's change: the read it asks for finds `t` at `v`.
    fn changed(&mut self, t: Option<&str>, v: Option<u64>) -> Effects {
        assert!(self.step(Event::StoreChanged).read.is_some());
        self.read(t, v)
    }

    /// A call sent with `t` in `epoch` failed (its `exp` not past): its waiter and the effects.
    fn fail(&mut self, t: &str, epoch: u64) -> (WaiterId, Effects) {
        let waiter = self.waiter();
        let effects = self.step(Event::CallFailed {
            token: Some(token(t)),
            epoch,
            expired: false,
            waiter,
        });
        (waiter, effects)
    }

    /// A call failed with `t` in `epoch` and waits for a recovery: its waiter and the effects.
    fn fail_waiting(&mut self, t: &str, epoch: u64) -> (WaiterId, Effects) {
        let (waiter, effects) = self.fail(t, epoch);
        assert!(effects.reply.is_none(), "replayed: {effects:?}");
        (waiter, effects)
    }

    /// The try numbered `attempt` is over.
    fn lock_taken(&mut self, attempt: u64, held: bool) -> Effects {
        let outcome = if held {
            LockOutcome::Held
        } else {
            LockOutcome::NotHeld(None)
        };
        self.step(Event::LockTaken { attempt, outcome })
    }

    /// A try for the lock made now.
    fn take(&self, attempt: u64, recovery: bool) -> LockOp {
        LockOp::Take(LockTry {
            attempt,
            until: self.now + WAIT,
            recovery,
        })
    }

    /// Run `run` of the re-authenticator brought `t`: its runner replays.
    fn reauthenticated(&mut self, run: u64, t: &str) -> Effects {
        let result = Ok(token(t));
        let effects = self.step(Event::Reauthenticated { run, result });
        assert!(matches!(effects.reply, Some(Answer::Replay)));
        effects
    }

    fn written(&mut self, v: u64) -> Effects {
        self.step(Event::WriteDone(Ok(Written::Stored(Version::new(v)))))
    }
}

/// Another process's lock all: the watch takes in the removal before the calls' failures come
/// back. The calls must not be replayed without a token (the old design's bug): the owner
/// re-reads the store, then has one call re-authenticate, once for all of them.
#[test]
fn a_removal_seen_before_the_failures_does_not_end_the_recovery() {
    let mut sim = Sim::started("t1");
    sim.changed(None, None);
    assert_eq!(sim.owner.current().0, None);

    let (first, effects) = sim.fail_waiting("t1", 1);
    assert_eq!(
        effects.lock,
        [sim.take(1, true)],
        "one recovery takes the lock"
    );
    let (second, effects) = sim.fail_waiting("t1", 1);
    assert!(effects.lock.is_empty(), "one recovery takes the lock");
    let effects = sim.lock_taken(1, true);
    assert!(
        effects.read.is_some(),
        "the recovery reads the store again, under the lock"
    );
    let effects = sim.read(None, None);
    let [(runner, Answer::Reauthenticate(run))] = effects.answers[..] else {
        panic!("no re-authenticator run: {effects:?}");
    };
    assert_eq!(runner, first);
    let effects = sim.reauthenticated(run, "t2");
    assert!(matches!(effects.answers[..], [(w, Answer::Replay)] if w == second));
    assert_eq!(effects.write.as_deref(), Some(&WriteOp::Store(token("t2"))));
    assert!(
        effects.lock.is_empty(),
        "the lock is held until the token is written"
    );
    assert_eq!(sim.written(2).lock, [LockOp::Release(1)]);
    assert_eq!(sim.owner.current().0, Some(&token("t2")));
    assert_eq!(sim.owner.counts().reauthentications, 1);
    assert_eq!(sim.owner.counts().shared_recoveries, 1);
}

/// An owner started on `t1` whose call failed with it: the recovery took the lock (try 1), read
/// `t1` again, and has the failing call run the re-authenticator (the run's number returned).
fn reauthenticating_under_the_lock() -> (Sim, u64) {
    let mut sim = Sim::started("t1");
    let (waiter, _) = sim.fail_waiting("t1", 1);
    sim.lock_taken(1, true);
    let effects = sim.read(Some("t1"), Some(1));
    let [(runner, Answer::Reauthenticate(run))] = effects.answers[..] else {
        panic!("no re-authenticator run: {effects:?}");
    };
    assert_eq!(
        runner, waiter,
        "the first failing call runs the re-authenticator"
    );
    (sim, run)
}

/// A token another process writes while this one re-authenticates ends the recovery at once.
#[test]
fn another_process_token_ends_a_recovery_under_way() {
    let (mut sim, run) = reauthenticating_under_the_lock();
    let (other, _) = sim.fail_waiting("t1", 1);
    let effects = sim.changed(Some("t9"), Some(2));
    assert!(matches!(effects.answers[..], [(w, Answer::Replay)] if w == other));
    assert!(
        effects.lock.is_empty(),
        "the lock stays while this process's re-authenticator runs"
    );
    assert_eq!(sim.owner.current().0, Some(&token("t9")));
    assert_eq!(
        sim.reauthenticated(run, "t10").lock,
        [LockOp::Release(1)],
        "let go once it is done"
    );
    assert_eq!(
        sim.owner.current().0,
        Some(&token("t9")),
        "its token is not used"
    );
    // A call that failed with the old token now replays at once, with no recovery.
    let (_, effects) = sim.fail("t1", 1);
    assert!(matches!(effects.reply, Some(Answer::Replay)));
}

/// A runner that goes away (its call dropped) after another token ended its recovery does not
/// let go of the lock a later recovery reads under: that one re-authenticates under it still.
#[test]
fn a_gone_runner_leaves_the_lock_to_the_recovery_under_way() {
    let (mut sim, run) = reauthenticating_under_the_lock();
    // Another process's token ends that recovery; then it fails too, and a second recovery
    // goes on under the lock still held.
    sim.changed(Some("t9"), Some(2));
    let (_, epoch) = sim.owner.current();
    let (second, effects) = sim.fail_waiting("t9", epoch);
    assert!(effects.read.is_some(), "read under the lock");
    assert!(effects.lock.is_empty(), "no try for a lock held");
    let effects = sim.step(Event::Gone(run));
    assert!(
        effects.lock.is_empty(),
        "the lock stays with the recovery under way"
    );
    let effects = sim.read(Some("t9"), Some(2));
    let [(runner, Answer::Reauthenticate(next))] = effects.answers[..] else {
        panic!("no re-authenticator run for the second recovery: {effects:?}");
    };
    assert_eq!(runner, second);
    assert!(effects.lock.is_empty(), "it runs under the lock");
    let effects = sim.reauthenticated(next, "t10");
    assert!(effects.lock.is_empty(), "held until written");
    assert_eq!(sim.written(3).lock, [LockOp::Release(1)]);
}

/// A refresh answering a call sent before a lock never brings the session back.
#[test]
fn a_late_refresh_after_a_lock_is_dropped() {
    let mut sim = Sim::started("t1");
    let (_, epoch) = sim.owner.current();
    let clear = sim.waiter();
    sim.step(Event::Clear(clear));
    let waiter = sim.waiter();
    let effects = sim.step(Event::Refresh {
        token: token("t2"),
        epoch,
        waiter,
    });
    assert!(matches!(effects.reply, Some(Answer::Done(Ok(())))));
    assert_eq!(sim.owner.current().0, None);
    assert!(effects.write.is_none());
}

/// Writes are one at a time: refreshes arriving during a write are grouped into the next one,
/// which is a compare-and-swap against what the first wrote; a flush waits for both.
#[test]
fn refreshes_are_written_one_at_a_time_newest_first() {
    let mut sim = Sim::started("t1");
    let (_, epoch) = sim.owner.current();
    let refresh = |sim: &mut Sim, t: &str| {
        let waiter = sim.waiter();
        let effects = sim.step(Event::Refresh {
            token: token(t),
            epoch,
            waiter,
        });
        // With tokens that live until they expire, a call does not wait for its refresh.
        assert!(matches!(effects.reply, Some(Answer::Done(Ok(())))));
        effects
    };
    let first = refresh(&mut sim, "t2").write;
    assert!(matches!(first.as_deref(), Some(WriteOp::Swap { new, .. }) if *new == token("t2")));
    assert!(refresh(&mut sim, "t3").write.is_none());
    assert!(refresh(&mut sim, "t4").write.is_none());
    let flush = sim.waiter();
    let effects = sim.step(Event::Flush(flush));
    assert!(effects.reply.is_none() && effects.answers.is_empty());
    assert!(effects.write.is_none(), "one write at a time");
    let replaced = |v| Event::WriteDone(Ok(Written::Swapped(Swap::Replaced(Version::new(v)))));
    let effects = sim.step(replaced(2));
    assert_eq!(
        effects.write.as_deref(),
        Some(&WriteOp::Swap {
            expected: Some(token("t2")),
            new: token("t4")
        })
    );
    assert!(
        effects.answers.is_empty(),
        "the flush waits for the second write"
    );
    let effects = sim.step(replaced(3));
    assert!(matches!(effects.answers[..], [(w, Answer::Done(Ok(())))] if w == flush));
    assert_eq!(sim.owner.counts().writes, 2);
}

/// A read under way while this process writes may find what it is writing: that is this
/// process's own doing, not another process's change.
#[test]
fn a_read_that_finds_this_process_write_is_not_another_process_change() {
    let mut sim = Sim::started("t1");
    assert!(sim.step(Event::StoreChanged).read.is_some());
    let unlock = sim.waiter();
    sim.step(Event::Unlock(token("t2"), unlock));
    let epoch = sim.owner.current().1;
    sim.read(Some("t2"), Some(5));
    assert_eq!(sim.owner.current().1, epoch, "no new epoch");
    assert_eq!(sim.owner.counts().external_changes, 0);
}

/// Another process re-authenticates: this one's recovery waits for the lock, and the token that
/// process writes, seen through the watch, ends it; the lock, when it comes, is let go unused.
#[test]
fn a_recovery_waiting_for_the_lock_takes_the_holder_token() {
    let mut sim = Sim::started("t1");
    let (waiter, effects) = sim.fail_waiting("t1", 1);
    assert_eq!(effects.lock, [sim.take(1, true)]);
    assert!(sim.owner.recovery.wants_lock());
    let effects = sim.changed(Some("t2"), Some(2));
    assert!(matches!(effects.answers[..], [(w, Answer::Replay)] if w == waiter));
    assert!(
        !sim.owner.recovery.wants_lock(),
        "the wait for the lock ends"
    );
    // New: the try no one wants any more is abandoned in that step.
    assert!(effects.lock.is_empty() && !sim.owner.lock_try_wanted(1));
    assert_eq!(sim.lock_taken(1, true).lock, [LockOp::Release(1)]);
    assert_eq!(sim.owner.counts().reauthentications, 0);
}

/// A try for the lock made for a recovery that ended (another token came) is no answer for a
/// recovery that began while it was under way (a lock all right after): whether it gave up
/// because no one wanted it any more or at the first recovery's bound, the new recovery asks
/// again and waits its own bound, rather than re-authenticating without the lock beside the
/// process that holds it. A try made for the recovery itself that gives up is its answer.
#[test]
fn a_try_made_for_an_earlier_recovery_is_made_again() {
    let mut sim = Sim::started("t1");
    let (_, effects) = sim.fail_waiting("t1", 1);
    assert_eq!(effects.lock, [sim.take(1, true)]);
    let effects = sim.changed(Some("t2"), Some(2));
    assert!(
        !sim.owner.recovery.wants_lock(),
        "the first recovery is over"
    );
    // New: so its try is abandoned (it still reports).
    assert!(effects.lock.is_empty() && !sim.owner.lock_try_wanted(1));
    // The new token fails too, while the try is still under way.
    let epoch = sim.owner.current().1;
    let (_, effects) = sim.fail_waiting("t2", epoch);
    assert!(effects.lock.is_empty(), "the try under way serves it");
    assert!(effects.read.is_none());
    // The try, made for the first recovery, gives up, later.
    sim.now += Duration::from_secs(30);
    let effects = sim.lock_taken(1, false);
    assert_eq!(
        effects.lock,
        [sim.take(2, true)],
        "asked for again, with its own bound"
    );
    assert!(effects.read.is_none(), "nothing is read without the lock");
    assert!(sim.owner.recovery.wants_lock());
    // This try is the second recovery's own: past its bound, it goes on without the lock.
    sim.now += WAIT;
    let effects = sim.lock_taken(2, false);
    assert!(effects.lock.is_empty(), "not asked a third time");
    assert!(effects.read.is_some(), "read, without the lock");
}

/// While this process holds the re-authentication lock around a lock all, a recovery that
/// begins goes on under it (no try for a lock its own process holds), and keeps it past the
/// lock all until its token is written; after, a recovery asks again.
#[test]
fn a_recovery_inside_a_lock_all_goes_on_under_its_lock() {
    // New: the owner takes the lock for the lock all itself, and the two share it.
    fn lock_all(sim: &mut Sim) -> WaiterId {
        let waiter = sim.waiter();
        let effects = sim.step(Event::LockAll(waiter));
        assert!(effects.reply.is_none(), "answered once held");
        assert_eq!(effects.lock, [sim.take(1, false)]);
        let effects = sim.lock_taken(1, true);
        assert!(matches!(effects.answers[..], [(w, Answer::Done(Ok(())))] if w == waiter));
        waiter
    }

    let mut sim = Sim::started("t1");
    let all = lock_all(&mut sim);
    let (_, effects) = sim.fail_waiting("t1", 1);
    assert!(effects.lock.is_empty(), "no try for its own process's lock");
    assert!(effects.read.is_some(), "read under the lock held");
    let effects = sim.read(None, None);
    let [(_, Answer::Reauthenticate(run))] = effects.answers[..] else {
        panic!("no re-authenticator run: {effects:?}");
    };
    // The lock all is over while the re-authenticator runs: the lock stays, the recovery's.
    let effects = sim.step(Event::Gone(all));
    assert!(effects.lock.is_empty(), "kept for the run");
    let effects = sim.reauthenticated(run, "t2");
    assert!(effects.lock.is_empty(), "held until written");
    assert_eq!(sim.written(2).lock, [LockOp::Release(1)]);

    let mut sim = Sim::started("t1");
    let all = lock_all(&mut sim);
    let effects = sim.step(Event::Gone(all));
    assert_eq!(effects.lock, [LockOp::Release(1)], "nothing to keep");
    let (_, effects) = sim.fail_waiting("t1", 1);
    assert_eq!(effects.lock, [sim.take(2, true)]);
}
