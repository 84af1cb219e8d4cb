//! The owner's decisions, one scenario each, with no I/O.

use super::*;

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

/// An owner started on `t`, as read from the store at version 1.
fn started(t: &str) -> Owner {
    let mut owner = Owner::new(AgentTokens::LiveUntilExpiry);
    owner.start();
    let effects = owner.take_effects();
    assert!(effects.read.is_some());
    owner.read_done(Ok(Stored {
        token: Some(token(t)),
        version: Some(Version::new(1)),
    }));
    owner.take_effects();
    owner
}

/// Another process's lock all: the watch takes in the removal before the calls' failures come
/// back. The calls must not be replayed without a token (the old design's bug): the owner
/// re-reads the store, then has one call re-authenticate, once for all of them.
#[test]
fn a_removal_seen_before_the_failures_does_not_end_the_recovery() {
    let mut owner = started("t1");
    owner.store_changed();
    assert!(owner.take_effects().read.is_some());
    owner.read_done(Ok(Stored {
        token: None,
        version: None,
    }));
    assert_eq!(owner.current().0, None);
    owner.take_effects();

    let Failed::Wait(first) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("replayed without a token");
    };
    let Failed::Wait(second) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("replayed without a token");
    };
    let effects = owner.take_effects();
    assert_eq!(effects.lock, [LockOp::Take], "one recovery takes the lock");
    owner.reauth_lock_taken(LockTaken::Held);
    let effects = owner.take_effects();
    assert!(
        effects.read.is_some(),
        "the recovery reads the store again, under the lock"
    );
    owner.read_done(Ok(Stored {
        token: None,
        version: None,
    }));
    let effects = owner.take_effects();
    assert_eq!(effects.answers.len(), 1);
    assert!(matches!(effects.answers[0], (w, Answer::Reauthenticate(_)) if w == first));
    let Answer::Reauthenticate(number) = effects.answers[0].1 else {
        unreachable!()
    };
    assert!(matches!(
        owner.reauthenticated(number, Ok(token("t2"))),
        Answer::Replay
    ));
    let effects = owner.take_effects();
    assert!(matches!(effects.answers[..], [(w, Answer::Replay)] if w == second));
    assert_eq!(effects.write.as_deref(), Some(&WriteOp::Store(token("t2"))));
    assert!(
        effects.lock.is_empty(),
        "the lock is held until the token is written"
    );
    owner.write_done(Ok(Written::Stored(Version::new(2))));
    assert_eq!(owner.take_effects().lock, [LockOp::Release]);
    assert_eq!(owner.current().0, Some(&token("t2")));
    assert_eq!(owner.counts().reauth_runs, 1);
    assert_eq!(owner.counts().reauth_shared, 1);
}

/// An owner started on `t1` whose call failed with it: the recovery took the lock, read `t1`
/// again, and has the failing call run the re-authenticator (the run's number returned).
fn reauthenticating_under_the_lock() -> (Owner, u64) {
    let mut owner = started("t1");
    let Failed::Wait(waiter) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("no recovery");
    };
    owner.take_effects();
    owner.reauth_lock_taken(LockTaken::Held);
    owner.take_effects();
    owner.read_done(Ok(Stored {
        token: Some(token("t1")),
        version: Some(Version::new(1)),
    }));
    let effects = owner.take_effects();
    let [(runner, Answer::Reauthenticate(run))] = effects.answers[..] else {
        panic!("no re-authenticator run");
    };
    assert_eq!(
        runner, waiter,
        "the first failing call runs the re-authenticator"
    );
    (owner, run)
}

/// A token another process writes while this one re-authenticates ends the recovery at once.
#[test]
fn another_process_token_ends_a_recovery_under_way() {
    let (mut owner, run) = reauthenticating_under_the_lock();
    let Failed::Wait(other) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("no recovery");
    };
    owner.store_changed();
    owner.take_effects();
    owner.read_done(Ok(Stored {
        token: Some(token("t9")),
        version: Some(Version::new(2)),
    }));
    let effects = owner.take_effects();
    assert!(matches!(effects.answers[..], [(w, Answer::Replay)] if w == other));
    assert!(
        effects.lock.is_empty(),
        "the lock stays while this process's re-authenticator runs"
    );
    assert_eq!(owner.current().0, Some(&token("t9")));
    assert!(matches!(
        owner.reauthenticated(run, Ok(token("t10"))),
        Answer::Replay
    ));
    assert_eq!(
        owner.take_effects().lock,
        [LockOp::Release],
        "let go once it is done"
    );
    assert_eq!(
        owner.current().0,
        Some(&token("t9")),
        "its token is not used"
    );
    // A call that failed with the old token now replays at once, with no recovery.
    assert_eq!(
        owner.call_failed(Some(token("t1")), 1, false),
        Failed::Replay
    );
}

