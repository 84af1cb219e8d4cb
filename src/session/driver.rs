//! The driver of a session's [`Owner`]: each event is one step under the owner's mutex, then
//! what the step said is done outside it (reads and writes of the store on blocking threads,
//! answers handed to the calls that wait), and the results come back as the next events.
//!
//! The mutex is the owner's and nothing else's: it is never held across I/O or while waiting
//! for another process. The one lock taken under it is the short one around the guards of the
//! re-authentication lock (`reauth_lock.rs`), never the other way round: a guard is let go, or
//! lent to a recovery, in the step that decides it, so that a later step's guard is never
//! the one let go. The token calls read is published from inside the step that changed it, so
//! calls see the changes in the order the owner made them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::owner::{Answer, Effects, LockOp, Owner, ReadOp, WaiterId, WriteOp, Written};
use super::*;

mod reauth_lock;
pub(crate) use reauth_lock::ReauthGuards;

/// The owner, and the channels of the calls waiting for its answers.
pub(super) struct Driven {
    pub(super) owner: Owner,
    waiting: HashMap<WaiterId, oneshot::Sender<Answer>>,
}

impl Driven {
    pub(super) fn new(owner: Owner) -> Self {
        Self {
            owner,
            waiting: HashMap::new(),
        }
    }
}

/// Which lane of store operations a thread is already running (it runs the next one of that
/// lane itself instead of starting a thread for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Read,
    Write,
}

impl Shared {
    fn driven(&self) -> MutexGuard<'_, Driven> {
        // Every step assigns whole fields and a panic inside one leaves at worst an answer
        // undelivered, which the waiter's drop tidies: a poisoned lock is safe to use.
        self.driven.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One step of the owner, then what it said to do. Returns the step's own result.
    pub(super) fn step<T>(self: &Arc<Self>, event: impl FnOnce(&mut Owner) -> T) -> T {
        let ((result, _), effects) = self.step_in(|owner| (event(owner), None));
        self.run(effects, None);
        result
    }

    /// One step whose result may be a waiter: its answer is waited for with the [`Waiting`].
    pub(super) fn step_and_wait(
        self: &Arc<Self>,
        event: impl FnOnce(&mut Owner) -> Option<WaiterId>,
    ) -> Option<Waiting> {
        let ((_, registered), effects) = self.step_in(|owner| {
            let waiter = event(owner);
            ((), waiter)
        });
        self.run(effects, None);
        registered.map(|(id, rx)| Waiting {
            rx,
            id,
            shared: Arc::downgrade(self),
            answered: false,
        })
    }

    /// The step itself, under the lock: the event, the waiter it made (registered before any
    /// answer is handed out, so that an answer in the same step reaches it), the answers, and
    /// the token published.
    #[allow(clippy::type_complexity)]
    fn step_in<T>(
        &self,
        event: impl FnOnce(&mut Owner) -> (T, Option<WaiterId>),
    ) -> ((T, Option<(WaiterId, oneshot::Receiver<Answer>)>), Effects) {
        self.step_in_driven(|driven| event(&mut driven.owner))
    }

    /// [`Shared::step_in`] whose event sees the waiters' channels too.
    #[allow(clippy::type_complexity)]
    fn step_in_driven<T>(
        &self,
        event: impl FnOnce(&mut Driven) -> (T, Option<WaiterId>),
    ) -> ((T, Option<(WaiterId, oneshot::Receiver<Answer>)>), Effects) {
        let mut driven = self.driven();
        let (result, waiter) = event(&mut driven);
        let registered = waiter.map(|id| {
            let (tx, rx) = oneshot::channel();
            driven.waiting.insert(id, tx);
            (id, rx)
        });
        let mut effects = driven.owner.take_effects();
        // Published before any answer is handed out: whoever is answered sees the token the
        // step made.
        self.publish(&driven.owner, effects.publish);
        let mut answers = std::mem::take(&mut effects.answers);
        while !answers.is_empty() {
            for (id, answer) in answers {
                let Some(tx) = driven.waiting.remove(&id) else {
                    continue;
                };
                if let Err(Answer::Reauthenticate(number)) = tx.send(answer) {
                    // The call chosen to run the re-authenticator is gone: choose another.
                    driven.owner.runner_gone(number);
                }
            }
            let more = driven.owner.take_effects();
            self.publish(&driven.owner, more.publish);
            answers = merge(&mut effects, more);
        }
        // The lock is let go here, in the step that decided it: after the step, the slot may
        // hold the guard a later step put there (the lock all's, lent to a recovery).
        let let_go = if effects.lock.is_empty() {
            None
        } else {
            self.released_guard(&mut effects.lock)
        };
        drop(driven);
        // Closing the lock's file, outside the owner's mutex.
        drop(let_go);
        ((result, registered), effects)
    }

    /// The guard of the re-authentication lock, if `lock` lets it go (the release is then
    /// done, and taken out of `lock`). Out of line: most steps ask nothing of the lock.
    #[cold]
    fn released_guard(&self, lock: &mut Vec<LockOp>) -> Option<crate::file::ReauthLock> {
        if !lock.contains(&LockOp::Release) {
            return None;
        }
        lock.retain(|op| *op != LockOp::Release);
        self.reauth_guard().recovery.take()
    }

