//! Keep a client's session with an agent alive, as a tower middleware.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bearer;
mod error;
mod file;
mod layer;
mod session;
mod token;

#[cfg(feature = "agent")]
pub mod agent;

pub use error::{CorruptReason, Error, TOKEN_INVALID_MESSAGE, TOKEN_NOT_PROVIDED_MESSAGE};
pub use file::{MAX_FILE_LEN, TOKEN_FILE_NAME, TokenFile};
pub use layer::{ResponseFuture, SessionLayer, SessionService};
pub use session::{DEFAULT_CHECK_INTERVAL, Session, SessionBuilder, SessionStats};
pub use token::{MAX_TOKEN_LEN, MalformedToken, Token};
