//! What the owner logs, as values: a step returns them in its effects and the driver emits them
//! once the owner's mutex is let go, so that a subscriber that does I/O never does it under the
//! mutex. This list is the crate docs' table of the session's events, kept in one place.

use crate::error::Error;

/// What kind of failure a store's reads or writes are in the midst of: a warning is given once
/// for an episode of one kind, whether reads or writes met it first.
pub(crate) type Failure = std::mem::Discriminant<Error>;

/// One thing worth logging that a step decided.
#[derive(Debug, Clone)]
pub(crate) enum Note {
    /// `DEBUG` `session started` (`token_found`).
    Started { token_found: bool },
    /// `WARN` `the session file changed but cannot be used`, the first time in a row; `DEBUG`
    /// after.
    Unusable { error: Error, first: bool },
    /// `DEBUG` `the session file is blank for now; keeping the token`.
    Blank,
    /// `INFO` `session file changed by another process` (`token_found`).
    ExternalChange { token_found: bool },
    /// `DEBUG` `refreshed token dropped: the session changed since the call`.
    StaleRefresh,
    /// `DEBUG` `password call's token dropped: the session changed since`.
    StalePasswordToken,
    /// `TRACE` `refresh accepted; the file's token lives as long`.
    RefreshCovered,
    /// `DEBUG` `refresh accepted`.
    RefreshAccepted,
    /// `DEBUG` `refreshed token written`.
    RefreshWritten,
    /// `INFO` `refresh lost to another process; using what the file holds` (`token_found`).
    RefreshLost { token_found: bool },
    /// `INFO` `the session file can be written again`.
    WritableAgain,
    /// `WARN` `refreshed token kept in memory; it is written with a later refresh`.
    LockTimedOut(Error),
    /// `WARN` (first of an episode) or `DEBUG` `cannot write the session file` (`refresh`).
    WriteFailed {
        error: Error,
        refresh: bool,
        first: bool,
    },
    /// `INFO` `another process holds a new token; using it`.
    RecoveredByAnother,
    /// `WARN` `cannot re-read the session file; re-authenticating`.
    RereadFailed,
    /// `INFO` `re-authenticating`.
    Reauthenticating,
    /// `DEBUG` `re-authenticated after the session recovered; token unused`.
    ReauthUnused,
    /// `WARN` `re-authentication failed`.
    ReauthFailed,
    /// `WARN` `cannot take the re-authentication lock; going on without it`.
    LockUnavailable(Error),
}

impl Note {
    /// Whether a subscriber could want it: the notes a refresh makes, at `DEBUG` and `TRACE`,
    /// are not made when no one would see them, so that a refresh taken asks the driver for
    /// nothing. The others are rare, and the log's own filter has the last word on them.
    #[inline]
    pub(crate) fn wanted(&self) -> bool {
        match self {
            Self::RefreshCovered => tracing::level_enabled!(tracing::Level::TRACE),
            Self::StaleRefresh | Self::RefreshAccepted | Self::RefreshWritten => {
                tracing::level_enabled!(tracing::Level::DEBUG)
            }
            _ => true,
        }
    }

    /// Logs it (the driver, outside the owner's mutex).
    pub(crate) fn emit(&self) {
        match self {
            Self::Started { token_found } => tracing::debug!(token_found, "session started"),
            Self::Unusable { error, first } => {
                if *first {
                    tracing::warn!(%error, "the session file changed but cannot be used")
                } else {
                    tracing::debug!(%error, "the session file changed but cannot be used")
                }
            }
            Self::Blank => tracing::debug!("the session file is blank for now; keeping the token"),
            Self::ExternalChange { token_found } => {
                tracing::info!(token_found, "session file changed by another process")
            }
            Self::StaleRefresh => {
                tracing::debug!("refreshed token dropped: the session changed since the call")
            }
            Self::StalePasswordToken => {
                tracing::debug!("password call's token dropped: the session changed since")
            }
            Self::RefreshCovered => {
                tracing::trace!("refresh accepted; the file's token lives as long");
            }
            Self::RefreshAccepted => tracing::debug!("refresh accepted"),
            Self::RefreshWritten => tracing::debug!("refreshed token written"),
            Self::RefreshLost { token_found } => tracing::info!(
                token_found,
                "refresh lost to another process; using what the file holds"
            ),
            Self::WritableAgain => tracing::info!("the session file can be written again"),
            Self::LockTimedOut(e) => tracing::warn!(
                error = %e,
                "refreshed token kept in memory; it is written with a later refresh"
            ),
            Self::WriteFailed {
                error,
                refresh,
                first: false,
            } => tracing::debug!(error = %error, refresh, "cannot write the session file"),
            Self::WriteFailed { error, refresh, .. } => tracing::warn!(
                error = %error,
                refresh,
                "cannot write the session file; the token is in use but other processes will \
                 not see it (warned of once until writes work again)"
            ),
            Self::RecoveredByAnother => {
                tracing::info!("another process holds a new token; using it")
            }
            Self::RereadFailed => {
                tracing::warn!("cannot re-read the session file; re-authenticating")
            }
            Self::Reauthenticating => tracing::info!("re-authenticating"),
            Self::ReauthUnused => {
                tracing::debug!("re-authenticated after the session recovered; token unused");
            }
            Self::ReauthFailed => tracing::warn!("re-authentication failed"),
            Self::LockUnavailable(e) => tracing::warn!(
                error = %e,
                "cannot take the re-authentication lock; going on without it"
            ),
        }
    }
}
