//! Request bodies that can be sent twice: recorded as they stream, up to a cap, so that a call
//! refused for its session can be replayed after a new unlock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// A boxed error, as tower and tonic use them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of a request body is kept for a replay by default: a unary call or a small
/// client stream fits; a larger body is sent once and not replayed.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body type that can wrap any other body: what the layer needs to record a body
/// as it streams, and to send the recording again.
///
/// Implemented for tonic's body and http-body-util's `UnsyncBoxBody`; implement it for your
/// own body type by boxing, as those do.
pub trait WrapBody: Body<Data = Bytes> + Sized {
    /// A body of this type that yields what `body` yields.
    fn wrap<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>;
}

#[cfg(feature = "tonic")]
impl WrapBody for tonic::body::Body {
    fn wrap<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        tonic::body::Body::new(body)
    }
}

impl WrapBody for http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError> {
    fn wrap<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt as _;
        body.map_err(Into::into).boxed_unsync()
    }
}

/// What was recorded of one body, shared between the body (owned by the transport) and the
/// call that may replay it.
#[derive(Debug)]
pub(crate) struct Tape {
    state: Mutex<TapeState>,
    limit: usize,
}

#[derive(Debug)]
struct TapeState {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: usize,
    progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Streaming,
    Complete,
    /// Over the limit, or failed: nothing to replay.
    Abandoned,
}

impl Tape {
    /// A tape for a body with `hint`; one that says it is over `limit` is not recorded at all.
    pub(crate) fn new(limit: usize, hint: &SizeHint) -> Arc<Self> {
        let progress = if hint.lower() > limit as u64 {
            Progress::Abandoned
        } else {
            Progress::Streaming
        };
        Arc::new(Self {
            state: Mutex::new(TapeState {
                data: Vec::new(),
                trailers: None,
                len: 0,
                progress,
            }),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, TapeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, frame: &Frame<Bytes>) {
        let mut state = self.lock();
        if state.progress != Progress::Streaming {
            return;
        }
        if let Some(data) = frame.data_ref() {
            state.len = state.len.saturating_add(data.len());
            if state.len > self.limit {
                state.progress = Progress::Abandoned;
                state.data = Vec::new();
                state.trailers = None;
                return;
            }
            // `Bytes` clones share the buffer: recording copies nothing.
            state.data.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            state.trailers = Some(trailers.clone());
        }
    }

    fn finish(&self, progress: Progress) {
        let mut state = self.lock();
        if state.progress == Progress::Streaming {
            state.progress = progress;
        }
    }

    /// The recording, if the body was sent whole and within the limit.
    pub(crate) fn replay(&self) -> Option<Replay> {
        let state = self.lock();
        (state.progress == Progress::Complete).then(|| Replay {
            data: state.data.iter().cloned().collect(),
            trailers: state.trailers.clone(),
        })
    }
}

pin_project! {
    /// A body that records what it yields on a [`Tape`].
    pub(crate) struct Recording<B> {
        #[pin]
        inner: B,
        tape: Arc<Tape>,
    }
}

impl<B> Recording<B> {
    pub(crate) fn new(inner: B, tape: Arc<Tape>) -> Self {
        Self { inner, tape }
    }
}

impl<B: Body<Data = Bytes>> Body for Recording<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => this.tape.record(frame),
            Some(Err(_)) => this.tape.finish(Progress::Abandoned),
            None => this.tape.finish(Progress::Complete),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // A transport may stop polling once this says so, without the final `None`.
        let end = self.inner.is_end_stream();
        if end {
            self.tape.finish(Progress::Complete);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A recorded body, sent again: its data frames, then its trailers.
#[derive(Debug)]
pub(crate) struct Replay {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len: usize = self.data.iter().map(Bytes::len).sum();
        SizeHint::with_exact(len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

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

    fn frames(items: Vec<Frame<Bytes>>) -> Frames {
        Frames(items.into())
    }

    async fn drain<B: Body<Data = Bytes>>(body: B) -> (Vec<u8>, Option<HeaderMap>)
    where
        B::Error: std::fmt::Debug,
    {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    async fn record<B: Body<Data = Bytes> + Unpin>(body: B, limit: usize) -> Option<Replay>
    where
        B::Error: std::fmt::Debug,
    {
        let tape = Tape::new(limit, &body.size_hint());
        let sent = drain(Recording::new(body, tape.clone())).await;
        let replay = tape.replay()?;
        let replayed = drain(replay).await;
        assert_eq!(replayed, sent, "a replay sends what was sent");
        tape.replay()
    }

    #[tokio::test]
    async fn split_frames_and_trailers_replay() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-trace", "x".parse().unwrap());
        let body = frames(vec![
            Frame::data(Bytes::from_static(b"hel")),
            Frame::data(Bytes::from_static(b"lo")),
            Frame::trailers(trailers),
        ]);
        assert!(record(body, 64).await.is_some());
    }

    #[tokio::test]
    async fn empty_body_replays() {
        assert!(record(Full::new(Bytes::new()), 64).await.is_some());
        assert!(
            record(http_body_util::Empty::<Bytes>::new(), 0)
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn exactly_at_the_limit_replays_and_one_over_does_not() {
        let at = frames(vec![
            Frame::data(Bytes::from(vec![1; 40])),
            Frame::data(Bytes::from(vec![2; 24])),
        ]);
        assert!(record(at, 64).await.is_some());
        let over = frames(vec![
            Frame::data(Bytes::from(vec![1; 40])),
            Frame::data(Bytes::from(vec![2; 25])),
        ]);
        assert!(record(over, 64).await.is_none());
    }

    #[tokio::test]
    async fn a_size_hint_over_the_limit_is_not_recorded_at_all() {
        let body = Full::new(Bytes::from(vec![0; 65]));
        let tape = Tape::new(64, &body.size_hint());
        let mut recording = Recording::new(body, tape.clone());
        // Nothing is kept even while streaming.
        let _ = Pin::new(&mut recording).frame().await;
        assert!(tape.lock().data.is_empty());
        assert!(tape.replay().is_none());
    }

    #[tokio::test]
    async fn a_body_still_streaming_is_not_replayed() {
        let body = frames(vec![
            Frame::data(Bytes::from_static(b"a")),
            Frame::data(Bytes::from_static(b"b")),
        ]);
        let tape = Tape::new(64, &body.size_hint());
        let mut recording = Recording::new(body, tape.clone());
        let _ = Pin::new(&mut recording).frame().await;
        assert!(tape.replay().is_none());
    }
}