    /// Publishes the owner's token for calls, if the step changed it.
    fn publish(&self, owner: &Owner, changed: bool) {
        if !changed {
            return;
        }
        let (token, epoch) = owner.current();
        self.current.store(Current {
            token: token.cloned(),
            epoch,
        });
    }

    /// Starts the store operations a step asked for; `here` is the lane the calling thread
    /// runs, whose next operation it returns instead of starting a thread for it.
    fn run(self: &Arc<Self>, effects: Effects, here: Option<Lane>) -> Option<Job> {
        for op in effects.lock {
            self.reauth_lock(op);
        }
        let mut mine = None;
        if let Some(op) = effects.read {
            let job = Job::Read(op);
            if here == Some(Lane::Read) {
                mine = Some(job);
            } else {
                self.spawn(job);
            }
        }
        if let Some(op) = effects.write {
            let job = Job::Write(*op);
            if here == Some(Lane::Write) {
                mine = Some(job);
            } else {
                self.spawn(job);
            }
        }
        mine
    }

    fn spawn(self: &Arc<Self>, job: Job) {
        let worker = Worker {
            shared: self.clone(),
            job: Some(job),
        };
        spawn_blocking_anywhere(move || worker.run());
    }

    /// Runs `job` on this (blocking) thread, and the next of its lane after it. Used by the
    /// watch's thread for its reads.
    pub(super) fn run_here(self: &Arc<Self>, effects: Effects) {
        let mut worker = Worker {
            shared: self.clone(),
            job: None,
        };
        if let Some(op) = effects.read {
            worker.job = Some(Job::Read(op));
        }
        if let Some(op) = effects.write {
            self.spawn(Job::Write(*op));
        }
        for op in effects.lock {
            self.reauth_lock(op);
        }
        worker.run();
    }

    /// A step whose effects the caller runs itself ([`Shared::run_here`]).
    pub(super) fn step_effects(&self, event: impl FnOnce(&mut Owner)) -> Effects {
        let (_, effects) = self.step_in(|owner| {
            event(owner);
            ((), None)
        });
        effects
    }
}

/// `more`'s answers, to hand out next; its other effects go into `effects`.
fn merge(effects: &mut Effects, more: Effects) -> Vec<(WaiterId, Answer)> {
    effects.read = effects.read.take().or(more.read);
    effects.write = effects.write.take().or(more.write);
    effects.publish |= more.publish;
    effects.lock.extend(more.lock);
    more.answers
}

/// A store operation the owner asked for.
enum Job {
    Read(ReadOp),
    Write(WriteOp),
}

/// Runs store operations on a blocking thread, one lane at a time. A job stays in `job` until
/// its result is the owner's: dropped with one (a runtime shutting down drops its blocking
/// tasks, a store of the user's own panics), it reports the job failed, so that no one waits
/// for it forever.
struct Worker {
    shared: Arc<Shared>,
    job: Option<Job>,
}

impl Worker {
    fn run(mut self) {
        watch::arm(&self.shared);
        while let Some(job) = &self.job {
            let shared = &self.shared;
            let (effects, lane) = match job {
                Job::Read(op) => {
                    if op.tidy {
                        shared.store.tidy();
                    }
                    let result = shared.store.load();
                    self.job = None;
                    let (_, effects) = shared.step_in(|o| (o.read_done(result), None));
                    (effects, Lane::Read)
                }
                Job::Write(op) => {
                    let result = write(&*shared.store, op);
                    self.job = None;
                    let (_, effects) = shared.step_in(|o| (o.write_done(result), None));
                    (effects, Lane::Write)
                }
            };
            self.job = shared.run(effects, Some(lane));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        tracing::error!("the session's store work stopped before it was done");
        let stopped = || {
            Error::Store(Arc::new(std::io::Error::other(
                "the session's store work stopped before it was done",
            )))
        };
        let effects = self.shared.step_effects(|owner| match job {
            Job::Read(_) => owner.read_done(Err(stopped())),
            Job::Write(_) => owner.write_done(Err(stopped())),
        });
        // What that step asks for (the next write, a read, the lock let go) is done on a thread
        // of its own: the runtime that dropped this job may be shutting down.
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("agent-session".into())
            // Run from no lane: everything it asks for is started, nothing is handed back.
            .spawn(move || drop(shared.run(effects, None)));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for the session's file work");
        }
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
/// request), it tells the owner, which answers it no more and, if it was to run the
/// re-authenticator, has another waiting call run it.
pub(crate) struct Waiting {
    rx: oneshot::Receiver<Answer>,
    id: WaiterId,
    shared: std::sync::Weak<Shared>,
    answered: bool,
}

impl Future for Waiting {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let answer = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.answered = true;
        Poll::Ready(answer.unwrap_or_else(|_| {
            // The owner is gone with its session: nothing is left to wait for.
            Answer::Done(Ok(()))
        }))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            let id = self.id;
            let rx = &mut self.rx;
            // One step: once its channel is out of the map, no answer can reach it, and one sent
            // before (a re-authenticator to run) is read here and handed on.
            let (_, effects) = shared.step_in_driven(|driven| {
                driven.waiting.remove(&id);
                if let Ok(Answer::Reauthenticate(number)) = rx.try_recv() {
                    driven.owner.runner_gone(number);
                }
                driven.owner.waiter_gone(id);
                ((), None)
            });
            shared.run(effects, None);
        }
    }
}
