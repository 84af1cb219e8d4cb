use super::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

use http_body_util::{BodyExt, Full};

/// A body that yields the given frames, one per poll, then ends; or, `stalled`, waits for
/// ever instead of ending, as a client stream whose next message is not there yet.
struct Frames {
    frames: VecDeque<Result<Frame<Bytes>, &'static str>>,
    stalled: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        match self.frames.pop_front() {
            None if self.stalled => Poll::Pending,
            frame => Poll::Ready(frame),
        }
    }
}

fn frames(items: Vec<Frame<Bytes>>) -> Frames {
    Frames {
        frames: items.into_iter().map(Ok).collect(),
        stalled: false,
    }
}

fn data(bytes: &'static [u8]) -> Frame<Bytes> {
    Frame::data(Bytes::from_static(bytes))
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-trace", "x".parse().unwrap());
    trailers
}

async fn drain<B: Body<Data = Bytes>>(body: B) -> (Vec<u8>, Option<HeaderMap>)
where
    B::Error: std::fmt::Debug,
{
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes().to_vec(), trailers)
}

async fn record<B>(body: B, limit: usize) -> Option<Replay>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (recording, tape) = Recording::new(body, limit);
    let sent = drain(recording).await;
    let replay = tape.replay()?;
    let replayed = drain(replay).await;
    assert_eq!(replayed, sent, "a replay sends what was sent");
    tape.replay()
}

/// Starts sending `body` with `limit`: the transport reads `read` frames of it.
async fn read_some<B>(body: B, limit: usize, read: usize) -> (Arc<Tape>, Recording)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut recording, tape) = Recording::new(body, limit);
    for _ in 0..read {
        recording.frame().await.unwrap().unwrap();
    }
    (tape, recording)
}

#[tokio::test]
async fn split_frames_and_trailers_replay() {
    let body = frames(vec![data(b"hel"), data(b"lo"), Frame::trailers(trailers())]);
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
    let (mut recording, tape) = Recording::new(body, 64);
    // Nothing is kept even while streaming.
    let _ = recording.frame().await;
    assert!(tape.lock().recorded.is_none());
    assert!(tape.replay().is_none());
}

#[tokio::test]
async fn the_part_not_read_is_replayed_after_the_recording() {
    let whole = || {
        frames(vec![
            data(b"a"),
            data(b"b"),
            data(b"c"),
            Frame::trailers(trailers()),
        ])
    };
    let expected = drain(whole()).await;
    // Refused before the transport read anything, after part of it, or after all of it
    // but the end.
    for read in 0..=4 {
        let (tape, _recording) = read_some(whole(), 64, read).await;
        let replay = tape.replay().expect("within the limit, whatever was read");
        assert_eq!(drain(replay).await, expected, "read {read} frames first");
    }
}

#[tokio::test]
async fn only_the_recorded_part_counts_against_the_limit() {
    let body = frames(vec![data(b"ab"), data(b"cdefgh")]);
    let (tape, _recording) = read_some(body, 2, 1).await;
    let replay = tape
        .replay()
        .expect("two bytes recorded, the rest not buffered");
    assert_eq!(replay.size_hint().lower(), 2);
    assert_eq!(drain(replay).await.0, b"abcdefgh");
}

#[tokio::test]
async fn a_recording_over_the_limit_or_failed_is_not_replayed_even_with_a_rest() {
    let body = frames(vec![data(b"abc"), data(b"d"), data(b"e")]);
    let (tape, _recording) = read_some(body, 2, 1).await;
    assert!(tape.replay().is_none());

    let failing = Frames {
        frames: vec![Ok(data(b"a")), Err("reset"), Ok(data(b"b"))].into(),
        stalled: false,
    };
    let (tape, mut recording) = read_some(failing, 64, 1).await;
    assert!(recording.frame().await.unwrap().is_err());
    assert!(tape.replay().is_none());
}

/// Counts its wakes.
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_recording_ends_once_its_body_is_taken() {
    let body = Frames {
        frames: vec![Ok(data(b"a"))].into(),
        stalled: true,
    };
    let (mut recording, tape) = Recording::new(body, 64);
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let mut poll = || Pin::new(&mut recording).poll_frame(&mut cx);
    assert!(matches!(poll(), Poll::Ready(Some(Ok(_)))));
    assert!(poll().is_pending(), "the body has nothing more yet");

    let replay = tape.replay().expect("one frame recorded, the rest taken");
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "the transport's task is woken"
    );
    assert!(
        matches!(poll(), Poll::Ready(Some(Err(_)))),
        "the first sending ends, as an error rather than as a shorter body"
    );
    assert!(!recording.is_end_stream());
    assert!(tape.replay().is_none(), "the rest is taken once");
    assert!(!replay.is_end_stream());
}

#[tokio::test]
async fn a_body_read_to_its_end_replays_again_and_again() {
    let body = frames(vec![data(b"a")]);
    let (tape, mut recording) = read_some(body, 64, 1).await;
    assert!(recording.frame().await.is_none());
    assert_eq!(drain(tape.replay().unwrap()).await.0, b"a");
    assert_eq!(drain(tape.replay().unwrap()).await.0, b"a");
}
