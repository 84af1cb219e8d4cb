//! [`AgentTokens`]: what the agent does with a token when it refreshes it, and so which refreshes
//! are written and whether a call waits for its write.

use crate::token::Token;

/// What the agent does with the token a refresh replaces; it decides the session's writes.
///
/// | the agent's tokens                     | a refresh is written when…                                   | the call waits for the write |
/// |----------------------------------------|--------------------------------------------------------------|------------------------------|
/// | [`LiveUntilExpiry`](Self::LiveUntilExpiry) (default) | its JWT `exp` is later than the stored token's (an opaque token: whenever it is new) | no: written behind, [`Session::flush`](crate::Session::flush) waits |
/// | [`RevokedOnRefresh`](Self::RevokedOnRefresh) | it is new and not older (by `exp`) than the stored token | yes, until it is durable (at most [`SessionBuilder::call_wait`](crate::SessionBuilder::call_wait)) |
///
/// Either way a refresh never overwrites another process's token (the write is a
/// compare-and-swap), explicit changes (unlock, lock) are written at once, and a crash leaves
/// the previous file whole.
///
/// With tokens that live until they expire, the token in the file still works after a refresh,
/// so a process that dies before the write loses nothing the next process needs. With tokens
/// that a refresh revokes, the file must hold the new token before anyone can act on the
/// response, or the next process starts from a revoked token.
///
/// ```
/// use std::convert::Infallible;
/// use tower_agent_session::{AgentTokens, store::MemoryStore, Session, SessionLayer, Token};
/// use http::{Request, Response};
/// use tower::{Layer as _, ServiceExt as _};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // An agent whose refresh revokes the token it replaces.
/// let agent = tower::service_fn(|_: Request<()>| async {
///     let mut response = Response::new(());
///     response.headers_mut().insert("authorization", "Bearer t2".parse().unwrap());
///     Ok::<_, Infallible>(response)
/// });
/// let store = MemoryStore::new();
/// let session = Session::builder(store.clone())
///     .agent_tokens(AgentTokens::RevokedOnRefresh)
///     .build();
/// session.start_with_token(Token::new("t1")?).await?;
///
/// SessionLayer::new(session.clone()).layer(agent).oneshot(Request::new(())).await?;
/// // The call returned once t2 was stored: a process starting now finds it, not the dead t1.
/// assert_eq!(store.token(), Some(Token::new("t2")?));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentTokens {
    /// A token stays valid until its `exp`, refreshed or not (Polykey's agent, and this crate's).
    #[default]
    LiveUntilExpiry,
    /// Each refresh revokes the token it replaces.
    RevokedOnRefresh,
}

impl AgentTokens {
    /// Whether writing `new` would buy nothing over `held`, the token in the store or on its
    /// way there.
    pub(super) fn covers(self, held: Option<&Token>, new: &Token) -> bool {
        let (Some(held), Some(new)) = (held.and_then(Token::exp_secs), new.exp_secs()) else {
            // Opaque tokens: the newest one is all we know.
            return false;
        };
        match self {
            // The held token lives as long: the file's token goes on working.
            Self::LiveUntilExpiry => held >= new,
            // Only a token that is newer than this one (a response that arrived out of order)
            // makes its write pointless: the agent revoked this one when it made that one.
            Self::RevokedOnRefresh => held > new,
        }
    }

    /// Whether a call waits until the token its response brought is durable.
    pub(super) fn call_waits(self) -> bool {
        matches!(self, Self::RevokedOnRefresh)
    }
}

/// Whether `held` is a JWT that expires strictly after the JWT `new`: then `new` is the older
/// of the two, and the session goes on using `held`. (What makes a write pointless when a
/// refresh revokes the token it replaces.)
pub(super) fn outlives(held: Option<&Token>, new: &Token) -> bool {
    AgentTokens::RevokedOnRefresh.covers(held, new)
}
