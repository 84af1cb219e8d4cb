//! Keep a client's session with an agent alive, as a tower middleware.
//!
//! An agent hands out a session token when the user unlocks it with a password, refreshes it on
//! every call, and rejects calls per RFC 6750 when it is missing or no longer valid. This crate
//! is the client's half:
//!
//! - [`Session`] holds the current token, in memory (read without a lock on every call) and in a
//!   session file ([`TokenFile`]) shared by every process of the user, written atomically.
//! - [`SessionLayer`] wraps any tower service over `http` types (a tonic `Channel`, a hyper-util
//!   client): it puts `authorization: Bearer <token>` on each request, marked sensitive, and keeps
//!   the refreshed token each response brings.
//! - [`Error`] types the two session failures, [`Error::TokenNotProvided`] (exit code 77) and
//!   [`Error::TokenInvalid`] (exit code 65), and the file errors; `Error::from_status` and
//!   [`Error::from_response`] read them off a rejection.
//! - With the `agent` feature, [`agent`] is the other half: minting, checking and revoking
//!   tokens, and the `agent.v1` gRPC service.
//!
//! ```no_run
//! use agent_session::{Session, SessionLayer, Token};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::in_dir("/home/me/.agent"); // the file /home/me/.agent/token
//! session.start().await?; // the token on disk, if any
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let service = ServiceBuilder::new()
//!     .layer(SessionLayer::new(session.clone()))
//!     .service(channel);
//! // … give `service` to a tonic client; after an unlock with the password:
//! session.start_with_token(Token::new("eyJhbGciOi.e30.c2ln")?).await?;
//! # let _ = service; Ok(()) }
//! ```
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

mod bearer;
mod builder;
mod error;
mod failures;
mod file;
mod layer;
mod message;
mod peek;
mod reauth;
mod replay;
mod saved;
mod session;
mod store;
mod token;

#[cfg(feature = "agent")]
#[cfg_attr(docsrs, doc(cfg(feature = "agent")))]
pub mod agent;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod proto;

pub use builder::ServiceBuilderExt;
pub use error::{CorruptReason, Error, TOKEN_INVALID_MESSAGE, TOKEN_NOT_PROVIDED_MESSAGE};
pub use failures::{DEFAULT_TRAILERS_WAIT, Polykey, Rfc6750, SessionFailures};
pub use file::{
    DEFAULT_LOCK_WAIT, DEFAULT_REFRESH_LOCK_WAIT, FileStamp, MAX_FILE_LEN, TOKEN_FILE_NAME,
    TokenFile,
};
pub use layer::{ResponseFuture, SessionLayer, SessionService};
pub use message::{SessionRequest, SessionResponse};
pub use peek::PeekedBody;
pub use reauth::{NoReauth, Reauth, ReauthFuture, Reauthenticate};
pub use replay::{BoxError, DEFAULT_REPLAY_LIMIT, WrapBody};
pub use session::{DEFAULT_CHECK_INTERVAL, Epoch, Session, SessionBuilder, SessionStats};
pub use store::{MemoryStore, Stored, Swap, TokenStore};
pub use token::{MAX_TOKEN_LEN, MalformedToken, Token};
