//! [`SessionMiddleware`]: the session on a `reqwest-middleware` client, for users who compose
//! their reqwest client with `reqwest_middleware::ClientBuilder` rather than tower.
//!
//! It is the session layer, not a second implementation of it: each call goes through a
//! [`SessionService`](crate::layer::SessionService) (or, with re-authentication on, the same recovery
//! flow as [`ReauthService`](crate::layer::ReauthService)) over the rest of the middleware chain, so
//! the token is attached, refreshed and hidden exactly as the layer does.
//!
//! # Example
//!
//! ```no_run
//! use tower_agent_session::{Session, SessionMiddleware, Token, TokenFile};
//! use reqwest_middleware::ClientBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(TokenFile::in_dir("/home/me/.agent"));
//! session.start().await?;
//! let unlock = || async {
//!     let password = std::env::var("AGENT_PASSWORD")?;
//!     let reply = reqwest::Client::new()
//!         .post("http://127.0.0.1:50052/v1/session/unlock")
//!         .body(password)
//!         .send()
//!         .await?
//!         .error_for_status()?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Token::new(reply.text().await?)?)
//! };
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(SessionMiddleware::new(session).reauthenticate_with(unlock))
//!     .build();
//! let status = client.get("http://127.0.0.1:50052/v1/status").send().await?;
//! println!("{}", status.text().await?);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tower_layer::Layer;
use tower_service::Service;

use crate::layer::{SessionLayer, call_with_reauth};
use crate::reauth::{NoReauth, Reauth, Reauthenticate};
use crate::session::Session;

/// A `reqwest_middleware::Middleware` that keeps a [`Session`]: add it with
/// `ClientBuilder::new(client).with(SessionMiddleware::new(session))`.
///
/// Each request without an `authorization` header of its own gets the session's token, marked
/// sensitive; the refreshed token each response brings is kept (and written to the session
/// file) and the response's `authorization` is marked sensitive too, as
/// [`SessionService`](crate::layer::SessionService) does. Rejections pass through: read them with
/// [`Error::from_response`](crate::Error::from_response), or turn re-authentication on with
/// [`SessionMiddleware::reauthenticate_with`].
///
/// Middleware added after it (`.with(…)` later) sees the request with the token on it.
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub struct SessionMiddleware<R = NoReauth> {
    /// The layer whose services each call goes through.
    layer: SessionLayer<R>,
}

impl SessionMiddleware {
    /// A middleware keeping `session`.
    pub fn new(session: Session) -> Self {
        Self {
            layer: SessionLayer::new(session),
        }
    }

    /// Turns re-authentication on, as
    /// [`SessionLayer::reauthenticate_with`](crate::SessionLayer::reauthenticate_with) does:
    /// on a session failure (read from the response's status and headers with the session's
    /// [`SessionFailures`](crate::SessionFailures)) the session file is re-read or
    /// `reauthenticator` runs, once for all the calls failing together, and the request is sent
    /// again once, copied with `reqwest::Request::try_clone`.
    ///
    /// A request whose body streams cannot be copied: it is sent once and its failure handed
    /// over (the session is recovered all the same, for the next calls). A call that fails
    /// again after its replay hands that failure over. A failed re-authentication is a
    /// `reqwest_middleware::Error::Middleware` holding the crate's
    /// [`Error::Reauthentication`](crate::Error::Reauthentication).
    pub fn reauthenticate_with<F: Reauthenticate>(
        self,
        reauthenticator: F,
    ) -> SessionMiddleware<Reauth> {
        SessionMiddleware {
            layer: self.layer.reauthenticate_with(reauthenticator),
        }
    }
}

impl SessionMiddleware<Reauth> {
    /// Renews the token before sending a call when its JWT `exp` falls within `margin`, as
    /// [`SessionLayer::renew_before_expiry`](crate::SessionLayer::renew_before_expiry) does.
    pub fn renew_before_expiry(self, margin: Duration) -> Self {
        Self {
            layer: self.layer.renew_before_expiry(margin),
        }
    }
}

impl<R> SessionMiddleware<R> {
    /// The session.
    pub fn session(&self) -> &Session {
        &self.layer.session
    }
}

#[async_trait::async_trait]
impl Middleware for SessionMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let lent = Mutex::new(std::mem::take(extensions));
        let downstream = Downstream { next, lent: &lent };
        // No `poll_ready`: `Downstream` is always ready, and the session service asks nothing
        // more.
        let result = self.layer.layer(downstream).call(request).await;
        *extensions = lent.into_inner().unwrap_or_else(PoisonError::into_inner);
        result
    }
}

#[async_trait::async_trait]
impl Middleware for SessionMiddleware<Reauth> {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let lent = Mutex::new(std::mem::take(extensions));
        let service = self.layer.layer(Downstream { next, lent: &lent });
        // reqwest's errors and the later middleware's as they came; a failed recovery as the
        // middleware's own.
        let failed = |error, _: &Session| reqwest_middleware::Error::middleware(error);
        let result = call_with_reauth(service, request, failed).await;
        *extensions = lent.into_inner().unwrap_or_else(PoisonError::into_inner);
        result
    }
}

/// The rest of the middleware chain as a tower `Service`, so that the session layer's one path
/// drives it: once, or twice with a replay.
struct Downstream<'a> {
    next: Next<'a>,
    /// The call's extensions, lent to each sending in turn. `Next::run` borrows them for as long
    /// as its future lives, so each sending takes them out and puts them back when it is over;
    /// the sendings of one call never overlap. A sending cut short (its call dropped) does not
    /// put them back, but nothing reads them after that.
    lent: &'a Mutex<Extensions>,
}

impl<'a> Service<reqwest::Request> for Downstream<'a> {
    type Response = reqwest::Response;
    type Error = reqwest_middleware::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'a>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `Next::run` is always ready: the client behind it is.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        let (next, lent) = (self.next.clone(), self.lent);
        Box::pin(async move {
            let mut extensions = std::mem::take(&mut *lock(lent));
            let result = next.run(request, &mut extensions).await;
            *lock(lent) = extensions;
            result
        })
    }
}

/// The extensions, whatever a panic elsewhere left them as: they are plain data.
fn lock(extensions: &Mutex<Extensions>) -> MutexGuard<'_, Extensions> {
    extensions.lock().unwrap_or_else(PoisonError::into_inner)
}
