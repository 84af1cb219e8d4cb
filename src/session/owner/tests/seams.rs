//! The seams a review found between the owner and what lies around it, each shown closed by a
//! scenario that failed before its fix.

use super::*;

/// A refresh's compare-and-swap under way while the watch's read adopts another process's
/// token: the read saw the store after the swap replaced it, so what the read found is what
/// the store holds. Before, the swap's report put its own token back as "what the store holds",
/// and the next read adopted the other process's token a second time: a spurious epoch that
/// dropped the refreshes of calls in flight.
#[test]
fn a_swap_overtaken_by_a_read_leaves_what_the_read_found() {
    let mut sim = Sim::started("t1");
    let epoch = sim.owner.current().1;
    let waiter = sim.waiter();
    let effects = sim.step(Event::Refresh {
        token: token("t2"),
        epoch,
        waiter,
    });
    assert_eq!(
        effects.write.as_deref(),
        Some(&WriteOp::Swap {
            expected: Some(token("t1")),
            new: token("t2"),
        })
    );
    // Another process refreshes after this one's swap landed; the watch reads it first.
    sim.changed(Some("t3"), Some(3));
    assert_eq!(sim.owner.current().0, Some(&token("t3")));
    let adopted = sim.owner.current().1;
    sim.step(Event::WriteDone(Ok(Written::Swapped(Swap::Replaced(
        Version::new(2),
    )))));
    // The watch's event for that same change.
    sim.changed(Some("t3"), Some(3));
    assert_eq!(sim.owner.current(), (Some(&token("t3")), adopted));
    assert_eq!(sim.owner.counts().external_changes, 1);
}

/// An explicit write overtaken so: it may have landed before the read or after, and a read
/// tells which.
#[test]
fn an_explicit_write_overtaken_by_a_read_is_checked_by_another() {
    let mut sim = Sim::started("t1");
    let waiter = sim.waiter();
    assert!(sim.step(Event::Unlock(token("t2"), waiter)).write.is_some());
    sim.changed(Some("t3"), Some(3));
    let effects = sim.written(2);
    assert!(effects.read.is_some(), "a read tells which write came last");
}

/// A recovery already waiting for the lock when this process's lock all begins: the two share
/// the one try, and both go on when it is taken. Before, the lock all took the lock through a
/// handle of its own, and the recovery's try then waited for its own process, up to its bound.
#[test]
fn a_recovery_waiting_for_the_lock_shares_it_with_a_lock_all() {
    let mut sim = Sim::started("t1");
    let (_, effects) = sim.fail_waiting("t1", 1);
    assert_eq!(effects.lock, [sim.take(1, true)]);
    let lock_all = sim.waiter();
    let effects = sim.step(Event::LockAll(lock_all));
    assert!(effects.reply.is_none(), "waits for the try under way");
    assert!(effects.lock.is_empty(), "no second try: {:?}", effects.lock);
    let effects = sim.lock_taken(1, true);
    assert!(
        matches!(effects.answers[..], [(w, Answer::Done(Ok(())))] if w == lock_all),
        "{effects:?}"
    );
    assert!(effects.read.is_some(), "the recovery reads under the lock");
    let effects = sim.step(Event::Gone(lock_all));
    assert!(effects.lock.is_empty(), "the recovery keeps the lock");
}

/// A lock all whose lock cannot be had at all (its file cannot be made) is answered with the
/// error, and the lock all goes on without it; a recovery waiting on the same try goes on too.
#[test]
fn a_lock_that_cannot_be_had_answers_the_lock_all_and_the_recovery() {
    let mut sim = Sim::started("t1");
    let lock_all = sim.waiter();
    let effects = sim.step(Event::LockAll(lock_all));
    assert_eq!(effects.lock, [sim.take(1, false)]);
    let (_, effects) = sim.fail_waiting("t1", 1);
    assert!(effects.lock.is_empty(), "joins the try under way");
    let error = Error::Store(std::sync::Arc::new(std::io::Error::other("no lock file")));
    let effects = sim.step(Event::LockTaken {
        attempt: 1,
        outcome: LockOutcome::NotHeld(Some(error)),
    });
    assert!(
        matches!(effects.answers[..], [(w, Answer::Done(Err(_)))] if w == lock_all),
        "{effects:?}"
    );
    assert!(
        effects.read.is_some(),
        "the recovery goes on without the lock"
    );
    assert!(effects.lock.is_empty(), "{:?}", effects.lock);
}

/// Time is the owner's input: a try asked for later runs until its own bound from then.
#[test]
fn a_try_runs_until_the_bound_from_the_time_it_was_asked() {
    let mut sim = Sim::started("t1");
    sim.now += Duration::from_secs(5);
    let (_, effects) = sim.fail_waiting("t1", 1);
    assert_eq!(
        effects.lock,
        [LockOp::Take(LockTry {
            attempt: 1,
            until: sim.now + WAIT,
            recovery: true,
        })]
    );
}
