//! The body of a call turned away on its headers: read to its end in the background rather than
//! dropped, so that h2 gives back what it charged for its small DATA frames.
//!
//! h2 (0.4.16 on) charges a connection's small-DATA-frame budget for each non-final DATA frame
//! under 256 bytes, and gives the charge back only when the frame is read or the stream's
//! receive buffer is cleared. A frame that arrives after the body was dropped (or after the
//! stream was reset, which follows an early answer) is ignored, but charged all the same, and
//! never given back: a connection that sees enough of them over its life is ended with
//! `GOAWAY(ENHANCE_YOUR_CALM, "too_many_data_frames")`. A gRPC client's unary message is such a
//! frame (tonic sends END_STREAM after it, in an empty frame), and it is still on its way when
//! the refusal is decided on the headers: under churn, a few of the calls refused at each lock
//! all. Reading the body to its end gives every one of those charges back, and the stream ends
//! cleanly (no RST_STREAM).

use std::time::Duration;

use bytes::Buf as _;
use http_body::Body;
use http_body_util::BodyExt as _;

/// The most read of a refused call's body, as much as the agent reads of any call it answers:
/// a unary message is far smaller. Past it the body is dropped (and the stream reset), as
/// before; its frames are full-sized then, and h2 charges nothing for those.
const DRAIN_LIMIT: usize = 64 * 1024;

/// How long a refused call's body is waited for: the frames a client sent before it saw the
/// refusal arrive within a round trip; 1 s is the time h2 itself keeps a reset stream to absorb
/// frames in flight. A client that keeps its body open longer has the stream reset, as before.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads `body` to its end (at most [`DRAIN_LIMIT`] bytes, for at most [`DRAIN_TIME`]) on a
/// task of the current Tokio runtime, then drops it. A body already at its end, or outside a
/// runtime, is dropped at once.
pub(crate) fn drain<B>(body: B)
where
    B: Body + Send + 'static,
{
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut body = std::pin::pin!(body);
        let mut read = 0usize;
        let read_all = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.remaining());
                    if read > DRAIN_LIMIT {
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(DRAIN_TIME, read_all).await.is_err() {
            tracing::debug!("a refused call's body did not end in time; dropped");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use bytes::Bytes;
    use http_body::Frame;
    use tokio::sync::oneshot;
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    use super::*;
    use crate::{AuthLayer, SessionManager};

    /// A body of `frames` frames of `size` bytes (for ever with `None`), each polled frame
    /// `Pending` once first, that says on drop how many it yielded and whether it ended. With
    /// no size it never yields: a client that sends nothing more.
    struct Probe {
        frames: Option<usize>,
        size: usize,
        yielded: usize,
        pending: bool,
        dropped: Option<oneshot::Sender<(usize, bool)>>,
    }

    impl Probe {
        fn new(frames: Option<usize>, size: usize) -> (Self, oneshot::Receiver<(usize, bool)>) {
            let (sender, receiver) = oneshot::channel();
            let probe = Self {
                frames,
                size,
                yielded: 0,
                pending: false,
                dropped: Some(sender),
            };
            (probe, receiver)
        }

        fn ended(&self) -> bool {
            self.frames.is_some_and(|n| self.yielded == n)
        }
    }

    impl Body for Probe {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.ended() {
                return Poll::Ready(None);
            }
            if self.size == 0 {
                return Poll::Pending;
            }
            // As a client's frames come: not all there at once.
            self.pending = !self.pending;
            if self.pending {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.yielded += 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0; self.size])))))
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some(dropped) = self.dropped.take() {
                let _ = dropped.send((self.yielded, self.ended()));
            }
        }
    }

    #[tokio::test]
    async fn a_refused_calls_body_is_read_to_its_end() {
        let mut service = AuthLayer::new(SessionManager::new().unwrap()).layer(tower::service_fn(
            |_: http::Request<Probe>| async {
                Ok::<_, Infallible>(http::Response::new(String::new()))
            },
        ));
        let (body, dropped) = Probe::new(Some(3), 20);
        let request = http::Request::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap();
        let response = service.call(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(dropped.await.unwrap(), (3, true));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_dropped() {
        let (body, dropped) = Probe::new(None, 16 * 1024);
        drain(body);
        let (yielded, ended) = dropped.await.unwrap();
        assert!(!ended);
        assert_eq!(yielded, DRAIN_LIMIT / (16 * 1024) + 1);
    }

    #[tokio::test]
    async fn a_body_that_does_not_end_is_dropped_in_time() {
        let started = Instant::now();
        let (body, dropped) = Probe::new(None, 0);
        drain(body);
        let (_, ended) = dropped.await.unwrap();
        assert!(!ended);
        let waited = started.elapsed();
        // Not a speed goal: the bound is what it says, and not much more on a loaded machine.
        assert!(
            waited >= DRAIN_TIME && waited < DRAIN_TIME * 10,
            "dropped after {waited:?}"
        );
    }

    #[test]
    fn outside_a_runtime_the_body_is_dropped() {
        let (body, mut dropped) = Probe::new(Some(1), 1);
        drain(body);
        assert_eq!(dropped.try_recv().unwrap(), (0, false));
    }
}
