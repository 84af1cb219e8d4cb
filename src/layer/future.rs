//! [`ResponseFuture`](crate::layer::ResponseFuture): a call's answer on its way back. Its credentials are hidden, its token
//! taken (a refresh, or a password call's new session), and, when the session says so, the
//! answer waits for that token's write.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{Carried, hide_credentials};
use crate::bearer;
use crate::message::SessionResponse;
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
        future: F,
        // Boxed: rare (a call that waits for its token's write), and it would make every
        // call's future larger.
        saving: Holding<F::Output>,
        // A flag, not a state to move to: the future stays small, and nothing is moved on the
        // way out.
        done: bool,
        session: Session,
        carried: Carried,
        // Boxed, and only when a subscriber wants it: most calls have none.
        span: Option<Box<tracing::Span>>,
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn new(
        future: F,
        session: Session,
        carried: Carried,
        span: Option<Box<tracing::Span>>,
    ) -> Self {
        Self {
            future,
            saving: Holding(None),
            done: false,
            session,
            carried,
            span,
        }
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
            polled_after_completion()
        }
        if let Some(saving) = &mut this.saving.0 {
            // The call's result is the agent's, handed over as it came, once the write is over
            // or its bound has passed.
            let (saved, response) = &mut **saving;
            ready!(Pin::new(saved).poll(cx));
            *this.done = true;
            return match response.take() {
                Some(response) => Poll::Ready(response),
                None => polled_after_completion(),
            };
        }
        let result = ready!(this.future.poll(cx));
        *this.done = true;
        let mut response = result?;
        if !hide_credentials(response.headers_mut()) {
            return Poll::Ready(Ok(response));
        }
        // The writer and any other work the token starts carry the call's span.
        let _in_call = this.span.as_deref().map(tracing::Span::enter);
        match take_token(this.session, &response, *this.carried) {
            Refresh::Done => Poll::Ready(Ok(response)),
            Refresh::Saving(mut saved) => {
                if Pin::new(&mut saved).poll(cx).is_ready() {
                    return Poll::Ready(Ok(response));
                }
                *this.done = false;
                this.saving.0 = Some(Box::new((saved, Some(Ok(response)))));
                Poll::Pending
            }
        }
    }
}

/// The wait for a token's write, and the response held back meanwhile. Its drop is out of
/// line: the future of a call that never waited (the hot path) drops it with one test, not
/// with the inlined drop of the wait and of a response.
struct Holding<T>(Option<Box<(Saved, Option<T>)>>);

impl<T> Drop for Holding<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            drop_held(held);
        }
    }
}

#[inline(never)]
fn drop_held<T>(held: Box<(Saved, Option<T>)>) {
    drop(held);
}

/// Takes the token a response brought, as what the request `carried` makes it: a refresh of
/// the session's token, or the start of a session after a password call.
fn take_token(session: &Session, response: &impl SessionResponse, carried: Carried) -> Refresh {
    if let Carried::Nothing = carried {
        return Refresh::Done;
    }
    // Only a response with `authorization` comes here (`hide_credentials` found it).
    let values = response.headers().get_all(http::header::AUTHORIZATION);
    if session.refuses(response.status(), response.headers()) {
        // A rejection refreshes nothing: a token on it (from a faulty agent, or something in
        // between) is not the agent's word that the session goes on.
        tracing::warn!("ignoring a token on a rejected call");
        return Refresh::Done;
    }
    match carried {
        Carried::Session(epoch) => session.take_refresh(values, epoch),
        Carried::Password(epoch) => bearer::token_from_agent(values)
            .map_or(Refresh::Done, |token| {
                session.start_from_password(token, epoch)
            }),
        Carried::Nothing => Refresh::Done,
    }
}

/// A future polled again after it completed: the caller broke the `Future` contract.
fn polled_after_completion() -> ! {
    panic!("session ResponseFuture polled after completion")
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
