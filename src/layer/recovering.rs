//! [`ReauthService`](crate::layer::ReauthService): a
//! [`SessionService`](crate::layer::SessionService) with re-authentication on. Each call is
//! recorded and sent through the session service; its answer is read for a session failure, and
//! on one the session is recovered and the call replayed, through the session service again.
//!
//! The recovery is written once, in [`call_with_reauth`], over what a transport's messages must
//! offer for it ([`Replayable`]): a request that can be recorded for one replay, and a response
//! that can be checked for a session failure. `http`'s messages offer them in `for_http` (a body
//! recorded on a tape as it streams; a failure in the headers or in a gRPC
//! response's trailers), reqwest's in `for_reqwest` (a request copied with `try_clone`; a failure
//! in the status and headers). The `reqwest-middleware` middleware drives the same flow.

use std::future::Future;
use std::pin::Pin;

use http::header;
use tower_service::Service;

use super::{SessionService, attach, call_span, hide_credentials};
use crate::error::Error;
use crate::message::{SessionRequest, SessionResponse};
use crate::reauth::{self, Reauth};
use crate::replay::BoxError;
use crate::response::Reading;
use crate::session::{Refresh, Session};

mod for_http;
#[cfg(feature = "reqwest")]
mod for_reqwest;

/// A [`SessionService`](crate::layer::SessionService) that recovers from session failures: made by
/// [`SessionLayer::reauthenticate_with`](super::SessionLayer::reauthenticate_with).
///
/// A `tower::Service` of
///
/// - `http::Request<B>` for any [`WrapBody`](crate::layer::WrapBody) `B` (tonic's, hyper's boxed
///   bodies): its responses' bodies are [`PeekedBody`](crate::layer::PeekedBody), since the first
///   frame of a gRPC response may have been read ahead to see a failure in its trailers. A
///   failed re-authentication is mapped as
///   [`SessionLayer::reauthenticate_with`](super::SessionLayer::reauthenticate_with) says.
/// - `reqwest::Request`, with the `reqwest` feature, over a `reqwest::Client` (or any service
///   of reqwest's types): its responses are `reqwest::Response`, and a failure is read from
///   their status and headers. A request is copied for its replay with
///   `reqwest::Request::try_clone` (a body held in memory is shared, not copied, so the replay
///   limit does not apply); a request with a streaming body cannot be copied, and is sent once.
///   A failed re-authentication is the crate's [`Error::Reauthentication`], boxed.
pub type ReauthService<S> = SessionService<S, Reauth>;

impl<S: Clone> ReauthService<S> {
    /// The instance driven ready, for a call's future to own; a clone takes its place, and the
    /// replay drives that future's instance ready again.
    fn take_ready(&mut self) -> Self {
        let clone = self.clone();
        std::mem::replace(self, clone)
    }
}

/// The future of a [`ReauthService`](crate::layer::ReauthService) call.
type BoxedCall<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A request that can be recorded for one replay, and its response `Res` read for the session
/// (its trailers too where a transport has them).
pub(crate) trait Replayable<Res>: SessionRequest + Sized {
    /// What is kept of a request to send it again.
    type Record;
    /// The response the caller is handed.
    type Output: SessionResponse;

    /// The request to send, and what is kept of it; a body over `limit` bytes need not be.
    fn record(self, limit: usize) -> (Self, Self::Record);

    /// The request to send again, if it can be. Taken before the recovery, so that a first
    /// sending still streaming its body ends rather than waits for the recovery.
    fn replay(record: Self::Record) -> Option<Self>;

    /// The response as the caller is handed it, and its trailers when `session`'s failures
    /// are to be looked for there, for a call whose request was recorded as `record`; `None`,
    /// a response not to look at.
    fn check(
        response: Res,
        record: Option<&Self::Record>,
        session: &Session,
    ) -> impl Future<Output = (Self::Output, Option<http::HeaderMap>)> + Send;
}

