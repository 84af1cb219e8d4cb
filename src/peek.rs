//! [`PeekedBody`](crate::layer::PeekedBody): a response body whose first frame was read ahead, so that re-authentication
//! can see a session failure that a gRPC agent sends in the trailers of a response with no
//! message (as grpc-js sends every error), before the response is handed over.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The response body of a re-authenticating [`SessionService`](crate::layer::SessionService): the
/// body the service answered with, whose first frame may have been read ahead. It yields
/// exactly what that body yields.
pub struct PeekedBody<B: Body + ?Sized> {
    // Frames read ahead of the rest, yielded first: a response's first frame, or what a replay
    // sends again (crate::replay).
    pub(crate) ahead: std::vec::IntoIter<Result<Frame<B::Data>, B::Error>>,
    // The rest, `None` once it ended. Boxed so that a frame can be read ahead before the body
    // is moved into the response.
    pub(crate) rest: Option<Pin<Box<B>>>,
}

impl<B: Body> PeekedBody<B> {
    pub(crate) fn new(body: B) -> Self {
        Self {
            ahead: Vec::new().into_iter(),
            rest: Some(Box::pin(body)),
        }
    }

    /// Reads the first frame ahead, waiting for it at most `bound`, and keeps it for the
    /// reader; returns the trailers when that frame is the body's trailers (a gRPC response
    /// with no message: an error). A body with nothing to read within `bound` (a stream whose
    /// first message waits for an event) is handed over unread.
    pub(crate) async fn trailers_first(&mut self, bound: Duration) -> Option<&HeaderMap> {
        if self.ahead.len() == 0
            && !bound.is_zero()
            && let Some(rest) = self.rest.as_mut()
        {
            let mut deadline = futures_timer::Delay::new(bound);
            let read = std::future::poll_fn(|cx| {
                if let Poll::Ready(frame) = rest.as_mut().poll_frame(cx) {
                    return Poll::Ready(Some(frame));
                }
                Pin::new(&mut deadline).poll(cx).map(|()| None)
            })
            .await;
            match read {
                Some(Some(frame)) => self.ahead = vec![frame].into_iter(),
                Some(None) => self.rest = None,
                None => {}
            }
        }
        self.ahead.as_slice().first()?.as_ref().ok()?.trailers_ref()
    }
}

// Nothing in it is ever pinned in place: the body is boxed, the frames read ahead are moved out.
impl<B: Body + ?Sized> Unpin for PeekedBody<B> {}

impl<B: Body + ?Sized> Body for PeekedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.ahead.next() {
            return Poll::Ready(Some(frame));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(rest.as_mut().poll_frame(cx));
        if frame.is_none() {
            this.rest = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.len() == 0 && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    /// The bytes read ahead, then what the rest hints.
    fn size_hint(&self) -> SizeHint {
        let ahead = (self.ahead.as_slice().iter())
            .filter_map(|frame| frame.as_ref().ok()?.data_ref())
            .map(|data| bytes::Buf::remaining(data) as u64)
            .sum::<u64>();
        let rest =
            (self.rest.as_ref()).map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(ahead));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint
    }
}

impl<B: Body + ?Sized> std::fmt::Debug for PeekedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeekedBody")
            .field("read_ahead", &(self.ahead.len() > 0))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};

    /// Longer than any test takes: the frames here are all ready.
    const LONG: Duration = Duration::from_secs(3600);
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body that yields the given frames, one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn stream(frames: Vec<Frame<Bytes>>) -> Frames {
        Frames(frames.into())
    }

    #[tokio::test]
    async fn trailers_first_are_seen_and_still_yielded() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "2".parse().unwrap());
        let mut body = PeekedBody::new(stream(vec![Frame::trailers(trailers.clone())]));
        assert_eq!(body.trailers_first(LONG).await, Some(&trailers));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
    }

    #[tokio::test]
    async fn a_message_first_is_yielded_whole() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = vec![
            Frame::data(Bytes::from_static(b"one")),
            Frame::data(Bytes::from_static(b"two")),
            Frame::trailers(trailers.clone()),
        ];
        let mut body = PeekedBody::new(stream(frames));
        assert_eq!(body.trailers_first(LONG).await, None);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(&collected.to_bytes()[..], b"onetwo");
    }

    #[tokio::test]
    async fn a_body_with_nothing_to_read_is_handed_over_at_the_bound() {
        struct Silent;
        impl Body for Silent {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                Poll::Pending
            }
        }
        let mut body = PeekedBody::new(Silent);
        assert_eq!(body.trailers_first(Duration::from_millis(1)).await, None);
        assert!(
            body.ahead.len() == 0 && body.rest.is_some(),
            "nothing read, nothing lost"
        );
        let mut unread = PeekedBody::new(Full::new(Bytes::from_static(b"x")));
        assert_eq!(unread.trailers_first(Duration::ZERO).await, None);
        assert!(unread.ahead.len() == 0, "a zero bound reads nothing");
    }

    #[tokio::test]
    async fn an_empty_body_ends_once() {
        let mut body = PeekedBody::new(Full::new(Bytes::new()));
        let _ = body.trailers_first(LONG).await;
        assert!(body.is_end_stream() || body.size_hint().exact() == Some(0));
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
        let mut unread = PeekedBody::new(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(unread.size_hint().exact(), Some(3));
        assert_eq!(unread.trailers_first(LONG).await, None);
        assert_eq!(unread.size_hint().exact(), Some(3));
    }
}
