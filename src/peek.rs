//! [`PeekedBody`]: a response body whose first frame was read ahead, so that re-authentication
//! can see a session failure that a gRPC agent sends in the trailers of a response with no
//! message (as grpc-js sends every error), before the response is handed over.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

/// The response body of a re-authenticating [`SessionService`](crate::SessionService): the
/// body the service answered with, whose first frame may have been read ahead. It yields
/// exactly what that body yields.
pub struct PeekedBody<B: Body> {
    first: Option<Result<Frame<B::Data>, B::Error>>,
    /// Boxed so that the frame can be read ahead before the body is moved into the response.
    inner: Pin<Box<B>>,
    ended: bool,
}

impl<B: Body> PeekedBody<B> {
    pub(crate) fn new(body: B) -> Self {
        Self {
            first: None,
            inner: Box::pin(body),
            ended: false,
        }
    }

    /// Reads the first frame ahead and keeps it for the reader; returns the trailers when that
    /// frame is the body's trailers (a gRPC response with no message: an error).
    pub(crate) async fn trailers_first(&mut self) -> Option<&HeaderMap> {
        if self.first.is_none() && !self.ended {
            match self.inner.as_mut().frame().await {
                Some(frame) => self.first = Some(frame),
                None => self.ended = true,
            }
        }
        match &self.first {
            Some(Ok(frame)) => frame.trailers_ref(),
            _ => None,
        }
    }
}

// Nothing in it is ever pinned in place: the body is boxed, the frame read ahead is moved out.
impl<B: Body> Unpin for PeekedBody<B> {}

impl<B: Body> Body for PeekedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = this.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(0);
        }
        match &self.first {
            Some(Ok(frame)) => {
                let ahead = frame
                    .data_ref()
                    .map_or(0, |data| bytes::Buf::remaining(data) as u64);
                let rest = self.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(ahead));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(ahead));
                }
                hint
            }
            _ => self.inner.size_hint(),
        }
    }
}

impl<B: Body> std::fmt::Debug for PeekedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeekedBody")
            .field("read_ahead", &self.first.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
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
        assert_eq!(body.trailers_first().await, Some(&trailers));
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
        assert_eq!(body.trailers_first().await, None);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(&collected.to_bytes()[..], b"onetwo");
    }

    #[tokio::test]
    async fn an_empty_body_ends_once() {
        let mut body = PeekedBody::new(Full::new(Bytes::new()));
        let _ = body.trailers_first().await;
        assert!(body.is_end_stream() || body.size_hint().exact() == Some(0));
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
        let mut unread = PeekedBody::new(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(unread.size_hint().exact(), Some(3));
        assert_eq!(unread.trailers_first().await, None);
        assert_eq!(unread.size_hint().exact(), Some(3));
    }
}
