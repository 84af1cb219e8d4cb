//! [`Saved`]: what a call waits on while the token its response brought is written, never
//! longer than a bound: another process may hold the session file's lock, stopped, and a
//! hung write must not hang the call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::session::Waiting;

/// Resolves when the write covering a call's token is over (written, lost to another process,
/// or failed), or when `bound` has passed since the call's token was taken, whichever is first.
/// The write goes on either way; `Session::flush` waits for it.
///
/// The deadline is `futures-timer`'s, which needs no runtime: a response may be polled on any
/// executor.
pub(crate) struct Saved {
    // A trait object: the drop of a call's future that never waited (the hot path) then holds
    // no inlined drop of the waiter's channel and session handle, only a pointer check.
    done: Pin<Box<dyn Future<Output = crate::session::Answer> + Send>>,
    deadline: futures_timer::Delay,
}

impl Saved {
    pub(crate) fn new(done: Waiting, bound: Duration) -> Self {
        Self {
            done: Box::pin(done),
            deadline: futures_timer::Delay::new(bound),
        }
    }
}

impl Future for Saved {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Woken when the write is done, whether it succeeded or not: a failed write is logged
        // and reported by `Session::flush`.
        if self.done.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        ready!(Pin::new(&mut self.deadline).poll(cx));
        tracing::warn!("the token's write is taking long; answering the call without it");
        Poll::Ready(())
    }
}