/// A runner that goes away (its call dropped) after another token ended its recovery does not
/// let go of the lock a later recovery reads under: that one re-authenticates under it still.
#[test]
fn a_gone_runner_leaves_the_lock_to_the_recovery_under_way() {
    let (mut owner, run) = reauthenticating_under_the_lock();
    // Another process's token ends that recovery; then it fails too, and a second recovery
    // goes on under the lock still held.
    owner.store_changed();
    owner.take_effects();
    owner.read_done(Ok(Stored {
        token: Some(token("t9")),
        version: Some(Version::new(2)),
    }));
    owner.take_effects();
    let (_, epoch) = owner.current();
    let Failed::Wait(second) = owner.call_failed(Some(token("t9")), epoch, false) else {
        panic!("no recovery");
    };
    assert!(owner.take_effects().read.is_some(), "read under the lock");
    owner.runner_gone(run);
    assert!(
        owner.take_effects().lock.is_empty(),
        "the lock stays with the recovery under way"
    );
    owner.read_done(Ok(Stored {
        token: Some(token("t9")),
        version: Some(Version::new(2)),
    }));
    let effects = owner.take_effects();
    let [(runner, Answer::Reauthenticate(next))] = effects.answers[..] else {
        panic!("no re-authenticator run for the second recovery");
    };
    assert_eq!(runner, second);
    assert!(effects.lock.is_empty(), "it runs under the lock");
    owner.reauthenticated(next, Ok(token("t10")));
    assert!(owner.take_effects().lock.is_empty(), "held until written");
    owner.write_done(Ok(Written::Stored(Version::new(3))));
    assert_eq!(owner.take_effects().lock, [LockOp::Release]);
}

/// A refresh answering a call sent before a lock never brings the session back.
#[test]
fn a_late_refresh_after_a_lock_is_dropped() {
    let mut owner = started("t1");
    let (_, epoch) = owner.current();
    owner.clear();
    owner.take_effects();
    assert_eq!(owner.refresh(token("t2"), epoch), Refreshed::Done);
    assert_eq!(owner.current().0, None);
    assert!(owner.take_effects().write.is_none());
}

/// Writes are one at a time: refreshes arriving during a write are grouped into the next one,
/// which is a compare-and-swap against what the first wrote; a flush waits for both.
#[test]
fn refreshes_are_written_one_at_a_time_newest_first() {
    let mut owner = started("t1");
    let (_, epoch) = owner.current();
    owner.refresh(token("t2"), epoch);
    let first = owner.take_effects().write;
    assert!(matches!(first.as_deref(), Some(WriteOp::Swap { new, .. }) if *new == token("t2")));
    owner.refresh(token("t3"), epoch);
    owner.refresh(token("t4"), epoch);
    let flush = owner.flush();
    assert!(owner.take_effects().write.is_none(), "one write at a time");
    owner.write_done(Ok(Written::Swapped(Swap::Replaced(Version::new(2)))));
    let effects = owner.take_effects();
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
    owner.write_done(Ok(Written::Swapped(Swap::Replaced(Version::new(3)))));
    let effects = owner.take_effects();
    assert!(matches!(effects.answers[..], [(w, Answer::Done(Ok(())))] if w == flush));
    assert_eq!(owner.counts().writes, 2);
}

/// A read under way while this process writes may find what it is writing: that is this
/// process's own doing, not another's change.
#[test]
fn a_read_that_finds_this_process_write_is_not_another_process_change() {
    let mut owner = started("t1");
    owner.store_changed();
    owner.take_effects();
    owner.unlock(token("t2"));
    owner.take_effects();
    let epoch = owner.current().1;
    owner.read_done(Ok(Stored {
        token: Some(token("t2")),
        version: Some(Version::new(5)),
    }));
    assert_eq!(owner.current().1, epoch, "no new epoch");
    assert_eq!(owner.counts().external_changes, 0);
}

