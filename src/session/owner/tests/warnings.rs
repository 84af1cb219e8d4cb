//! When a failing store is warned of: once for an episode of one kind of failure, whether
//! reads or writes meet it first.

use super::*;

/// Whether the effects' notes hold a warning, and which.
fn warned(effects: &Effects) -> Vec<&'static str> {
    effects
        .notes
        .iter()
        .filter_map(|note| match note {
            Note::Unusable { first: true, .. } => Some("read"),
            Note::WriteFailed { first: true, .. } => Some("write"),
            _ => None,
        })
        .collect()
}

/// A keyring gone, which fails both reads and writes (as a store of your own that is down
/// does, without the feature).
#[cfg(feature = "keyring")]
fn keyring_gone() -> Error {
    Error::KeyringUnavailable {
        backend: crate::KeyringBackend::SecretService,
        detail: "the daemon is gone".into(),
    }
}

#[cfg(not(feature = "keyring"))]
fn keyring_gone() -> Error {
    Error::Store(std::sync::Arc::new(std::io::Error::other(
        "the store is down",
    )))
}

/// A refresh of `t1` to `t2` whose swap fails with `error`: the effects of its end.
fn refresh_failing(sim: &mut Sim, new: &str, error: Error) -> Effects {
    let epoch = sim.owner.current().1;
    let waiter = sim.waiter();
    let effects = sim.step(Event::Refresh {
        token: token(new),
        epoch,
        waiter,
    });
    assert!(effects.write.is_some(), "{effects:?}");
    sim.step(Event::WriteDone(Err(error)))
}

/// A keyring gone: the watch's read meets it before the first refresh's write does (as when the
/// watch hands over to notification just then). One warning, the read's. Before, the write
/// warned again of the same failure.
#[test]
fn a_failure_the_reads_warned_of_is_not_warned_of_again_by_the_writes() {
    let mut sim = Sim::started("t1");
    assert!(sim.step(Event::StoreChanged).read.is_some());
    let effects = sim.step(Event::ReadDone(Err(keyring_gone())));
    assert_eq!(warned(&effects), ["read"]);
    let effects = refresh_failing(&mut sim, "t2", keyring_gone());
    assert_eq!(warned(&effects), Vec::<&str>::new(), "{:?}", effects.notes);
}

/// And the other way round: the writes met it first.
#[test]
fn a_failure_the_writes_warned_of_is_not_warned_of_again_by_the_reads() {
    let mut sim = Sim::started("t1");
    let effects = refresh_failing(&mut sim, "t2", keyring_gone());
    assert_eq!(warned(&effects), ["write"]);
    // The read the failed write asks for (it may have landed) fails the same way.
    let effects = sim.step(Event::ReadDone(Err(keyring_gone())));
    assert_eq!(warned(&effects), Vec::<&str>::new(), "{:?}", effects.notes);
}

/// A failure of another kind is news: a full disk fails the writes, then another process
/// leaves a file this one cannot use. Both are warned of.
#[test]
fn a_failure_of_another_kind_is_warned_of() {
    let mut sim = Sim::started("t1");
    let full = Error::Store(std::sync::Arc::new(std::io::Error::other("disk full")));
    let effects = refresh_failing(&mut sim, "t2", full);
    assert_eq!(warned(&effects), ["write"]);
    sim.step(Event::ReadDone(Ok(Stored {
        token: Some(token("t1")),
        version: Some(Version::new(1)),
    })));
    assert!(sim.step(Event::StoreChanged).read.is_some());
    let corrupt = Error::corrupt(
        std::path::Path::new("token"),
        crate::error::CorruptReason::NotUtf8,
    );
    let effects = sim.step(Event::ReadDone(Err(corrupt)));
    assert_eq!(warned(&effects), ["read"]);
}

/// A store that worked in between ends the episode: the keyring gone again is warned of again.
#[test]
fn a_store_that_worked_in_between_is_warned_of_again() {
    let mut sim = Sim::started("t1");
    assert!(sim.step(Event::StoreChanged).read.is_some());
    sim.step(Event::ReadDone(Err(keyring_gone())));
    let epoch = sim.owner.current().1;
    let waiter = sim.waiter();
    sim.step(Event::Refresh {
        token: token("t2"),
        epoch,
        waiter,
    });
    sim.step(Event::WriteDone(Ok(Written::Swapped(Swap::Replaced(
        Version::new(2),
    )))));
    let effects = refresh_failing(&mut sim, "t3", keyring_gone());
    assert_eq!(warned(&effects), ["write"]);
}

/// A failure of another kind in the same lane is news: a keyring that stops answering, then is
/// gone (whose warning says what to do). Before, the first kind's episode hid the second.
#[cfg(feature = "keyring")]
#[test]
fn a_new_kind_of_failure_in_the_same_lane_is_warned_of() {
    let mut sim = Sim::started("t1");
    let timed_out = Error::KeyringTimedOut {
        backend: crate::KeyringBackend::SecretService,
        waited: Duration::from_secs(10),
    };
    let effects = refresh_failing(&mut sim, "t2", timed_out.clone());
    assert_eq!(warned(&effects), ["write"]);
    sim.step(Event::ReadDone(Err(timed_out)));
    let effects = refresh_failing(&mut sim, "t3", keyring_gone());
    assert_eq!(warned(&effects), ["write"]);
    let effects = refresh_failing(&mut sim, "t4", keyring_gone());
    assert_eq!(warned(&effects), Vec::<&str>::new(), "{:?}", effects.notes);
}
