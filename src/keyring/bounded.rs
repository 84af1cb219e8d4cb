//! The keyring's own thread: every keyring call runs there, and the caller waits for its answer
//! for a bounded time. A call that does not answer (a prompt nobody answers, a Secret Service
//! that does not reply) then costs the caller the bound, and nothing more: no runtime worker,
//! no writer of another process waits on it past its own bound, and it holds no lock of the
//! caller's. Calls run one at a time, so one hung backend holds one thread; and while a call
//! that was given up on still runs, every new call is refused at once: a hung backend costs
//! the first caller the bound, and the others nothing, until it answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// The thread and the queue of calls to it. The thread starts with the first call and ends
/// with the store; a call that panics is reported to its caller and ends nothing.
#[derive(Debug, Default)]
pub(super) struct Bounded {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// A call's caller stopped waiting and the call has not ended yet.
    stuck: Arc<AtomicBool>,
}

/// Why a call has no answer.
#[derive(Debug)]
pub(super) enum NoAnswer {
    /// Not within the bound; the call may still be carried out.
    TimedOut,
    /// The call panicked, or its thread could not be started.
    Lost(String),
}

impl Bounded {
    /// Runs `call` on the keyring's thread and waits for its answer at most `bound`.
    pub(super) fn run<T: Send + 'static>(
        &self,
        bound: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NoAnswer> {
        if self.stuck.load(Ordering::Acquire) {
            return Err(NoAnswer::TimedOut);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let stuck = self.stuck.clone();
        let job: Job = Box::new(move || {
            // The caller may have stopped waiting: its answer is then dropped.
            let _ = tx.send(call());
            // Sent before the flag is cleared: a caller that gives up after this finds the
            // answer in its channel.
            stuck.store(false, Ordering::Release);
        });
        let mut jobs = self.jobs();
        let sender = match jobs.as_ref() {
            Some(sender) => sender,
            None => jobs.insert(start().map_err(NoAnswer::Lost)?),
        };
        // The thread outlives every call (a panic is caught there), so it is there to take it.
        if sender.send(job).is_err() {
            *jobs = None;
            return Err(NoAnswer::Lost("the keyring's thread is gone".into()));
        }
        drop(jobs);
        match rx.recv_timeout(bound) {
            Ok(answer) => Ok(answer),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stuck.store(true, Ordering::Release);
                // It may have ended just now, after the wait and before the flag (which it then
                // cleared too soon): its answer is here, and nothing is stuck.
                match rx.try_recv() {
                    Ok(answer) => {
                        self.stuck.store(false, Ordering::Release);
                        Ok(answer)
                    }
                    Err(_) => Err(NoAnswer::TimedOut),
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(NoAnswer::Lost("the keyring call panicked".into()))
            }
        }
    }

    fn jobs(&self) -> MutexGuard<'_, Option<mpsc::Sender<Job>>> {
        // Assigned whole: a poisoned lock holds no half-made state.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn start() -> Result<mpsc::Sender<Job>, String> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("agent-session-k".into())
        .spawn(move || {
            // Ends when the store is gone (its sender dropped). A panicking call dropped its
            // answer's sender while unwinding: its caller hears of it.
            while let Ok(job) = rx.recv() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .map_err(|e| format!("cannot start the keyring's thread: {e}"))?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_in_time_a_hung_call_bounded_and_a_panic_survived() {
        let bounded = Bounded::default();
        assert_eq!(bounded.run(Duration::from_secs(5), || 7).unwrap(), 7);

        // A call that does not answer until told to: the caller gets TimedOut at the bound.
        let (release, wait) = mpsc::channel::<()>();
        let hung = bounded.run(Duration::from_millis(50), move || wait.recv().is_ok());
        assert!(matches!(hung, Err(NoAnswer::TimedOut)));
        // While it hangs, the next call is refused at once, without running.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let refused = bounded.run(Duration::from_secs(60), move || {
            flag.store(true, Ordering::SeqCst)
        });
        assert!(matches!(refused, Err(NoAnswer::TimedOut)));
        // Once it ends, calls run again: the first tries may still find it ending.
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let answer = loop {
            match bounded.run(Duration::from_secs(60), || 8) {
                Err(NoAnswer::TimedOut) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                answer => break answer,
            }
        };
        assert_eq!(answer.unwrap(), 8);
        assert!(!ran.load(Ordering::SeqCst), "a refused call never runs");

        // A call that panics is reported, and the thread goes on.
        let lost = bounded.run(Duration::from_secs(5), || -> u8 {
            panic!("in the backend")
        });
        assert!(matches!(lost, Err(NoAnswer::Lost(_))));
        assert_eq!(bounded.run(Duration::from_secs(5), || 9).unwrap(), 9);
    }
}
