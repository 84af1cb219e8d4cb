//! Re-authentication over `http`'s messages (tonic, hyper): the body is recorded on a
//! [`Tape`] as it streams, and a failure is read from the headers or, for a gRPC response that
//! said nothing else, its trailers.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use http_body::Body;
use tower_service::Service;

use super::{BoxedCall, ReauthService, Replayable, call_with_reauth};
use crate::peek::PeekedBody;
use crate::reauth;
use crate::replay::{BoxError, Recording, Tape, WrapBody};
use crate::session::Session;

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
    type Future = BoxedCall<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let service = self.take_ready();
        Box::pin(call_with_reauth(service, request, reauth::failure))
    }
}

/// The request's head, and its body on a tape: what was read of it, and the rest.
impl<B, ResB> Replayable<Response<ResB>> for Request<B>
where
    B: WrapBody + Send + 'static,
    B::Error: Into<BoxError>,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    type Record = (http::request::Parts, Arc<Tape>);
    type Output = Response<PeekedBody<ResB>>;

    fn record(self, limit: usize) -> (Self, Self::Record) {
        let (parts, body) = self.into_parts();
        let (recording, tape) = Recording::new(body, limit);
        let record = (parts.clone(), tape);
        (Request::from_parts(parts, B::wrap(recording)), record)
    }

    fn replay((parts, tape): Self::Record) -> Option<Self> {
        // `None` when the body went over the limit or failed.
        Some(Request::from_parts(parts, B::wrap(tape.replay()?)))
    }

    /// Its trailers when it is a gRPC response whose headers said nothing (grpc-js sends every
    /// error so). The trailers are looked for only when the
    /// request was sent whole (its body read to its end), so that a call whose request still
    /// streams is never held up; only as the first frame, so that a response that carries a
    /// message is handed over at its first message; only for
    /// [`SessionFailures::trailers_wait`](crate::SessionFailures::trailers_wait), so that a
    /// stream whose first message waits for an event is handed over without it; and not when
    /// the headers are a session failure, which the trailers cannot change.
    async fn check(
        response: Response<ResB>,
        record: Option<&Self::Record>,
        session: &Session,
    ) -> (Self::Output, Option<http::HeaderMap>) {
        let (parts, body) = response.into_parts();
        let mut body = PeekedBody::new(body);
        let failures = session.failures();
        let awaiting_trailers = record.is_some_and(|(_, tape)| tape.is_read())
            && (parts.headers.get(header::CONTENT_TYPE))
                .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
            && !parts.headers.contains_key("grpc-status")
            && failures
                .session_failure(parts.status, &parts.headers)
                .is_none();
        let trailers = if awaiting_trailers {
            // Rare (a response with no message), and small: a copy for the reading.
            body.trailers_first(failures.trailers_wait()).await.cloned()
        } else {
            None
        };
        (Response::from_parts(parts, body), trailers)
    }
}
