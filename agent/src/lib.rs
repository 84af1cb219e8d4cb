//! The agent side of [`tower_agent_session`]: mint, check and refresh session tokens, and serve
//! `agent.v1.AgentService`.
//!
//! The client crate, `tower-agent-session`, keeps the client's half of a session; this crate is the
//! other half, kept apart so that a client's build holds neither its crypto nor its server.
//!
//! - [`SessionManager`] mints HS256 JWTs, verifies them, and invalidates all of them at once
//!   with [`lock_all`](SessionManager::lock_all).
//! - [`AuthLayer`] is the tower layer that checks every call's bearer token, rejects with an
//!   RFC 6750 challenge (gRPC `UNAUTHENTICATED` or HTTP 401), and puts a refreshed token on
//!   each successful response.
//! - [`grpc`] holds the server half of the `agent.v1` contract:
//!   [`AgentService`](grpc::AgentService) and [`AgentServiceServer`](grpc::AgentServiceServer).
//!   Its messages and [`AgentServiceClient`](tower_agent_session::proto::AgentServiceClient) are the
//!   client crate's, in [`tower_agent_session::proto`] (feature `client`), the one path of the
//!   contract.
//! - [`Agent`] is the ready implementation, with [`Agent::serve`] to run it behind the layer,
//!   and [`HttpAgent`] the same calls over plain HTTP.
//!
//! ```
//! use tower_agent_session::proto::{AgentServiceClient, EmptyMessage, PasswordMessage};
//! use tower_agent_session_agent::{Agent, SessionManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?;
//! let agent = Agent::new(SessionManager::new()?, "correct horse");
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(agent.serve(listener, async {
//!     let _ = stopped.await;
//! }));
//!
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
//!     .connect()
//!     .await?;
//! let mut client = AgentServiceClient::new(channel);
//! let unlocked = client
//!     .session_unlock(PasswordMessage { password: "correct horse".into() })
//!     .await?;
//! let token = unlocked.into_inner().token;
//!
//! let mut request = tonic::Request::new(EmptyMessage {});
//! request
//!     .metadata_mut()
//!     .insert("authorization", format!("Bearer {token}").parse()?);
//! let status = client.agent_status(request).await?;
//! assert_eq!(status.get_ref().status, "LIVE");
//! assert!(status.metadata().contains_key("authorization"));
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

mod auth;
mod bearer;
mod cache;
mod drain;
mod error;
pub mod grpc;
mod http;
mod jwt;
mod key;
mod manager;
mod rejection;
mod server;

pub use auth::{AuthLayer, AuthService, DEFAULT_REALM, NoRefresh, ResponseFuture};
pub use error::{KeyError, MintError, VerifyError};
pub use http::{HTTP_ECHO_PATH, HTTP_LOCK_ALL_PATH, HTTP_STATUS_PATH, HTTP_UNLOCK_PATH, HttpAgent};
pub use manager::{DEFAULT_LEEWAY, DEFAULT_LIFETIME, KEY_LEN, MAX_LEEWAY, SessionManager};
pub use server::{Agent, LIVE};