/// Another process re-authenticates: this one's recovery waits for the lock, and the token that
/// process writes, seen through the watch, ends it; the lock, when it comes, is let go unused.
#[test]
fn a_recovery_waiting_for_the_lock_takes_the_holder_token() {
    let mut owner = started("t1");
    let Failed::Wait(waiter) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("no recovery");
    };
    assert_eq!(owner.take_effects().lock, [LockOp::Take]);
    assert!(owner.reauth_lock_wanted());
    owner.store_changed();
    owner.take_effects();
    owner.read_done(Ok(Stored {
        token: Some(token("t2")),
        version: Some(Version::new(2)),
    }));
    let effects = owner.take_effects();
    assert!(matches!(effects.answers[..], [(w, Answer::Replay)] if w == waiter));
    assert!(!owner.reauth_lock_wanted(), "the wait for the lock ends");
    owner.reauth_lock_taken(LockTaken::Held);
    assert_eq!(owner.take_effects().lock, [LockOp::Release]);
    assert_eq!(owner.counts().reauth_runs, 0);
}

/// A try for the lock made for a recovery that ended (another token came) is no answer for a
/// recovery that began while it was under way (a lock all right after): whether it gave up
/// because no one wanted it any more or at the first recovery's bound, the new recovery asks
/// again and waits its own bound, rather than re-authenticating without the lock beside the
/// process that holds it. A try made for the recovery itself that gives up is its answer.
#[test]
fn a_try_made_for_an_earlier_recovery_is_made_again() {
    let mut owner = started("t1");
    let Failed::Wait(_) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("no recovery");
    };
    assert_eq!(owner.take_effects().lock, [LockOp::Take]);
    owner.store_changed();
    owner.take_effects();
    owner.read_done(Ok(Stored {
        token: Some(token("t2")),
        version: Some(Version::new(2)),
    }));
    owner.take_effects();
    assert!(!owner.reauth_lock_wanted(), "the first recovery is over");
    // The new token fails too, while the try is still under way.
    let epoch = owner.current().1;
    let Failed::Wait(_) = owner.call_failed(Some(token("t2")), epoch, false) else {
        panic!("no recovery");
    };
    let effects = owner.take_effects();
    assert!(effects.lock.is_empty(), "the try under way serves it");
    assert!(effects.read.is_none());
    // The try, made for the first recovery, gives up.
    owner.reauth_lock_taken(LockTaken::No);
    let effects = owner.take_effects();
    assert_eq!(effects.lock, [LockOp::Take], "asked for again");
    assert!(effects.read.is_none(), "nothing is read without the lock");
    assert!(owner.reauth_lock_wanted());
    // This try is the second recovery's own: past its bound, it goes on without the lock.
    owner.reauth_lock_taken(LockTaken::No);
    let effects = owner.take_effects();
    assert!(effects.lock.is_empty(), "not asked a third time");
    assert!(effects.read.is_some(), "read, without the lock");
}

/// While this process holds the re-authentication lock around a lock all, a recovery that
/// begins goes on under it (no try for a lock its own process holds), and keeps it past the
/// lock all until its token is written; after, a recovery asks again.
#[test]
fn a_recovery_inside_a_lock_all_goes_on_under_its_lock() {
    let mut owner = started("t1");
    owner.lock_all_holds_reauth_lock();
    let Failed::Wait(_) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("no recovery");
    };
    let effects = owner.take_effects();
    assert!(effects.lock.is_empty(), "no try for its own process's lock");
    assert!(effects.read.is_some(), "read under the lock held");
    owner.read_done(Ok(Stored {
        token: None,
        version: None,
    }));
    let [(_, Answer::Reauthenticate(run))] = owner.take_effects().answers[..] else {
        panic!("no re-authenticator run");
    };
    // The lock all is over while the re-authenticator runs: the lock stays, the recovery's.
    assert!(owner.lock_all_lets_go(), "kept for the run");
    owner.reauthenticated(run, Ok(token("t2")));
    assert!(owner.take_effects().lock.is_empty(), "held until written");
    owner.write_done(Ok(Written::Stored(Version::new(2))));
    assert_eq!(owner.take_effects().lock, [LockOp::Release]);

    let mut owner = started("t1");
    owner.lock_all_holds_reauth_lock();
    assert!(!owner.lock_all_lets_go(), "nothing to keep");
    let Failed::Wait(_) = owner.call_failed(Some(token("t1")), 1, false) else {
        panic!("no recovery");
    };
    assert_eq!(owner.take_effects().lock, [LockOp::Take]);
}
