//! What a response says to the session: [`read`], the one reading of a call's answer that
//! the layer's future, [`Session::refresh`](crate::Session::refresh) and re-authentication all
//! act on. A refresh, a session started by a password call, a session failure, or nothing.
//!
//! The rules, RFC 6750's and this crate's, in the order they are applied:
//!
//! 1. A call that carried credentials of its own: nothing, whatever came back. Its token is
//!    not the session's, its failure is its credentials'.
//! 2. A session failure, as the session's [`SessionFailures`](crate::SessionFailures) read it,
//!    in the headers and then in the trailers: that failure, over any token beside it. A
//!    password call's failure is the password's, not the session's: nothing.
//! 3. Any other rejection (HTTP `401`, gRPC `UNAUTHENTICATED`), in the headers or the
//!    trailers: nothing. A token on it is not the agent's word that the session goes on.
//! 4. No `authorization`, or a call that carried no token: nothing.
//! 5. Every `authorization` value must be `Bearer <token>` with a well-formed token, and all
//!    of them the same token (any spelling of the scheme): a refresh, or the session started
//!    for a password call. Anything else is never a token: nothing, with a warning.
//!
//! A response without `authorization` is at most a failure (rule 4): a caller that takes only
//! tokens need not read it, so that a call without a refresh costs a lookup of the header.

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::{Error, is_rejection};
use crate::failures::Failures;
use crate::token::Token;

/// What a request carried, which decides what its response means to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// The session's token, in this epoch: a token on the response is a refresh.
    Session(u64),
    /// A password (`Basic`), with [`SessionBuilder::start_on_password`](crate::SessionBuilder)
    /// on, in this epoch: a token on the response starts the session, unless the session
    /// changed since.
    Password(u64),
    /// Nothing: the session had no token. A failure is the session's; a token on the response
    /// is not.
    Nothing,
    /// Credentials of the request's own: nothing on the response is the session's.
    Own,
}

/// What a response says to the session, as [`read`] reads it.
#[derive(Debug)]
pub(crate) enum Reading {
    /// Nothing for the session.
    Nothing,
    /// A refreshed token, for a call sent with the session's token in `epoch`.
    Refresh {
        /// The token.
        token: Token,
        /// The epoch the call was sent in.
        epoch: u64,
    },
    /// A token that starts the session, for a password call sent in `epoch`.
    Started {
        /// The token.
        token: Token,
        /// The epoch the call was sent in.
        epoch: u64,
    },
    /// The call failed for its session ([`Error::TokenNotProvided`] or
    /// [`Error::TokenInvalid`], as the agent says them).
    Failure(Error),
}

/// Reads a response to a call that `carried` what it did, by the rules of the
/// [module](self): its `status` and `headers`, and the `trailers` of a gRPC response when they
/// were looked at (`None` otherwise), with the session's `failures`. `authorization` is the
/// first `authorization` value of `headers`, as the caller found it (marking it sensitive).
///
/// `in_use` is asked whether an `authorization` value is the `Bearer <token>` value of the
/// token the session holds (an agent that refreshes once a second sends it back to every call
/// of that second): if so, that token is the value's, compared rather than parsed. What it
/// answers never changes the reading, only its cost.
///
/// Nothing is changed and nothing kept: a token ignored is warned of (without it), and the
/// caller acts on the rest.
#[inline]
pub(crate) fn read(
    carried: Carried,
    status: StatusCode,
    headers: &HeaderMap,
    authorization: Option<&HeaderValue>,
    trailers: Option<&HeaderMap>,
    failures: &Failures,
    in_use: impl FnOnce(&HeaderValue) -> Option<Token>,
) -> Reading {
    let epoch = match carried {
        Carried::Own => return Reading::Nothing,
        Carried::Session(epoch) | Carried::Password(epoch) => Some(epoch),
        Carried::Nothing => None,
    };
    // Most responses refuse nothing and have no trailers to read: a test tells them, and what
    // the others say is read out of line.
    if (trailers.is_some() || failures.refuse(status, headers))
        && let Some(refused) = refusal(carried, status, headers, authorization, trailers, failures)
    {
        return refused;
    }
    let (Some(epoch), Some(authorization)) = (epoch, authorization) else {
        return Reading::Nothing;
    };
    let Some(token) = bearer_token(headers, authorization, in_use) else {
        return Reading::Nothing;
    };
    match carried {
        Carried::Password(_) => Reading::Started { token, epoch },
        _ => Reading::Refresh { token, epoch },
    }
}

/// What a response reads as by rules 2 and 3, its headers and its trailers (if looked at):
/// `None` when neither refuses anything.
#[cold]
#[inline(never)]
fn refusal(
    carried: Carried,
    status: StatusCode,
    headers: &HeaderMap,
    authorization: Option<&HeaderValue>,
    trailers: Option<&HeaderMap>,
    failures: &Failures,
) -> Option<Reading> {
    // A failure in the headers, else in the trailers; else a rejection in either (a proxy's
    // `Basic` challenge, `insufficient_scope`), which a new token would not cure.
    let read = failures.read();
    let failure = (read.session_failure(status, headers))
        .or_else(|| read.session_failure(StatusCode::OK, trailers?));
    let rejected = is_rejection(status, headers)
        || trailers.is_some_and(|trailers| is_rejection(StatusCode::OK, trailers));
    match (failure, carried) {
        (Some(failure), Carried::Session(_) | Carried::Nothing) => Some(Reading::Failure(failure)),
        (None, _) if !rejected => None,
        _ => {
            if carried != Carried::Nothing && authorization.is_some() {
                tracing::warn!("ignoring a token on a rejected call");
            }
            Some(Reading::Nothing)
        }
    }
}

/// The token of `headers`' `authorization` values, `first` the first of them, if they hold
/// one they all agree on.
#[inline]
fn bearer_token(
    headers: &HeaderMap,
    first: &HeaderValue,
    in_use: impl FnOnce(&HeaderValue) -> Option<Token>,
) -> Option<Token> {
    // No name repeated in the map (two counts tell): `first` is the only value, and no second
    // lookup is made.
    if headers.len() == headers.keys_len() {
        return in_use(first).or_else(|| crate::bearer::token_from_agent([first]));
    }
    let values = headers.get_all(header::AUTHORIZATION);
    // The token in use, compared rather than parsed, only when no other value could disagree.
    if values.iter().all(|value| value == first)
        && let Some(token) = in_use(first)
    {
        return Some(token);
    }
    crate::bearer::token_from_agent(values)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
