//! What the reqwest stacks' tests share: the crate's HTTP agent on loopback, counting what
//! reaches it; the two ways to put re-authentication on reqwest; a middleware that looks at what
//! the session middleware sends on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Extensions;
use http::header::AUTHORIZATION;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokio::net::TcpListener;
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt as _};
use tower_agent_session::{
    BoxError, Reauthenticate, Session, SessionLayer, SessionMiddleware, Token, layer::ReauthService,
};
use tower_agent_session_agent::{
    Agent, HTTP_ECHO_PATH, HTTP_STATUS_PATH, HTTP_UNLOCK_PATH, SessionManager,
};

use crate::common::{PASSWORD, quiet_session};

/// The crate's agent serving HTTP on loopback, counting the requests that reach it by path
/// (before its token checks); dropping it stops the server.
pub struct HttpAgent {
    base: String,
    pub manager: SessionManager,
    received: Arc<Mutex<HashMap<String, usize>>>,
    server: tokio::task::AbortHandle,
}

impl Drop for HttpAgent {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HttpAgent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let manager = SessionManager::new().unwrap();
        let http = Agent::new(manager.clone(), PASSWORD).http_service();
        let received = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let counted = received.clone();
        let service = ServiceBuilder::new()
            .map_request(move |request: http::Request<hyper::body::Incoming>| {
                let path = request.uri().path().to_owned();
                *counted.lock().unwrap().entry(path).or_default() += 1;
                request
            })
            .layer(http.auth_layer())
            .service(http);
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = hyper_util::service::TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = builder.serve_connection(io, service).await;
                });
            }
        });
        Self {
            base,
            manager,
            received,
            server: server.abort_handle(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How many requests for `path` reached the agent.
    pub fn received(&self, path: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn status(&self) -> reqwest::Request {
        reqwest::Client::new()
            .get(self.url(HTTP_STATUS_PATH))
            .build()
            .unwrap()
    }

    pub fn echo(&self, body: impl Into<reqwest::Body>) -> reqwest::Request {
        reqwest::Client::new()
            .post(self.url(HTTP_ECHO_PATH))
            .body(body)
            .build()
            .unwrap()
    }

    /// A session in `dir` holding a token the agent no longer accepts.
    pub async fn stale_session(&self, dir: &std::path::Path) -> Session {
        let session = quiet_session(dir);
        session
            .start_with_token(self.manager.mint().unwrap())
            .await
            .unwrap();
        self.manager.lock_all().unwrap();
        session
    }

    /// A re-authenticator that unlocks over plain reqwest (no session) and counts its runs.
    pub fn unlock(&self, runs: &Arc<AtomicUsize>) -> impl Reauthenticate + use<> {
        let (runs, url) = (runs.clone(), self.url(HTTP_UNLOCK_PATH));
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            let reply = reqwest::Client::new()
                .post(url.clone())
                .body(PASSWORD)
                .send();
            async move {
                let reply = reply.await?.error_for_status()?;
                Ok::<_, BoxError>(Token::new(reply.text().await?)?)
            }
        }
    }
}

/// The two ways to put re-authentication on reqwest.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Middleware,
    Tower,
}

pub const KINDS: [Kind; 2] = [Kind::Middleware, Kind::Tower];

pub enum Stack {
    Middleware(ClientWithMiddleware),
    Tower(ReauthService<reqwest::Client>),
}

impl Stack {
    pub fn new(kind: Kind, session: &Session, reauthenticator: impl Reauthenticate) -> Self {
        match kind {
            Kind::Middleware => Stack::Middleware(
                ClientBuilder::new(reqwest::Client::new())
                    .with(
                        SessionMiddleware::new(session.clone())
                            .reauthenticate_with(reauthenticator),
                    )
                    .build(),
            ),
            Kind::Tower => Stack::Tower(
                SessionLayer::new(session.clone())
                    .reauthenticate_with(reauthenticator)
                    .layer(reqwest::Client::new()),
            ),
        }
    }

    pub async fn send(&mut self, request: reqwest::Request) -> Result<reqwest::Response, BoxError> {
        match self {
            Stack::Middleware(client) => Ok(client.execute(request).await?),
            Stack::Tower(service) => service.ready().await?.call(request).await,
        }
    }
}

/// What a middleware after the session's saw of each request it sent on: whether its
/// `authorization` was marked sensitive (`None` without one), and whether it carried the
/// caller's [`Mark`]. It also leaves an [`Answered`] in the call's extensions.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<Sending>>>);

/// Whether a sending's `authorization` was sensitive (`None` without one), and whether it had
/// the caller's [`Mark`].
pub type Sending = (Option<bool>, bool);

/// What a caller puts in a call's extensions.
#[derive(Clone)]
pub struct Mark(pub &'static str);

/// What a middleware after the session's leaves in them: the sendings it saw answered.
#[derive(Clone)]
pub struct Answered(pub usize);

#[async_trait::async_trait]
impl Middleware for Seen {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let sensitive = request
            .headers()
            .get(AUTHORIZATION)
            .map(http::HeaderValue::is_sensitive);
        let marked = extensions.get::<Mark>().is_some_and(|m| m.0 == "caller");
        self.0.lock().unwrap().push((sensitive, marked));
        let response = next.run(request, extensions).await;
        let answered = extensions.get::<Answered>().map_or(0, |a| a.0);
        extensions.insert(Answered(answered + 1));
        response
    }
}

impl Seen {
    pub fn sendings(&self) -> Vec<Sending> {
        self.0.lock().unwrap().clone()
    }
}
