//! The keyring's own thread: every keyring call runs there, one at a time, and its caller waits
//! for its answer for a bounded time. A call that does not answer (a prompt nobody answers, a
//! Secret Service that does not reply) then costs its caller the bound, and nothing more: no
//! runtime worker waits on it past the bound.
//!
//! Each call has a [`Ticket`]. A caller that gives up on a call still queued takes it back: it
//! never runs, so a write the caller was told failed cannot land later. A call given up on
//! while it runs goes on (nothing can stop a backend's call), and while it does every new call
//! is refused at once: a hung backend costs the first caller the bound, the callers already
//! queued behind it their own bounds (then their calls are withdrawn), and those who come
//! after nothing, until it answers. A hung write still holds what it took: the companion's writers' lock, so
//! other processes' writes get [`Error::Locked`](crate::Error::Locked) after their own bounded
//! wait, as when a writer is stopped.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::lock;

/// A call and its ticket, as the thread takes it.
type Job = (Arc<Ticket>, Box<dyn FnOnce() + Send>);

/// Where a call is: what its caller and the thread agree on, under its mutex.
#[derive(Debug, Default)]
struct Ticket(Mutex<Phase>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Queued,
    Running,
    /// Its caller gave up after waiting this long, while it ran.
    Hung(Duration),
    /// Its caller gave up before it ran: it never will.
    Withdrawn,
}

impl Ticket {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        lock(&self.0)
    }

    /// The thread is about to run it: false if its caller withdrew it.
    fn begin(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Withdrawn {
            return false;
        }
        *phase = Phase::Running;
        true
    }

    /// The caller stops waiting after `waited`: the answer, if it came after all (it is sent
    /// under this ticket's lock, so it is in `answer` or not sent yet).
    fn give_up<T>(&self, waited: Duration, answer: &mpsc::Receiver<T>) -> Result<T, NoAnswer> {
        let mut phase = self.phase();
        if let Ok(answer) = answer.try_recv() {
            return Ok(answer);
        }
        *phase = match *phase {
            Phase::Queued => Phase::Withdrawn,
            _ => Phase::Hung(waited),
        };
        Err(NoAnswer::TimedOut(waited))
    }
}

/// The thread, the queue of calls to it, and the call it runs now. The thread starts with the
/// first call and ends with the store; a call that panics is reported to its caller and ends
/// nothing.
#[derive(Debug, Default)]
pub(super) struct Bounded {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// The ticket of the call the thread runs now, if any: set and cleared by the thread alone,
    /// around each call, however the call ends.
    running: Arc<Mutex<Option<Arc<Ticket>>>>,
}

/// Why a call has no answer.
#[derive(Debug)]
pub(super) enum NoAnswer {
    /// Not within the bound; the call may still be carried out. Or, refused at once, an earlier
    /// call still runs after its caller waited this long.
    TimedOut(Duration),
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
        if let Some(Phase::Hung(waited)) = lock(&self.running).as_ref().map(|t| *t.phase()) {
            return Err(NoAnswer::TimedOut(waited));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let ticket = Arc::new(Ticket::default());
        let answered = ticket.clone();
        let job: Job = (
            ticket.clone(),
            Box::new(move || {
                let answer = call();
                // Under the ticket's lock: a caller that gives up after this finds the answer.
                let _phase = answered.phase();
                let _ = tx.send(answer);
            }),
        );
        let mut jobs = lock(&self.jobs);
        let sender = match jobs.as_ref() {
            Some(sender) => sender,
            None => jobs.insert(start(self.running.clone()).map_err(NoAnswer::Lost)?),
        };
        // The thread outlives every call (a panic is caught there), so it is there to take it.
        if sender.send(job).is_err() {
            *jobs = None;
            return Err(NoAnswer::Lost("the keyring's thread is gone".into()));
        }
        drop(jobs);
        match rx.recv_timeout(bound) {
            Ok(answer) => Ok(answer),
            Err(mpsc::RecvTimeoutError::Timeout) => ticket.give_up(bound, &rx),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(NoAnswer::Lost("the keyring call panicked".into()))
            }
        }
    }
}

fn start(running: Arc<Mutex<Option<Arc<Ticket>>>>) -> Result<mpsc::Sender<Job>, String> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("agent-session-k".into())
        .spawn(move || {
            // Ends when the store is gone (its sender dropped). A panicking call dropped its
            // answer's sender while unwinding: its caller hears of it.
            while let Ok((ticket, call)) = rx.recv() {
                if !ticket.begin() {
                    continue;
                }
                *lock(&running) = Some(ticket);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
                *lock(&running) = None;
            }
        })
        .map_err(|e| format!("cannot start the keyring's thread: {e}"))?;
    Ok(tx)
}

#[cfg(test)]
mod tests;
