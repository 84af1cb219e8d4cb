//! Request bodies that can be sent twice, so that a call refused for its session can be
//! replayed after a new unlock.
//!
//! The body lives on a [`Tape`] shared by the [`Recording`] the transport polls and by the call.
//! What the transport reads is recorded, up to a limit; a replay sends the recording and then
//! the part of the body not read yet, taken off the tape. So a refusal that comes back before
//! the transport read the whole body (a server answers on the headers alone) does not cost the
//! call its replay. The part not read is not buffered and does not count against the limit.
//! A body whose recording went over the limit, or that failed, is not replayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::peek::PeekedBody;

/// A boxed error, as tower and tonic use them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
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
        body.map_err(Into::into).boxed_unsync()
    }
}

/// A request body of any type, as the tape keeps it.
type BoxBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// A body sent again: the recorded frames, then the rest of the body not read yet, if any.
pub(crate) type Replay = PeekedBody<dyn Body<Data = Bytes, Error = BoxError> + Send>;

/// One body and what was read of it, shared between the [`Recording`] (which the transport
/// owns) and the call that may replay it.
pub(crate) struct Tape(Mutex<TapeState>);

#[derive(Default)]
struct TapeState {
    /// The data frames read, and the trailers: `None` once over the limit or failed, as there
    /// is nothing to replay then.
    recorded: Option<(Vec<Bytes>, Option<HeaderMap>)>,
    /// How many more bytes can be recorded within the limit.
    room: usize,
    /// The body until it ends or a replay takes it. Here rather than in the `Recording`, so that
    /// a replay can take what is not read yet, even after the transport dropped the `Recording`
    /// of a refused call.
    body: Option<BoxBody>,
    /// The task last left waiting on the `Recording`: woken when a replay takes the body, so
    /// that the refused call's stream ends instead of waiting for ever.
    waker: Option<Waker>,
    /// Whether the body was read to its end, recorded or not (over the limit). A body gone
    /// before it ended was taken by a replay: the first sending gets no more of it.
    ended: bool,
}

impl Tape {
    fn lock(&self) -> MutexGuard<'_, TapeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the body was read to its end, within the limit or not: the request has been
    /// sent whole, so waiting for the response cannot hold up the request.
    pub(crate) fn is_read(&self) -> bool {
        self.lock().ended
    }

    /// The recording and the rest of the body, if the recording is within the limit and the
    /// body did not fail. The rest is taken once: the first sending ends with an error then,
    /// and a later call returns `None`.
    pub(crate) fn replay(&self) -> Option<Replay> {
        let mut state = self.lock();
        let (data, trailers) = state.recorded.as_ref()?;
        // Trailers are a body's last frame: after them, nothing is left to take.
        let ended = state.ended || trailers.is_some();
        let frames = (data.iter().cloned().map(Frame::data))
            .chain(trailers.clone().map(Frame::trailers))
            .map(Ok);
        let ahead = frames.collect::<Vec<_>>().into_iter();
        // A body not ended and gone was taken by an earlier replay: nothing to send again.
        let rest = if ended {
            None
        } else {
            Some(state.body.take()?)
        };
        let waiting = state.waker.take();
        drop(state);
        if let Some(waker) = waiting {
            waker.wake();
        }
        Some(PeekedBody { ahead, rest })
    }
}

impl TapeState {
    fn record(&mut self, frame: &Frame<Bytes>) {
        let Some((data, trailers)) = &mut self.recorded else {
            return;
        };
        if let Some(frame) = frame.data_ref() {
            let Some(room) = self.room.checked_sub(frame.len()) else {
                self.recorded = None;
                return;
            };
            self.room = room;
            // `Bytes` clones share the buffer: recording copies nothing.
            data.push(frame.clone());
        } else if let Some(frame) = frame.trailers_ref() {
            *trailers = Some(frame.clone());
        }
    }
}

/// The body sent the first time: reads the body on its [`Tape`] and records what it yields.
pub(crate) struct Recording {
    tape: Arc<Tape>,
}

impl Recording {
    /// `body` to send the first time, and its tape; one whose size hint says it is over `limit`
    /// is not recorded at all.
    pub(crate) fn new<B>(body: B, limit: usize) -> (Self, Arc<Tape>)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let state = TapeState {
            recorded: (body.size_hint().lower() <= limit as u64).then(Default::default),
            room: limit,
            body: Some(Box::pin(body.map_err(Into::into))),
            ..TapeState::default()
        };
        let tape = Arc::new(Tape(Mutex::new(state)));
        (Self { tape: tape.clone() }, tape)
    }
}

impl Body for Recording {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The body is polled under the tape's lock, so that a replay takes it between two
        // frames, never during one: each frame the transport got is on the recording.
        let mut state = self.tape.lock();
        let Some(body) = state.body.as_mut() else {
            let taken = "the request body was taken to be sent again";
            return Poll::Ready((!state.ended).then(|| Err(taken.into())));
        };
        let Poll::Ready(frame) = body.as_mut().poll_frame(cx) else {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        match &frame {
            Some(Ok(frame)) => state.record(frame),
            Some(Err(_)) => state.recorded = None,
            None => {
                state.ended = true;
                state.body = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let mut state = self.tape.lock();
        match &state.body {
            Some(body) => {
                // A transport may stop polling once this says so, without the final `None`.
                let end = body.is_end_stream();
                state.ended |= end;
                end
            }
            // A body taken by a replay did not end: the transport must see the error, not
            // send what it read as if it were all.
            None => state.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.tape.lock().body {
            Some(body) => body.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests;
