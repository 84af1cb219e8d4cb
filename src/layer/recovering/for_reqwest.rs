//! Re-authentication over reqwest's messages: a request is copied for its replay with
//! `try_clone`, and a failure is read from the response's status and headers (reqwest hands
//! over no trailers).

use std::task::{Context, Poll};

use tower_service::Service;

use super::{BoxedCall, ReauthService, Replayable, call_with_reauth};
use crate::replay::BoxError;
use crate::session::Session;

#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl<S> Service<reqwest::Request> for ReauthService<S>
where
    S: Service<reqwest::Request, Response = reqwest::Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
{
    type Response = reqwest::Response;
    type Error = BoxError;
    type Future = BoxedCall<reqwest::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        // No tonic here to hand a `Status` to: the crate's own error, which a reqwest user
        // downcasts to.
        Box::pin(call_with_reauth(self.take_ready(), request, |error, _| {
            Box::new(error)
        }))
    }
}

/// A copy of the request, or `None` when its body streams and so cannot be copied.
impl Replayable<reqwest::Response> for reqwest::Request {
    type Record = Option<reqwest::Request>;
    type Output = reqwest::Response;

    fn record(self, _limit: usize) -> (Self, Self::Record) {
        // A body held in memory is shared by the copy (reference-counted bytes), so it costs
        // nothing to keep and the replay limit, which bounds what a recording buffers, does not
        // apply. The copy is taken before the session's token goes on the request: its replay
        // gets the token the recovery brought.
        let copy = self.try_clone();
        (self, copy)
    }

    fn replay(record: Self::Record) -> Option<Self> {
        record
    }

    async fn check(
        response: reqwest::Response,
        _: Option<&Self::Record>,
        _: &Session,
    ) -> (reqwest::Response, Option<http::HeaderMap>) {
        (response, None)
    }
}
