//! What calls hand the session on their way back: a refreshed token, a password call's token,
//! a session failure to recover from, a re-authenticator's result. Each is one event for the
//! owner.

use std::time::SystemTime;

use super::owner::{Answer, Event, WaiterId};
use super::{Refresh, Reply, Session, Waiting};
use crate::error::Error;
use crate::response::Reading;
use crate::saved::Saved;
use crate::token::Token;

impl Session {
    /// Takes the token a response brought, as its `reading` says, for the layer and for
    /// [`Session::refresh`] alike: a refresh, or the start of a session after a password call
    /// (an explicit write, off the async workers). The owner drops either if the session
    /// changed since the call was sent (a lock, say); a failed write is reported by
    /// [`Session::flush`]. Nothing is written of a token once it is on disk; the call still
    /// waits for a write of it that is under way.
    #[inline]
    pub(crate) fn take(&self, reading: Reading) -> Refresh {
        // The token's arms out of line: inlined whole, they cost a call with no token 50
        // instructions more.
        match reading {
            Reading::Nothing | Reading::Failure(_) => Refresh::Done,
            Reading::Refresh { token, epoch } => self.take_token(|waiter| Event::Refresh {
                token,
                epoch,
                waiter,
            }),
            Reading::Started { token, epoch } => self.take_token(|waiter| Event::PasswordToken {
                token,
                epoch,
                waiter,
            }),
        }
    }

    #[cold]
    fn take_token(&self, event: impl FnOnce(WaiterId) -> Event) -> Refresh {
        match self.shared.ask(event).1 {
            Reply::Later(waiting) => Refresh::Saving(Saved::new(waiting, self.shared.call_wait)),
            Reply::Now(_) => Refresh::Done,
        }
    }

    /// A call sent with `sent` (the session's token then, or none) in `epoch` failed for its
    /// session: `None` when the session already holds a token to replay with, else the
    /// recovery's answer to wait for.
    pub(crate) fn call_failed(&self, sent: Option<Token>, epoch: u64) -> Option<Waiting> {
        let expired = sent
            .as_ref()
            .and_then(Token::expires_at)
            .is_some_and(|exp| exp <= SystemTime::now());
        let (_, Reply::Later(waiting)) = self.shared.ask(|waiter| Event::CallFailed {
            token: sent,
            epoch,
            expired,
            waiter,
        }) else {
            return None;
        };
        Some(waiting)
    }

    /// The re-authenticator of run `run` is done: what its runner does next.
    pub(crate) fn reauthenticated(&self, run: u64, result: Result<Token, Error>) -> Answer {
        self.shared.tell(Event::Reauthenticated { run, result })
    }

    /// The runner of run `run` stopped before its re-authenticator finished.
    pub(crate) fn runner_gone(&self, run: u64) {
        self.shared.tell(Event::Gone(run));
    }

    /// Waits for every write handed out so far, at most the call bound
    /// ([`SessionBuilder::call_wait`](super::SessionBuilder::call_wait)).
    pub(crate) async fn written_within_call_bound(&self) {
        if let (_, Reply::Later(waiting)) = self.shared.ask(Event::Flush) {
            Saved::new(waiting, self.shared.call_wait).await;
        }
    }

    /// Whether the token in `epoch` came from a re-authentication.
    pub(crate) fn just_recovered(&self, epoch: u64) -> bool {
        self.shared.look(|owner| owner.just_recovered(epoch))
    }
}
