//! The way back from the file: another process's change to the session file, seen through a
//! notification from the OS ([`Watch`]) or, before a re-authentication, by reading the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Shared;
use super::owner::Event;
use crate::file::dir_of;

/// How a session learns that another process changed the session file (an unlock, a lock, a
/// refresh), so that its next call uses what the file holds.
///
/// Calls never look at the file themselves: a call reads the token in memory and nothing else.
/// The watch starts with [`Session::start`](crate::Session::start) (or the first explicit change), which, for
/// [`Watch::Notify`], creates the file's directory (mode 0700) if it is missing; it ends when
/// the last clone of the session is dropped. If the directory itself is removed or renamed while
/// watched by notification (as a logout removes what is in `$XDG_RUNTIME_DIR`), the session
/// polls the file as in its first second, then once a second, until the directory is back and
/// can be watched again; it does not create the directory again itself. (A filesystem
/// unmounted under the directory raises no event: that loss is not seen.)
/// A store that is not the session file is watched only by [`Watch::Poll`].
///
/// Each session watches with one thread (and, on Linux, one inotify instance, of which a user
/// has 128 by default): share one `Session` (its clones are cheap) rather than make many of
/// one file. A session whose file cannot be watched by notification polls it once a second, says
/// so in a warning, and tries notification again, at growing intervals up to a minute.
///
/// Two sessions on one file, as two processes would have (a long-lived one, and a command that
/// unlocks):
///
/// ```
/// use std::time::Duration;
/// use tower_agent_session::{Session, Token, TokenFile, Watch};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let daemon = Session::builder(TokenFile::in_dir(dir.path()))
///     .watch(Watch::Poll(Duration::from_millis(20))) // as on NFS; the default is Watch::Notify
///     .build();
/// daemon.start().await?; // no file yet: no token; the watch starts
/// let since = daemon.epoch();
///
/// let command = Session::new(TokenFile::in_dir(dir.path()));
/// command.start_with_token(Token::new("t1")?).await?;
///
/// tokio::time::timeout(Duration::from_secs(10), daemon.changed_since(since)).await?;
/// assert_eq!(daemon.token(), Some(Token::new("t1")?));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Watch {
    /// The OS tells of changes to the file's directory as they happen (inotify on Linux,
    /// FSEvents on macOS, kqueue on the BSDs, through the `notify` crate): a change is picked up
    /// within milliseconds, by one thread that sleeps otherwise. Where the OS has no such
    /// notification, `notify` polls.
    ///
    /// For its first second a session looks at the file every 40 ms instead: closing an inotify
    /// instance costs a process 10 to 20 ms at its exit, which a command-line run that makes one
    /// call would feel. So a process that ends within a second never makes one, and the pickup
    /// stays within 50 ms all along.
    #[default]
    Notify,
    /// Looks at the store this often, at least every 10 ms (one `stat` of the session file,
    /// or [`TokenStore::version`](crate::store::TokenStore::version)), from a thread that ends within an interval once the
    /// session is gone. For filesystems whose changes made on another machine raise no
    /// notification (NFS, SMB and other network filesystems, some FUSE ones; on NFS the
    /// client's attribute cache may delay what a `stat` sees), and for stores of your own.
    Poll(Duration),
    /// Never: another process's change is seen only when a call fails for its session and
    /// re-authentication re-reads the file, or when a refresh write finds it.
    Off,
}

/// A watch in place: the OS's notifications, or `None` for a thread that looks every interval
/// (it may hand over to notifications, and ends once the session is gone) or for a store that
/// nothing can watch (not a session file, and no polling asked for: said once). Dropping it
/// stops the notifications, on a thread of their own (see [`Drop`]).
pub(super) struct Armed(Option<Box<dyn notify::Watcher + Send>>);

/// Starts the watch, once per session. Runs on a blocking thread. A watch that cannot start
/// (no thread to be had) is logged; the session works on, seeing other processes' changes as
/// with [`Watch::Off`].
pub(super) fn arm(shared: &Arc<Shared>) {
    let mut armed = shared.watcher.lock().unwrap_or_else(|e| e.into_inner());
    if shared.watch == Watch::Off || armed.is_some() {
        return;
    }
    let started = match (shared.watch, shared.store.watched_file()) {
        (Watch::Poll(interval), _) => poll(shared, interval.max(MIN_POLL), None),
        (_, Some(file)) => {
            if let Err(e) = crate::file::create_private_dir(dir_of(&file)) {
                tracing::warn!(error = %e, "cannot create the session file's directory");
            }
            poll(shared, WARM_UP_POLL, Some(file))
        }
        // A store of your own raises no notification: only polling watches it.
        (_, None) => {
            tracing::warn!(
                "the session's store is not a session file: other processes' changes are seen \
                 only on a failure (watch it with Watch::Poll)"
            );
            Ok(Armed(None))
        }
    };
    match started {
        Ok(watch) => *armed = Some(watch),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot watch the session file; other processes' changes are seen only on a failure"
        ),
    }
}

