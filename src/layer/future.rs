//! [`ResponseFuture`](crate::layer::ResponseFuture): a call's answer on its way back. Its
//! credentials are hidden, its token taken (a refresh, or a password call's new session), and,
//! when the session says so, the answer waits for that token's write.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::hide_credentials;
use crate::message::SessionResponse;
use crate::response::Carried;
use crate::saved::Saved;
use crate::session::{Refresh, Session};

pin_project! {
    /// The response future of [`SessionService`](super::SessionService).
    ///
    /// # Panics
    ///
    /// When polled again after it completed, as tonic's futures do: that is a bug of the
    /// caller's.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        pub(super) future: F,
        // Boxed: rare (a call that waits for its token's write), and it would make every
        // call's future larger.
        pub(super) saving: Option<Box<(Saved, F::Output)>>,
        // A flag, not a state to move to: the future stays small, and nothing is moved on the
        // way out.
        pub(super) done: bool,
        pub(super) session: Session,
        pub(super) carried: Carried,
        // Boxed, and only when a subscriber wants it: most calls have none.
        pub(super) span: Option<Box<tracing::Span>>,
    }
}

impl<F, Res, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Res, E>>,
    Res: SessionResponse,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.done {
            // The caller broke the `Future` contract.
            panic!("session ResponseFuture polled after completion")
        }
        if let Some(mut held) = this.saving.take() {
            // The call's result is the agent's, handed over as it came, once the write is over
            // or its bound has passed.
            if Pin::new(&mut held.0).poll(cx).is_pending() {
                *this.saving = Some(held);
                return Poll::Pending;
            }
            *this.done = true;
            return Poll::Ready(held.1);
        }
        let result = ready!(this.future.poll(cx));
        *this.done = true;
        let mut response = result?;
        // A response without `authorization` brings no token, and this service recovers from
        // no failure: nothing more to read (see `response::read`).
        let Some(authorization) = hide_credentials(response.headers_mut()) else {
            return Poll::Ready(Ok(response));
        };
        // The writer and any other work the token starts carry the call's span.
        let _in_call = this.span.as_deref().map(tracing::Span::enter);
        let reading = this.session.read(
            *this.carried,
            response.status(),
            response.headers(),
            Some(&authorization),
            None,
        );
        match this.session.take(reading) {
            Refresh::Done => Poll::Ready(Ok(response)),
            Refresh::Saving(mut saved) => {
                if Pin::new(&mut saved).poll(cx).is_ready() {
                    return Poll::Ready(Ok(response));
                }
                *this.done = false;
                *this.saving = Some(Box::new((saved, Ok(response))));
                Poll::Pending
            }
        }
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
