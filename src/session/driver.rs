//! The driver of a session's [`Owner`]: each event is one step under the owner's mutex
//! ([`Shared::step`]), then what the step said is carried out outside it ([`Shared::run`]):
//! reads and writes of the store on blocking threads, tries for the re-authentication lock,
//! answers to the calls that wait, the log. Their results come back as the next events.
//!
//! The mutex is the owner's: it is never held across I/O or while waiting for another process,
//! and nothing is logged under it. The guard of the re-authentication lock lives beside the
//! owner, under the same mutex, so that taking it, letting it go and the owner's knowing of it
//! are one step. The token calls read is published from inside the step that changed it, so
//! calls see the changes in the order the owner made them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::oneshot;

use super::owner::{
    Answer, Effects, Event, LockOp, LockOutcome, LockTry, Owner, ReadOp, WaiterId, WriteOp, Written,
};
use super::{Current, Shared, watch};
use crate::error::Error;
use crate::file::ReauthLockGuard;
use crate::store::TokenStore;

mod reauth_lock;

/// The owner, and what lives beside it under its mutex: the channels of the calls waiting for
/// its answers, and the re-authentication lock while this process holds it.
pub(super) struct Driven {
    pub(super) owner: Owner,
    waiting: HashMap<WaiterId, oneshot::Sender<Answer>>,
    next_waiter: WaiterId,
    /// The lock, held, and the number of the try that took it.
    guard: Option<(u64, ReauthLockGuard)>,
}

impl Driven {
    pub(super) fn new(owner: Owner) -> Self {
        Self {
            owner,
            waiting: HashMap::new(),
            next_waiter: 0,
            guard: None,
        }
    }
}

/// An event's answer: given at once, or to wait for.
pub(crate) enum Reply {
    Now(Answer),
    Later(Waiting),
}

/// What a step hands [`Shared::run`]: nothing, for most steps (a refresh taken while a write is
/// under way asks for nothing), or what there is to do. Boxed: a step that asks for nothing
/// then moves and drops one pointer.
pub(super) struct Stepped(Option<Box<Busy>>);

/// The owner's effects, and the answers with the channels they go out on.
struct Busy {
    effects: Effects,
    answers: Vec<(oneshot::Sender<Answer>, Answer)>,
}

impl Shared {
    fn driven(&self) -> MutexGuard<'_, Driven> {
        // Every step assigns whole fields and a panic inside one leaves at worst an answer
        // undelivered, which the waiter's drop tidies: a poisoned lock is safe to use.
        self.driven.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the owner's state (counters, say), as of the last step.
    pub(super) fn look<T>(&self, read: impl FnOnce(&Owner) -> T) -> T {
        read(&self.driven().owner)
    }

    /// An event with no one to wait for an answer; returns the owner's reply, if any.
    pub(super) fn tell(self: &Arc<Self>, event: Event) -> Answer {
        let (stepped, reply) = self.step(|_| event);
        self.run(stepped);
        reply.unwrap_or(Answer::Done(Ok(())))
    }

    /// An event with a waiter: its answer now, or the [`Waiting`] for it. Also returns the
    /// waiter's number.
    pub(super) fn ask(
        self: &Arc<Self>,
        event: impl FnOnce(WaiterId) -> Event,
    ) -> (WaiterId, Reply) {
        let mut id = 0;
        let (stepped, registered) = self.step(|driven| {
            driven.next_waiter += 1;
            id = driven.next_waiter;
            event(id)
        });
        let reply = match registered {
            Ok(answer) => Reply::Now(answer),
            Err(rx) => Reply::Later(Waiting {
                rx,
                id,
                shared: Arc::downgrade(self),
            }),
        };
        self.run(stepped);
        (id, reply)
    }

