//! [`ReauthService`]: a [`SessionService`] with re-authentication on. Each call is recorded and
//! sent through the session service; its answer is read for a session failure (in the headers,
//! or in the trailers of a gRPC response that said nothing else), and on one the session is
//! recovered and the call replayed, through the session service again.

use http::{Request, Response};
use http_body::Body;

use super::*;
use crate::peek::PeekedBody;
use crate::reauth::{self, Reauth};
use crate::replay::{BoxError, Recording, Tape, WrapBody};

/// A [`SessionService`] that recovers from session failures: made by
/// [`SessionLayer::reauthenticate_with`].
///
/// Its responses' bodies are [`PeekedBody`]: the first frame of a gRPC response may have been
/// read ahead to see a failure in its trailers.
#[derive(Debug, Clone)]
pub struct ReauthService<S> {
    inner: SessionService<S>,
    reauth: Reauth,
}

impl<S> ReauthService<S> {
    pub(super) fn new(inner: SessionService<S>, reauth: Reauth) -> Self {
        Self { inner, reauth }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        self.inner.session()
    }

    /// The service the session's calls go to.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The service the session's calls go to, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The service the session's calls go to, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ReauthService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    ReqB: WrapBody + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    type Response = Response<PeekedBody<ResB>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.get_mut().poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The instance driven ready is the one that is called; the replay drives it ready
        // again.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(call_with_reauth(inner, self.reauth.clone(), request))
    }
}

/// One call with re-authentication on: renew a token due for renewal first, record the body,
/// and on a session failure recover once and replay once.
async fn call_with_reauth<S, ReqB, ResB>(
    mut inner: SessionService<S>,
    reauth: Reauth,
    request: Request<ReqB>,
) -> Result<Response<PeekedBody<ResB>>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: WrapBody + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body,
{
    let session = inner.session().clone();
    let fail = |e| reauth::failure(e, session.failures());
    if request.headers().contains_key(header::AUTHORIZATION) || reauth::reauthenticating() {
        // The request's own credentials, not the session's to renew (a password call may start
        // the session); or the re-authenticator's own call (its unlock through a layered
        // channel), which must not wait for the recovery it is part of. Sent as they are,
        // answered as they come.
        let (response, _) = inner.send(request);
        return Ok(response.await.map_err(Into::into)?.map(PeekedBody::new));
    }
    let mut renewed = false;
    let (epoch, token) = {
        let current = session.current();
        (current.epoch, current.token.clone())
    };
    if reauth.due_for_renewal(token.as_ref()) && !reauth.just_recovered(epoch) {
        tracing::debug!("the token expires within the renewal margin; renewing it first");
        reauth
            .recover(&session, epoch, token, reauth.generation())
            .await
            .map_err(fail)?;
        renewed = true;
        // The renewal may have taken a while (a prompt): be ready again before sending.
        ready_again(&mut inner).await?;
    }
    let (parts, body) = request.into_parts();
    let tape = Tape::new(reauth.replay_limit(), &body.size_hint());
    let original = parts.clone();
    let request = Request::from_parts(parts, ReqB::wrap(Recording::new(body, tape.clone())));
    let generation = reauth.generation();
    let (response, sent) = inner.send(request);
    let response = response.await.map_err(Into::into)?;
    let (response, failed) = session_failure(&session, &tape, response).await;
    if renewed || !failed {
        // At most one recovery per call: a call renewed before sending hands over its answer.
        return Ok(response);
    }
    let replay = tape.replay();
    reauth
        .recover(&session, sent.epoch, sent.token, generation)
        .await
        .map_err(fail)?;
    let Some(replay) = replay else {
        // Recovered for the next calls; this one cannot be sent again.
        tracing::debug!("session failure not replayed: body over the limit or failed");
        return Ok(response);
    };
    ready_again(&mut inner).await?;
    let (response, _) = inner.send(Request::from_parts(original, ReqB::wrap(replay)));
    Ok(response.await.map_err(Into::into)?.map(PeekedBody::new))
}

/// Drives the service ready again, before a call that follows a recovery.
async fn ready_again<S, ReqB>(inner: &mut SessionService<S>) -> Result<(), BoxError>
where
    S: Service<Request<ReqB>>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.get_mut().poll_ready(cx).map_err(Into::into)).await
}

/// Whether `response` is a session failure, as the session's agent says them: in its headers,
/// or in the trailers of a gRPC response whose headers said nothing (grpc-js sends every error
/// so). The trailers are looked for only when the request was sent whole, so that a call whose
/// request still streams is never held up; only as the first frame, so that a response that
/// carries a message is handed over at its first message; and only for
/// [`SessionFailures::trailers_wait`](crate::SessionFailures::trailers_wait), so that a stream
/// whose first message waits for an event is handed over without it.
async fn session_failure<B: Body>(
    session: &Session,
    tape: &Tape,
    response: Response<B>,
) -> (Response<PeekedBody<B>>, bool) {
    let failures = session.failures();
    let in_headers = failures
        .session_failure(response.status(), response.headers())
        .is_some();
    let awaiting_trailers = is_grpc(response.headers())
        && !response.headers().contains_key("grpc-status")
        && tape.is_read();
    let mut response = response.map(PeekedBody::new);
    if in_headers || !awaiting_trailers {
        return (response, in_headers);
    }
    let in_trailers = response
        .body_mut()
        .trailers_first(failures.trailers_wait())
        .await
        .is_some_and(|trailers| {
            failures
                .session_failure(http::StatusCode::OK, trailers)
                .is_some()
        });
    (response, in_trailers)
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}