/// One call with re-authentication on: renew a token due for renewal first, record the
/// request, and on a session failure recover once and replay once. A request with credentials
/// of its own, or made by the re-authenticator, goes through the session service as it is.
/// The service's errors are handed over as `E`; a failed recovery, as `failed` makes it of
/// [`Error::Reauthentication`], for the transport at hand.
///
/// It runs in a DEBUG span `session_reauth{path}`, so that the recovery's events and the spans
/// of the call's sendings are inside it.
pub(crate) fn call_with_reauth<S, Req, E>(
    mut service: ReauthService<S>,
    mut request: Req,
    failed: fn(Error, &Session) -> E,
) -> impl Future<Output = Result<Req::Output, E>>
where
    S: Service<Req>,
    S::Error: Into<E>,
    S::Response: SessionResponse,
    Req: Replayable<S::Response>,
{
    let span = tracing::debug_span!("session_reauth", path = request.path());
    let call = async move {
        let session = service.session.clone();
        if request.headers().contains_key(header::AUTHORIZATION) || reauth::reauthenticating() {
            // The request's own credentials, not the session's to renew (a password call may start
            // the session); or the re-authenticator's own call (its unlock through a layered
            // channel), which must not wait for the recovery it is part of. Sent as they are,
            // answered as they come: the session service reads the response as it reads any.
            let response = service.attach_and_call(request).await.map_err(Into::into)?;
            return Ok(Req::check(response, None, &session).await.0);
        }
        let mut sendings = 0;
        let current = service.current.load().clone();
        let reauth = service.reauth.clone();
        let due = reauth.due_for_renewal(current.token.as_ref());
        if due && !session.just_recovered(current.epoch) {
            tracing::debug!("the token expires within the renewal margin; renewing it first");
            (reauth.recover(&session, current).await).map_err(|error| failed(error, &session))?;
            // A renewed call hands over its first answer: at most one recovery per call then.
            sendings = SENDINGS - 1;
            // The renewal may have taken a while (a prompt): be ready again before sending.
            ready_again(&mut service.inner).await.map_err(Into::into)?;
        }
        loop {
            let (mut to_send, record) = request.record(reauth.replay_limit);
            // No credentials of its own: the session's token goes on it, if it has one.
            let current = service.current.load().clone();
            let carried = attach(&current, &session, to_send.headers_mut());
            let sending = call_span(&to_send, carried);
            let mut response = service.inner.call(to_send).await.map_err(Into::into)?;
            let authorization = hide_credentials(response.headers_mut());
            let (response, peeked) = Req::check(response, Some(&record), &session).await;
            sendings += 1;
            // In the call's span: the events of its reading, and the work its token starts (the
            // writer's), are the call's. Left before anything is awaited.
            let taken = {
                let _in_call = sending.as_deref().map(tracing::Span::enter);
                match session.read(
                    carried,
                    response.status(),
                    response.headers(),
                    authorization.as_ref(),
                    peeked.as_ref(),
                ) {
                    Reading::Failure(failure) if sendings < SENDINGS => {
                        tracing::debug!(%failure, "the call failed for its session");
                        None
                    }
                    // As the layer's future does: the token taken, and its write waited for
                    // when the session says so.
                    reading => Some(session.take(reading)),
                }
            };
            if let Some(taken) = taken {
                if let Refresh::Saving(saved) = taken {
                    saved.await;
                }
                return Ok(response);
            }
            // The sending is over: its span closes before the recovery.
            drop(sending);
            let replay = Req::replay(record);
            (reauth.recover(&session, current).await).map_err(|error| failed(error, &session))?;
            let Some(replay) = replay else {
                // Recovered for the next calls; this one cannot be sent again.
                tracing::debug!("session failure not replayed: the request cannot be sent again");
                return Ok(response);
            };
            ready_again(&mut service.inner).await.map_err(Into::into)?;
            request = replay;
        }
    };
    tracing::Instrument::instrument(call, span)
}

/// How many times a call is sent at most. A replay can fail for its session too: the token it
/// went with was another process's, written just before a lock all ended it (a `client
/// lockall` that unlocks first). Its recovery then goes further (the token that failed is no
/// longer offered), so a replay that fails again is recovered once more; the bound stops a
/// call whose every replay meets a new lock all.
const SENDINGS: usize = 3;

/// Drives the service ready again, before a call that follows a recovery.
async fn ready_again<S: Service<Req>, Req>(inner: &mut S) -> Result<(), S::Error> {
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await
}