    /// The step itself, under the mutex: the event (made with what the driver keeps beside the
    /// owner, to change in the same step), its waiter registered (before any answer is taken
    /// out, so that an answer in the same step reaches it) unless answered at once, the
    /// answers' channels taken out, the token published, and the lock's bookkeeping. Returns
    /// the reply, or the channel of a waiter that waits.
    fn step(
        &self,
        event: impl FnOnce(&mut Driven) -> Event,
    ) -> (Stepped, Result<Answer, oneshot::Receiver<Answer>>) {
        let mut driven = self.driven();
        let asked = driven.next_waiter;
        let event = event(&mut driven);
        let waiter = (driven.next_waiter != asked).then_some(driven.next_waiter);
        // The clock is read for the events that can set a deadline (a try for the lock); the
        // others are told the last time, which they do not use: a refresh taken reads no clock.
        let now = if event.sets_deadlines() {
            Instant::now()
        } else {
            driven.owner.now()
        };
        let mut effects = driven.owner.handle(now, event);
        let reply = match (effects.reply.take(), waiter) {
            (Some(answer), _) => Ok(answer),
            (None, Some(id)) => {
                let (tx, rx) = oneshot::channel();
                driven.waiting.insert(id, tx);
                Err(rx)
            }
            // An event with no waiter has no reply: nothing reads it.
            (None, None) => Ok(Answer::Done(Ok(()))),
        };
        // Published before any answer is handed out: whoever is answered sees the token the
        // step made.
        if effects.publish {
            let (token, epoch) = driven.owner.current();
            self.current.store(Current {
                token: token.cloned(),
                epoch,
            });
        }
        let answers = if effects.answers.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut effects.answers)
                .into_iter()
                .filter_map(|(id, answer)| Some((driven.waiting.remove(&id)?, answer)))
                .collect()
        };
        let let_go = if effects.lock.is_empty() {
            None
        } else {
            reauth_lock::let_go(&mut driven, &effects.lock)
        };
        drop(driven);
        // Closing the lock's file, outside the owner's mutex.
        drop(let_go);
        let quiet = effects.read.is_none()
            && effects.write.is_none()
            && effects.notes.is_empty()
            && answers.is_empty()
            && effects.lock.is_empty();
        // Moved only when there is something to do: a closure (`then`) would move the effects
        // into itself on every step.
        let busy = if quiet {
            None
        } else {
            Some(Box::new(Busy { effects, answers }))
        };
        (Stepped(busy), reply)
    }

    /// Carries out what a step said: the log, the answers, the lock's tries, the store
    /// operations, each on a blocking thread of its own. The one place effects are run.
    ///
    /// The log comes before the answers, so that whoever is answered finds the step's events
    /// logged. An answer whose waiter went meanwhile is dropped: its drop told the owner
    /// ([`Event::Gone`]), which hands a re-authenticator's run to another call.
    #[inline]
    pub(super) fn run(self: &Arc<Self>, stepped: Stepped) {
        if let Some(busy) = stepped.0 {
            self.run_effects(*busy);
        }
    }

    fn run_effects(self: &Arc<Self>, busy: Busy) {
        for note in &busy.effects.notes {
            note.emit();
        }
        for (tx, answer) in busy.answers {
            let _ = tx.send(answer);
        }
        let locks = busy.effects.lock.iter().filter_map(|op| match *op {
            LockOp::Take(t) => Some(Job::Lock(t)),
            LockOp::Release(_) => None,
        });
        let reads = busy.effects.read.map(Job::Read);
        for job in locks.chain(reads).chain(busy.effects.write.map(Job::Write)) {
            self.spawn(job);
        }
    }

    /// Runs `job` with `spawn_blocking` on the current runtime, or on a plain thread when there
    /// is none (a response polled outside tokio, the watch's threads), in the span of whoever
    /// started it (a call's, say), so that its events belong to that.
    fn spawn(self: &Arc<Self>, job: Job) {
        let worker = Worker {
            shared: self.clone(),
            job: Some(job),
        };
        let span = tracing::Span::current();
        let work = move || span.in_scope(|| worker.run());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(work);
            return;
        }
        on_own_thread(work);
    }
}

/// Runs `work` on a thread of its own. A thread that cannot be made drops it, which reports
/// its job failed (every piece of work here does so when dropped): an error, never a panic.
fn on_own_thread(work: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("agent-session".into())
        .spawn(work);
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread for the session's file work");
    }
}

