//! [`Agent`]: the ready implementation of `agent.v1.AgentService`, and the way to serve it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};

use super::auth::{AuthLayer, NoRefresh};
use super::error::KeyError;
use super::manager::SessionManager;
use crate::grpc::{AgentService, AgentServiceServer};
use tower_agent_session::proto::{
    EchoMessage, EmptyMessage, PasswordMessage, SESSION_UNLOCK_PATH, SessionTokenMessage,
    StatusMessage,
};

/// What `AgentStatus` answers.
pub const LIVE: &str = "LIVE";

/// The agent: unlocks sessions with its password and answers the `agent.v1` calls.
///
/// - `SessionUnlock` with the right password mints a token and returns it both in the body and
///   in the response metadata (`authorization: Bearer <token>`); a wrong password is
///   `PERMISSION_DENIED` "Incorrect password" and mints nothing.
/// - `SessionsLockAll` calls [`SessionManager::lock_all`] and answers with no refreshed token.
/// - `AgentStatus` answers [`LIVE`]; `Echo` sends the challenge back.
///
/// The token checks are not here but in [`AuthLayer`]: serve it with [`Agent::serve`], or put
/// [`Agent::auth_layer`] in front of [`Agent::into_server`] yourself.
#[derive(Clone)]
pub struct Agent {
    manager: SessionManager,
    password: Arc<str>,
}

impl Agent {
    /// An agent minting tokens with `manager` for whoever knows `password`.
    pub fn new(manager: SessionManager, password: impl Into<String>) -> Self {
        Self {
            manager,
            password: Arc::from(password.into()),
        }
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// The [`AuthLayer`] this agent needs: tokens checked with its manager, `SessionUnlock` let
    /// through without one.
    pub fn auth_layer(&self) -> AuthLayer {
        AuthLayer::new(self.manager.clone()).allow_path(SESSION_UNLOCK_PATH)
    }

    /// The agent as a gRPC service, without the token checks.
    pub fn into_server(self) -> AgentServiceServer<Self> {
        AgentServiceServer::new(self)
    }

    /// Serves the agent, behind its [`auth_layer`](Self::auth_layer), on `listener` until
    /// `shutdown` completes.
    ///
    /// Binding the listener first (say to `127.0.0.1:0`) lets the caller learn the address
    /// before serving.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let layer = self.auth_layer();
        tonic::transport::Server::builder()
            .layer(layer)
            .serve_with_incoming_shutdown(
                self.into_server(),
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await
    }
}

impl Agent {
    /// Mints a token for whoever gives the right password; `PERMISSION_DENIED` "Incorrect
    /// password" otherwise, minting nothing. Shared by the gRPC and HTTP calls.
    pub(crate) fn unlock(&self, given: &[u8]) -> Result<tower_agent_session::Token, Status> {
        if !same_password(given, self.password.as_bytes()) {
            return Err(Status::permission_denied("Incorrect password"));
        }
        self.manager.mint().map_err(|error| {
            tracing::error!(%error, "cannot mint a session token");
            Status::internal("cannot mint a session token")
        })
    }

    /// Invalidates every session, off the async workers (it may write the key file).
    pub(crate) async fn lock_all(&self) -> Result<(), Status> {
        let manager = self.manager.clone();
        let locked = tokio::task::spawn_blocking(move || manager.lock_all())
            .await
            .map_err(|_| Status::internal("cannot lock the sessions"))?;
        match locked {
            Ok(()) => Ok(()),
            Err(error @ KeyError::Write { .. }) => {
                tracing::error!(%error, "sessions locked, but the new key was not saved");
                Err(Status::internal(
                    "the sessions are locked, but the new key could not be saved",
                ))
            }
            Err(error) => {
                tracing::error!(%error, "cannot lock the sessions");
                Err(Status::internal("cannot lock the sessions"))
            }
        }
    }
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("manager", &self.manager)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[tonic::async_trait]
impl AgentService for Agent {
    async fn session_unlock(
        &self,
        request: Request<PasswordMessage>,
    ) -> Result<Response<SessionTokenMessage>, Status> {
        let token = self.unlock(request.into_inner().password.as_bytes())?;
        let mut header = MetadataValue::<Ascii>::try_from(token.header_value().as_bytes())
            .map_err(|_| Status::internal("cannot mint a session token"))?;
        header.set_sensitive(true);
        let mut response = Response::new(SessionTokenMessage {
            token: token.expose().to_owned(),
        });
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn sessions_lock_all(
        &self,
        _request: Request<EmptyMessage>,
    ) -> Result<Response<EmptyMessage>, Status> {
        self.lock_all().await?;
        let mut response = Response::new(EmptyMessage {});
        response.extensions_mut().insert(NoRefresh);
        Ok(response)
    }

    async fn agent_status(
        &self,
        _request: Request<EmptyMessage>,
    ) -> Result<Response<StatusMessage>, Status> {
        Ok(Response::new(StatusMessage {
            status: LIVE.to_owned(),
        }))
    }

    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// Compares without stopping at the first difference, so that the time taken does not say how
/// much of a guess was right.
fn same_password(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (i, &b) in given.iter().enumerate() {
        let e = expected.get(i).copied().unwrap_or(0);
        difference |= usize::from(b ^ e);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comparison() {
        assert!(same_password(b"secret", b"secret"));
        assert!(same_password(b"", b""));
        assert!(!same_password(b"secret", b"secreT"));
        assert!(!same_password(b"secret", b"secret!"));
        assert!(!same_password(b"secret!", b"secret"));
        assert!(!same_password(b"", b"x"));
        assert!(!same_password(b"\0", b""));
    }

    #[tokio::test]
    async fn lock_all_answers_without_a_refresh_and_rotates() {
        let manager = SessionManager::new().unwrap();
        let agent = Agent::new(manager.clone(), "pw");
        let before = manager.mint().unwrap();
        let response = agent
            .sessions_lock_all(Request::new(EmptyMessage {}))
            .await
            .unwrap();
        assert!(response.extensions().get::<NoRefresh>().is_some());
        assert!(manager.verify(&before).is_err());
    }

    #[tokio::test]
    async fn unlock_puts_the_token_in_body_and_metadata() {
        let agent = Agent::new(SessionManager::new().unwrap(), "pw");
        let wrong = PasswordMessage {
            password: "PW".into(),
        };
        let status = agent.session_unlock(Request::new(wrong)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);

        let right = PasswordMessage {
            password: "pw".into(),
        };
        let response = agent.session_unlock(Request::new(right)).await.unwrap();
        let header = response.metadata().get("authorization").unwrap();
        assert_eq!(
            header.as_bytes(),
            format!("Bearer {}", response.get_ref().token).as_bytes()
        );
        assert!(header.is_sensitive());
    }

    #[test]
    fn debug_hides_the_password() {
        let agent = Agent::new(SessionManager::new().unwrap(), "hunter2");
        assert!(!format!("{agent:?}").contains("hunter2"));
    }
}
