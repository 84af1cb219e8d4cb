use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::*;

/// Calls `run` until it is no longer refused for a call that has just been let go.
fn once_free<T>(bounded: &Bounded, call: impl Fn() -> T + Send + Sync + 'static) -> T
where
    T: Send + 'static,
{
    let call = Arc::new(call);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let call = call.clone();
        match bounded.run(Duration::from_secs(60), move || call()) {
            Err(NoAnswer::TimedOut(_)) if Instant::now() < deadline => std::thread::yield_now(),
            answer => break answer.unwrap_or_else(|e| panic!("{e:?}")),
        }
    }
}

/// How long [`hung`]'s caller waits.
const HUNG_BOUND: Duration = Duration::from_millis(20);

/// A call that hangs until released, then runs `then`, and whose caller gave up on it while it
/// ran: its release. (A call given up on before the thread began it is withdrawn, its
/// closure dropped: then again.)
fn hung(bounded: &Bounded, then: fn()) -> mpsc::Sender<()> {
    loop {
        let (release, wait) = mpsc::channel::<()>();
        let (began, running) = mpsc::channel::<()>();
        let answer = bounded.run(HUNG_BOUND, move || {
            let _ = began.send(());
            let _ = wait.recv();
            then();
        });
        assert!(matches!(answer, Err(NoAnswer::TimedOut(_))), "{answer:?}");
        // Either it began, or it was withdrawn and dropped with its sender.
        if running.recv().is_ok() {
            return release;
        }
    }
}

#[test]
fn an_answer_in_time_a_hung_call_bounded_and_a_panic_survived() {
    let bounded = Bounded::default();
    assert_eq!(bounded.run(Duration::from_secs(5), || 7).unwrap(), 7);

    // A call that does not answer until told to: the caller gets TimedOut at the bound.
    let release = hung(&bounded, || {});
    // While it hangs, the next call is refused at once, without running, and says how long
    // the hung one was waited for.
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let refused = bounded.run(Duration::from_secs(60), move || {
        flag.store(true, Ordering::SeqCst)
    });
    assert!(
        matches!(refused, Err(NoAnswer::TimedOut(w)) if w == HUNG_BOUND),
        "{refused:?}"
    );
    // Once it ends, calls run again: the first tries may still find it ending.
    release.send(()).unwrap();
    assert_eq!(once_free(&bounded, || 8), 8);
    assert!(!ran.load(Ordering::SeqCst), "a refused call never runs");

    // A call that panics is reported, and the thread goes on.
    let lost = bounded.run(Duration::from_secs(5), || -> u8 {
        panic!("in the backend")
    });
    assert!(matches!(lost, Err(NoAnswer::Lost(_))));
    assert_eq!(bounded.run(Duration::from_secs(5), || 9).unwrap(), 9);
}

/// A call that panics after its caller gave up refuses no call after it. Before, the flag that
/// refused them was cleared by the call's own end, which a panic skipped: refused for good.
#[test]
fn a_hung_call_that_panics_leaves_the_thread_free() {
    let bounded = Bounded::default();
    let release = hung(&bounded, || panic!("in the backend, late"));
    release.send(()).unwrap();
    assert_eq!(once_free(&bounded, || 10), 10);
}

/// A call still queued when its caller gives up never runs: a write its caller was told had
/// failed cannot land later, after another process's. Before, it ran once the thread was free.
#[test]
fn a_call_given_up_before_it_ran_never_runs() {
    let bounded = Arc::new(Bounded::default());
    let (release, wait) = mpsc::channel::<()>();
    let (began, running) = mpsc::channel::<()>();
    // A first call that holds the thread, with a long bound: its caller still waits.
    let first = {
        let bounded = bounded.clone();
        std::thread::spawn(move || {
            bounded.run(Duration::from_secs(60), move || {
                began.send(()).unwrap();
                wait.recv().is_ok()
            })
        })
    };
    running.recv().unwrap();
    // A second call queued behind it gives up: it is not refused (the first's caller waits).
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let queued = bounded.run(Duration::from_millis(20), move || {
        flag.store(true, Ordering::SeqCst)
    });
    assert!(matches!(queued, Err(NoAnswer::TimedOut(_))), "{queued:?}");
    release.send(()).unwrap();
    assert!(first.join().unwrap().unwrap());
    // Runs after the withdrawn one would have: by then it had run, had it not been withdrawn.
    assert_eq!(once_free(&bounded, || 11), 11);
    assert!(!ran.load(Ordering::SeqCst), "a withdrawn call never runs");
}
