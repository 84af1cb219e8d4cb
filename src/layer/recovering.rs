//! The [`SessionService`] with re-authentication on: each call recorded, its answer read for a
//! session failure (in the headers, or in the trailers of a gRPC response that said nothing
//! else), and on one a recovery and a replay.

use super::*;

impl<S, ReqB, ResB, St> Service<Request<ReqB>> for SessionService<S, Reauth, St>
where
    St: TokenStore,
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
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
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The instance driven ready is the one that is called; the replay drives it ready
        // again.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let session = self.session.clone();
        let check = session.claim_check().then(|| session.check_file());
        Box::pin(call_with_reauth(
            inner,
            session,
            self.reauth.clone(),
            check,
            request,
        ))
    }
}

/// One call with re-authentication on: renew a token due for renewal first, record the body,
/// and on a session failure recover once and replay once.
async fn call_with_reauth<S, ReqB, ResB, St>(
    mut inner: S,
    session: Session<St>,
    reauth: Reauth,
    check: Option<oneshot::Receiver<()>>,
    request: Request<ReqB>,
) -> Result<Response<PeekedBody<ResB>>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: WrapBody + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body,
    St: TokenStore,
{
    if let Some(check) = check {
        let _ = check.await;
    }
    let (mut parts, body) = request.into_parts();
    let own = parts.headers.contains_key(header::AUTHORIZATION);
    if own || reauth::reauthenticating() {
        // The request's own credentials, not the session's to renew (a password call may start
        // the session); or the re-authenticator's own call (its unlock through a layered
        // channel), which must not wait for the recovery it is part of. Sent as they are,
        // answered as they come.
        let carried = if own {
            attach_to(&session, &mut parts.headers)
        } else {
            Carried::Nothing
        };
        let response = inner
            .call(Request::from_parts(parts, body))
            .await
            .map_err(Into::into)?;
        return Ok(settle(&session, response, carried)
            .await
            .map(PeekedBody::new));
    }
    let (token, epoch) = {
        let current = session.current();
        (current.token.clone(), current.epoch)
    };
    let mut recovered = false;
    if reauth.due_for_renewal(token.as_ref()) && !reauth.just_recovered(epoch) {
        tracing::debug!("the token expires within the renewal margin; renewing it first");
        let generation = reauth.generation();
        reauth
            .recover(&session, epoch, token, generation)
            .await
            .map_err(|e| reauth::failure(e, session.failures()))?;
        recovered = true;
        // The renewal may have taken a while (a prompt): be ready again before sending.
        std::future::poll_fn(|cx| inner.poll_ready(cx).map_err(Into::into)).await?;
    }
    let tape = Tape::new(reauth.replay_limit(), &body.size_hint());
    let original = parts.clone();
    let mut request = Request::from_parts(parts, ReqB::wrap(Recording::new(body, tape.clone())));
    let (sent, epoch, carried) = attach(&session, &mut request);
    let generation = reauth.generation();
    let response = inner.call(request).await.map_err(Into::into)?;
    let response = settle(&session, response, carried).await;
    let (response, failed) = session_failure(&session, &tape, response).await;
    if recovered || !failed {
        // At most one recovery per call: a call renewed before sending hands over its answer.
        return Ok(response);
    }
    let replay = tape.replay();
    reauth
        .recover(&session, epoch, sent, generation)
        .await
        .map_err(|e| reauth::failure(e, session.failures()))?;
    let Some(replay) = replay else {
        // Recovered for the next calls; this one cannot be sent again.
        tracing::debug!("session failure not replayed: body over the limit or failed");
        return Ok(response);
    };
    let mut request = Request::from_parts(original, ReqB::wrap(replay));
    let (_, _, carried) = attach(&session, &mut request);
    std::future::poll_fn(|cx| inner.poll_ready(cx).map_err(Into::into)).await?;
    let response = inner.call(request).await.map_err(Into::into)?;
    Ok(settle(&session, response, carried)
        .await
        .map(PeekedBody::new))
}

/// Attaches the session's token, if any; returns it, the epoch it belongs to, and what the
/// request carries.
fn attach<B, St: TokenStore>(
    session: &Session<St>,
    request: &mut Request<B>,
) -> (Option<Token>, u64, Carried) {
    let current = session.current();
    if let Some(token) = &current.token {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, token.header_value());
    }
    let carried = match current.token {
        Some(_) => Carried::Session(current.epoch),
        None => Carried::Nothing,
    };
    (current.token.clone(), current.epoch, carried)
}

/// What the plain layer does with a response: hide its credentials, take its token, and wait
/// for the token to be durable.
async fn settle<B, St: TokenStore>(
    session: &Session<St>,
    mut response: Response<B>,
    carried: Carried,
) -> Response<B> {
    if hide_credentials(&mut response)
        && let Refresh::Saving(saved) = take_token(session, &response, carried)
    {
        saved.await;
    }
    response
}

/// Whether `response` is a session failure, as the session's agent says them: in its headers,
/// or in the trailers of a gRPC response whose headers said nothing (grpc-js sends every error
/// so). The trailers are looked for only when the request was sent whole, so that a call whose
/// request still streams is never held up; only as the first frame, so that a response that
/// carries a message is handed over at its first message; and only for
/// [`SessionFailures::trailers_wait`](crate::SessionFailures::trailers_wait), so that a stream
/// whose first message waits for an event is handed over without it.
async fn session_failure<B: Body, St: TokenStore>(
    session: &Session<St>,
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
