//! What an application calls on a [`Session`] around calls it makes itself: the token, its
//! `authorization` value, and taking a refresh back ([`Epoch`], [`Session::refresh`]).

use std::time::SystemTime;

use http::HeaderValue;

use super::{Refresh, Session};
use crate::error::Error;
use crate::response::{self, Carried, Reading};
use crate::token::Token;

/// The session as a call found it when it was sent, for [`Session::refresh`]: a refreshed
/// token that answers a call sent before an explicit change (an unlock, a lock, another
/// process's token picked up) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    epoch: u64,
    had_token: bool,
}

impl Session {
    /// The token calls are made with now, if any.
    #[must_use]
    pub fn token(&self) -> Option<Token> {
        self.shared.current.load().token
    }

    /// When the current token expires, if it is a JWT with an `exp` claim.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.token()?.expires_at()
    }

    /// The `authorization` value for one call made by hand: `Bearer <token>`, marked sensitive.
    ///
    /// # Errors
    ///
    /// [`Error::TokenNotProvided`] when the session has no token.
    pub fn call_credentials(&self) -> Result<HeaderValue, Error> {
        Ok(self.token().ok_or(Error::TokenNotProvided)?.header_value())
    }

    /// Puts the session token on one tonic request by hand, the per-call alternative to
    /// [`SessionLayer`](crate::SessionLayer).
    ///
    /// # Errors
    ///
    /// [`Error::TokenNotProvided`] when the session has no token.
    ///
    /// ```
    /// # fn run(session: tower_agent_session::Session) -> Result<(), tower_agent_session::Error> {
    /// let mut request = tonic::Request::new(());
    /// session.authorize(&mut request)?;
    /// assert!(request.metadata().get("authorization").unwrap().is_sensitive());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<(), Error> {
        // The metadata is the request's headers: the value goes in as it is, marked sensitive.
        let value = self.call_credentials()?;
        (request.metadata_mut().as_mut()).insert(http::header::AUTHORIZATION, value);
        Ok(())
    }

    /// The session as a call sent now finds it: take it before the call, and hand it to
    /// [`Session::refresh`] with the call's response.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        let current = self.shared.current.load();
        Epoch {
            epoch: current.epoch,
            had_token: current.token.is_some(),
        }
    }

    /// Waits until the session is no longer as it was at `since`: a token another process wrote
    /// or removed has been picked up (see [`Watch`](crate::Watch)), or this process unlocked, locked or
    /// recovered. At once if that happened already.
    ///
    /// For a long-lived process that waits for the user to unlock in another terminal:
    ///
    /// ```no_run
    /// # async fn run(session: tower_agent_session::Session) {
    /// let since = session.epoch();
    /// if session.token().is_none() {
    ///     eprintln!("waiting for `client unlock` in another terminal…");
    ///     session.changed_since(since).await;
    /// }
    /// # }
    /// ```
    pub async fn changed_since(&self, since: Epoch) {
        let mut epochs = self.shared.current.epochs();
        // The sender lives as long as the session: waiting cannot fail.
        let _ = epochs.wait_for(|&epoch| epoch != since.epoch).await;
    }

    /// Takes the refreshed token a response brought, as [`SessionLayer`](crate::SessionLayer)
    /// does: for calls made with [`Session::authorize`] or [`Session::call_credentials`] (a
    /// tonic interceptor, say), where no layer sees the response.
    ///
    /// `sent` is [`Session::epoch`] taken before the call; `status` is the response's (for a
    /// tonic reply, which is a success, `StatusCode::OK`). The token is read from `headers`'
    /// `authorization: Bearer <t>` (a malformed one is ignored with a warning) and follows the
    /// layer's rules: dropped if the session changed since `sent` or if the call carried no
    /// session token, ignored on a rejection (an HTTP `401` that carries a token refreshes
    /// nothing), used at once, and written to the file as a
    /// compare-and-swap (never over another process's unlock or lock). The future resolves when
    /// [`AgentTokens`](crate::AgentTokens) says the call may go on.
    ///
    /// ```no_run
    /// # async fn run(session: tower_agent_session::Session, channel: tonic::transport::Channel)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_agent_session::proto::{AgentServiceClient, EmptyMessage};
    ///
    /// let for_calls = session.clone();
    /// let mut client = AgentServiceClient::with_interceptor(channel, move |mut request| {
    ///     for_calls.authorize(&mut request)?;
    ///     Ok(request)
    /// });
    /// let sent = session.epoch();
    /// let reply = client.agent_status(EmptyMessage {}).await?;
    /// let headers = reply.metadata().clone().into_headers();
    /// session.refresh(sent, http::StatusCode::OK, &headers).await;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self, sent: Epoch, status: http::StatusCode, headers: &http::HeaderMap) {
        let carried = if sent.had_token {
            Carried::Session(sent.epoch)
        } else {
            Carried::Nothing
        };
        let authorization = headers.get(http::header::AUTHORIZATION);
        let reading = self.read(carried, status, headers, authorization, None);
        if let Refresh::Saving(saved) = self.take(reading) {
            saved.await;
        }
    }

    /// The session failure a tonic `Status` is, as this session's agent says them (the
    /// [`SessionFailures`](crate::SessionFailures) it was built with): [`Error::TokenNotProvided`] or
    /// [`Error::TokenInvalid`], or `None` for anything else. So a Polykey client need not pass
    /// [`Polykey`](crate::Polykey) again at every call, as [`Error::from_status_with`] takes it.
    ///
    /// ```
    /// # fn run(session: tower_agent_session::Session) {
    /// let status = tonic::Status::unauthenticated("Invalid JWT Token, please reauthenticate.");
    /// assert!(matches!(
    ///     session.failure(&status),
    ///     Some(tower_agent_session::Error::TokenInvalid)
    /// ));
    /// # }
    /// ```
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    #[must_use]
    pub fn failure(&self, status: &tonic::Status) -> Option<Error> {
        Error::from_status_with(status, self.failures())
    }

    /// The session failure a response is (its status and headers), as this session's agent
    /// says them; `None` for anything else.
    #[must_use]
    pub fn failure_of(&self, response: &impl crate::layer::SessionResponse) -> Option<Error> {
        self.failures()
            .session_failure(response.status(), response.headers())
    }

    /// What a response to a call that carried `carried` says to this session, read by
    /// [`response::read`] with the session's failures; a token it brings that is the one in use
    /// is compared, not parsed.
    #[inline]
    pub(crate) fn read(
        &self,
        carried: Carried,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        authorization: Option<&HeaderValue>,
        trailers: Option<&http::HeaderMap>,
    ) -> Reading {
        let in_use = |value: &HeaderValue| self.shared.current.token_if_header(value);
        response::read(
            carried,
            status,
            headers,
            authorization,
            trailers,
            &self.shared.failures,
            in_use,
        )
    }
}