/// How long a session polls its file before it asks the OS to tell it of changes, and how
/// often it looks meanwhile.
///
/// Closing an inotify instance makes the kernel wait for a grace period, which a process pays
/// at its exit: 10 to 20 ms here, more than a whole one-call command-line run. A process that
/// ends within the first second never makes one; it looks at the file every 40 ms instead,
/// which keeps the pickup within 50 ms all along.
const WARM_UP: Duration = Duration::from_secs(1);
const WARM_UP_POLL: Duration = Duration::from_millis(40);

/// The shortest [`Watch::Poll`] interval: shorter would make the thread a busy loop.
const MIN_POLL: Duration = Duration::from_millis(10);

/// How often a session whose file cannot be watched by notification looks at it instead.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// The longest a session waits before it tries notification again after a failure.
const RETRY_AT_MOST: Duration = Duration::from_secs(60);

/// A thread that looks at the store every `interval` until the session is gone; with `then`,
/// after [`WARM_UP`] it hands over to the OS's notifications on that file. While they cannot be
/// had (the directory is missing, no inotify instance is left) it looks every
/// [`FALLBACK_POLL`], and tries them again: as soon as the directory is there, after a failure
/// at growing intervals up to [`RETRY_AT_MOST`].
///
/// Nothing the thread runs can end it by a panic (a look and a watcher's start catch theirs),
/// so the watch it is stays in place as long as the session.
fn poll(shared: &Arc<Shared>, interval: Duration, then: Option<PathBuf>) -> std::io::Result<Armed> {
    let session = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("agent-session-watch".into())
        .spawn(move || {
            let (mut interval, mut retry) = (interval, FALLBACK_POLL);
            let (mut next_try, mut warned) = (Instant::now() + WARM_UP, false);
            loop {
                std::thread::sleep(interval);
                let Some(shared) = session.upgrade() else {
                    return;
                };
                shared.look_at_store(Look::IfMoved);
                let Some(file) = then.as_ref().filter(|_| Instant::now() >= next_try) else {
                    continue;
                };
                interval = FALLBACK_POLL;
                // A directory that is not there cannot be watched: no instance made meanwhile.
                if !dir_of(file).is_dir() {
                    continue;
                }
                // A watcher that panics while it starts (`notify` does when it cannot start its
                // thread) is a failure like any other.
                let watch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    notification::watch(&shared, file)
                }))
                .unwrap_or_else(|_| Err(notify::Error::generic("the watcher panicked")));
                match watch {
                    Ok(watch) => {
                        install(&shared, watch);
                        // A change made between the last look and the watch's start.
                        shared.look_at_store(Look::Read);
                        return;
                    }
                    Err(e) => {
                        if std::mem::replace(&mut warned, true) {
                            tracing::debug!(error = %e, "cannot watch the session file yet");
                        } else {
                            tracing::warn!(error = %e, "cannot watch the session file; polling it instead");
                        }
                        next_try = Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_AT_MOST);
                    }
                }
            }
        })?;
    Ok(Armed(None))
}

/// Puts a watch that [`notification::watch`] started in place of the polling that started it,
/// unless its directory went away meanwhile: its callback has then put the polling it started
/// in place instead, which this must not overwrite (the dead watch would hold its inotify
/// instance, or fill the slot that a failed polling left empty for the next explicit change to
/// arm). Either way the polling that started it ends.
fn install(shared: &Shared, (watch, gone): (Armed, Arc<AtomicBool>)) {
    let mut armed = shared.watcher.lock().unwrap_or_else(|e| e.into_inner());
    // The callback sets `gone` before it takes this lock: either this sees it, or the polling
    // the callback starts replaces this watch.
    if !gone.load(Ordering::SeqCst) {
        *armed = Some(watch);
    }
}

/// How far a look at the store goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// A poll: the store is read only when its version moved (one `stat` otherwise).
    IfMoved,
    /// The OS said the file changed: it is read whatever its version says, for a version can
    /// repeat (a file rewritten in place, on a filesystem whose timestamps are coarser than the
    /// writes; an inode number reused).
    Read,
}

impl Shared {
    /// The store may have changed: for a poll, one `stat` of the file (or
    /// [`TokenStore::version`]), which the owner compares with the version it knows; for an
    /// event, a read whatever the version says (the read, when the owner asks for one, on a
    /// thread of its own).
    ///
    /// A store that panics here (a store of your own) fails this look, not the watch: the
    /// panic is caught, logged, and the next look tries again.
    fn look_at_store(self: &Arc<Self>, how: Look) {
        let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match how {
            Look::Read => {
                self.tell(Event::StoreChanged);
            }
            Look::IfMoved => match self.store.version() {
                Ok(version) => {
                    self.look_failing.store(false, Ordering::Relaxed);
                    self.tell(Event::StoreVersion(version));
                }
                Err(e) => {
                    // Polled, the same failure comes back every interval: warned of once.
                    if self.look_failing.swap(true, Ordering::Relaxed) {
                        tracing::debug!(error = %e, "cannot look at the session file");
                    } else {
                        tracing::warn!(error = %e, "cannot look at the session file");
                    }
                }
            },
        }));
        if looked.is_err() {
            tracing::error!("the session's store panicked while the watch looked at it");
        }
    }
}

mod notification;
#[cfg(test)]
mod tests;
