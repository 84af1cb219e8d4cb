//! A store that cannot be written (a read-only mount, a full disk) while calls refresh the
//! token on every response: the session warns once for the episode, logs the rest at `DEBUG`,
//! counts every failed write, and says once when writes work again. (Before, every refresh
//! logged a warning: 400 to 550 a second.)

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::{Request, Response};
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::{
    Error, Session, SessionLayer, Token, store::MemoryStore, store::Stored, store::Swap,
    store::TokenStore,
};
use tower_agent_session::{Watch, store::Version};
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// A memory store whose writes fail while `failing` is set, as on a read-only filesystem.
#[derive(Clone)]
struct Unwritable {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
}

impl Unwritable {
    fn refused(&self) -> Result<(), Error> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::Store(Arc::new(std::io::Error::from(
                std::io::ErrorKind::ReadOnlyFilesystem,
            ))))
        } else {
            Ok(())
        }
    }
}

impl TokenStore for Unwritable {
    fn load(&self) -> Result<Stored, Error> {
        self.inner.load()
    }
    fn store(&self, token: &Token) -> Result<Version, Error> {
        self.refused()?;
        self.inner.store(token)
    }
    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        self.refused()?;
        self.inner.swap(expected, new)
    }
    fn clear(&self) -> Result<(), Error> {
        self.refused()?;
        self.inner.clear()
    }
    fn version(&self) -> Result<Option<Version>, Error> {
        self.inner.version()
    }
}

/// Counts the crate's events by level, and keeps their messages.
#[derive(Default)]
struct Counted {
    warnings: AtomicU64,
    messages: Mutex<Vec<(Level, String)>>,
}

struct Counting(Arc<Counted>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Counting {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("tower_agent_session") {
            return;
        }
        let level = *event.metadata().level();
        if level == Level::WARN {
            self.0.warnings.fetch_add(1, Ordering::SeqCst);
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.messages.lock().unwrap().push((level, message.0));
    }
}

/// A JWT that expires at `exp`: each refresh expires later, so each one is worth writing.
fn jwt(exp: u64) -> Token {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    Token::new(format!(
        "{}.{}.sig",
        b64(r#"{"alg":"HS256"}"#),
        b64(&format!(r#"{{"exp":{exp}}}"#))
    ))
    .unwrap()
}

#[test]
fn an_unwritable_store_warns_once_per_episode_and_counts_every_failed_write() {
    const CALLS: u64 = 200;
    let counted = Arc::new(Counted::default());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(Counting(counted.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Unwritable {
            inner: MemoryStore::new(),
            failing: Arc::new(AtomicBool::new(false)),
        };
        // Watch::Off: a store of one's own is not watched, and would say so in a warning.
        let session = Session::builder(store.clone()).watch(Watch::Off).build();
        session.start_with_token(jwt(2_000_000_000)).await.unwrap();
        store.failing.store(true, Ordering::SeqCst);
        let next = Arc::new(AtomicU64::new(2_000_000_001));
        let agent = tower::service_fn(move |_: Request<()>| {
            let exp = next.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut response = Response::new(());
                response
                    .headers_mut()
                    .insert("authorization", jwt(exp).header_value());
                Ok::<_, Infallible>(response)
            }
        });
        let service = SessionLayer::new(session.clone()).layer(agent);
        for _ in 0..CALLS {
            service.clone().oneshot(Request::new(())).await.unwrap();
            // Each refresh's write is over before the next call: every one is tried.
            assert!(session.flush().await.is_err(), "the write fails");
        }
        let warnings = counted.warnings.load(Ordering::SeqCst);
        assert_eq!(warnings, 1, "one warning for {CALLS} failed writes");
        assert_eq!(session.stats().failed_writes, CALLS);

        store.failing.store(false, Ordering::SeqCst);
        service.clone().oneshot(Request::new(())).await.unwrap();
        session.flush().await.unwrap();
        let messages = counted.messages.lock().unwrap();
        let again: Vec<_> = messages
            .iter()
            .filter(|(level, text)| *level == Level::INFO && text.contains("written again"))
            .collect();
        assert_eq!(again.len(), 1, "one line when writes work again");
        assert_eq!(counted.warnings.load(Ordering::SeqCst), 1);
    });
}