/// Blocking work the owner asked for: a store operation, or a try for the lock.
pub(super) enum Job {
    Read(ReadOp),
    Write(Box<WriteOp>),
    Lock(LockTry),
}

/// Runs one piece of the owner's blocking work on a thread. The job stays in `job` until its
/// result is the owner's: dropped with one (a runtime shutting down drops its blocking tasks, a
/// store of the user's own panics), it reports the job failed, so that no one waits for it
/// forever.
struct Worker {
    shared: Arc<Shared>,
    job: Option<Job>,
}

impl Worker {
    fn run(mut self) {
        let shared = &self.shared;
        let Some(job) = &self.job else {
            return;
        };
        let mut guard = None;
        let event = match *job {
            Job::Read(op) => {
                watch::arm(shared);
                if op.tidy {
                    shared.store.tidy();
                }
                Event::ReadDone(shared.store.load())
            }
            Job::Write(ref op) => {
                watch::arm(shared);
                Event::WriteDone(write(&*shared.store, op))
            }
            Job::Lock(t) => {
                let (outcome, held) = shared.take_lock(t);
                guard = held.map(|held| (t.attempt, held));
                let attempt = t.attempt;
                Event::LockTaken { attempt, outcome }
            }
        };
        self.job = None;
        // The guard goes beside the owner in the step that tells the owner.
        let (stepped, _) = shared.step(|driven| {
            if guard.is_some() {
                driven.guard = guard;
            }
            event
        });
        shared.run(stepped);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        if let Job::Lock(_) = job {
            tracing::error!("the try for the re-authentication lock stopped before it ran");
        } else {
            tracing::error!("the session's store work stopped before it was done");
        }
        let stopped = Error::Store(Arc::new(std::io::Error::other(
            "the session's store work stopped before it was done",
        )));
        let event = match job {
            Job::Read(_) => Event::ReadDone(Err(stopped)),
            Job::Write(_) => Event::WriteDone(Err(stopped)),
            // Not had, so that the owner never waits for a try that will not come.
            Job::Lock(t) => Event::LockTaken {
                attempt: t.attempt,
                outcome: LockOutcome::NotHeld(None),
            },
        };
        // What the report asks for is started from a thread of its own: a runtime may be
        // shutting down.
        let (stepped, _) = self.shared.step(|_| event);
        let shared = self.shared.clone();
        on_own_thread(move || shared.run(stepped));
    }
}

fn write(store: &dyn TokenStore, op: &WriteOp) -> Result<Written, Error> {
    let started = Instant::now();
    let written = match op {
        WriteOp::Store(token) => store.store(token).map(Written::Stored),
        WriteOp::Clear => store.clear().map(|()| Written::Cleared),
        WriteOp::Swap { expected, new } => store.swap(expected.as_ref(), new).map(Written::Swapped),
    };
    tracing::trace!(elapsed = ?started.elapsed(), ok = written.is_ok(), "store written");
    written
}

/// A call waiting for the owner's answer. Dropped before it is answered (a timeout, a dropped
/// request), it tells the owner ([`Event::Gone`]), which answers it no more and, if it was to
/// run the re-authenticator, has another waiting call run it.
pub(crate) struct Waiting {
    rx: oneshot::Receiver<Answer>,
    id: WaiterId,
    /// Let go once answered: the drop has nothing to tell then.
    shared: Weak<Shared>,
}

impl Future for Waiting {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let answer = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.shared = Weak::new();
        // Err: the owner is gone with its session, and nothing is left to wait for.
        Poll::Ready(answer.unwrap_or(Answer::Done(Ok(()))))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let id = self.id;
            // One step: once its channel is out of the map, no answer can reach it; one sent
            // before and not read is the owner's to hand on.
            let (stepped, _) = shared.step(|driven| {
                driven.waiting.remove(&id);
                Event::Gone(id)
            });
            shared.run(stepped);
        }
    }
}
