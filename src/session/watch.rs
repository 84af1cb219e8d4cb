//! The way back from the file: another process's change to the session file, seen through a
//! notification from the OS ([`Watch`]) or, before a re-authentication, by reading the file.

use std::path::Path;
use std::sync::Weak;

use super::*;

/// How a session learns that another process changed the session file (an unlock, a lock, a
/// refresh), so that its next call uses what the file holds.
///
/// Calls never look at the file themselves: a call reads the token in memory and nothing else.
/// The watch starts with [`Session::start`] (or the first explicit change), which, for
/// [`Watch::Notify`], creates the file's directory (mode 0700) if it is missing; it ends when
/// the last clone of the session is dropped. If the directory itself is removed or renamed while
/// watched by notification (a logout empties `$XDG_RUNTIME_DIR`), the session polls the file as
/// in its first second, then once a second, until the directory is back and can be watched
/// again; it does not create the directory again itself.
/// A store that is not the session file is watched only by [`Watch::Poll`].
///
/// Each session watches with one thread (and, on Linux, one inotify instance, of which a user
/// has 128 by default): share one `Session` (its clones are cheap) rather than make many of
/// one file. A session whose file cannot be watched by notification polls it once a second, and
/// says so in a warning.
///
/// Two sessions on one file, as two processes would have (a long-lived one, and a command that
/// unlocks):
///
/// ```
/// use std::time::Duration;
/// use agent_session::{Session, Token, TokenFile, Watch};
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
    /// or [`TokenStore::version`]), from a thread that ends within an interval once the
    /// session is gone. For filesystems whose changes made on another machine raise no
    /// notification (NFS, SMB and other network filesystems, some FUSE ones; on NFS the
    /// client's attribute cache may delay what a `stat` sees), and for stores of your own.
    Poll(Duration),
    /// Never: another process's change is seen only when a call fails for its session and
    /// re-authentication re-reads the file, or when a refresh write finds it.
    Off,
}

/// A watch in place: dropping it stops it.
pub(super) enum Armed {
    /// The OS's notifications. Dropped on a thread of its own (see [`Drop`]).
    Notify {
        watcher: Option<Box<dyn notify::Watcher + Send>>,
    },
    /// A thread that looks every interval (and may hand over to notifications); it ends once
    /// the session is gone.
    Poll,
}

/// Starts the watch, once per session. Runs on a blocking thread. A watch that cannot start
/// (no thread to be had) is logged; the session works on, seeing other processes' changes as
/// with [`Watch::Off`].
pub(super) fn arm(shared: &Arc<Shared>) {
    if shared.watch == Watch::Off {
        return;
    }
    let mut armed = shared.watcher.lock().unwrap_or_else(|e| e.into_inner());
    if armed.is_some() {
        return;
    }
    let started = match (shared.watch, &shared.file) {
        (Watch::Poll(interval), _) => poll(shared, interval.max(MIN_POLL), None),
        (_, Some(file)) => {
            if let Err(e) = file.create_dir() {
                tracing::warn!(error = %e, "cannot create the session file's directory");
            }
            poll(shared, WARM_UP_POLL, Some(file.clone()))
        }
        // A store of your own raises no notification: only polling watches it.
        (_, None) => return,
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

/// A thread that looks at the store every `interval` until the session is gone; with `then`,
/// after [`WARM_UP`] it hands over to the OS's notifications on that file (or, where none can be
/// had, polls it every [`FALLBACK_POLL`]).
fn poll(
    shared: &Arc<Shared>,
    interval: Duration,
    then: Option<TokenFile>,
) -> std::io::Result<Armed> {
    let session = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("agent-session-watch".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let (mut interval, mut failed) = (interval, false);
            loop {
                std::thread::sleep(interval);
                if !look(&session, Look::IfMoved) {
                    return;
                }
                let Some(file) = then.as_ref().filter(|_| started.elapsed() >= WARM_UP) else {
                    continue;
                };
                let Some(shared) = session.upgrade() else {
                    return;
                };
                match notify(&shared, file) {
                    Ok(watcher) => {
                        *shared.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
                        // A change made between the last look and the watch's start.
                        shared.look_at_store(Look::Read);
                        return;
                    }
                    // Tried again at every look: the directory may come back, an inotify
                    // instance may be freed. Warned of once.
                    Err(e) if failed => {
                        tracing::debug!(error = %e, "cannot watch the session file yet");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the session file; polling it instead");
                        (interval, failed) = (FALLBACK_POLL, true);
                    }
                }
            }
        })?;
    Ok(Armed::Poll)
}

fn notify(shared: &Arc<Shared>, file: &TokenFile) -> Result<Armed, notify::Error> {
    let session = Arc::downgrade(shared);
    let name = file.path().file_name().map(ToOwned::to_owned);
    let dir = std::path::absolute(watched_dir(file))?;
    let watched = file.clone();
    let on_event = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = &event
            && is_gone(event, &dir)
        {
            if let Some(shared) = session.upgrade() {
                watch_again(&shared, &watched);
            }
            return;
        }
        let concerns_file = match &event {
            Ok(event) => {
                event.need_rescan()
                    || event
                        .paths
                        .iter()
                        .any(|path| path.file_name() == name.as_deref())
            }
            // Events may have been lost: look.
            Err(_) => true,
        };
        if concerns_file {
            look(&session, Look::Read);
        }
    };
    let mut watcher = notify::recommended_watcher(on_event)?;
    notify::Watcher::watch(
        &mut watcher,
        watched_dir(file),
        notify::RecursiveMode::NonRecursive,
    )?;
    Ok(Armed::Notify {
        watcher: Some(Box::new(watcher)),
    })
}

/// Whether `event` says that the watched directory `dir` itself was removed or moved away: its
/// watch then sees nothing more.
fn is_gone(event: &notify::Event, dir: &Path) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && event.paths.iter().any(|path| path == dir)
}

/// The watched directory is gone: poll the file, and watch it by notification again once the
/// directory is back. Runs on the watcher's event thread; replacing the watch drops the old
/// watcher on a thread of its own (see [`Drop`]).
fn watch_again(shared: &Arc<Shared>, file: &TokenFile) {
    // The file went with its directory: a lock, seen now rather than at the first poll.
    shared.look_at_store(Look::Read);
    let mut armed = shared.watcher.lock().unwrap_or_else(|e| e.into_inner());
    // Once per loss: a second event of the same watcher finds the polling in place.
    if !matches!(*armed, Some(Armed::Notify { .. })) {
        return;
    }
    tracing::warn!(
        "the session file's directory was removed or moved; polling it until it is back"
    );
    match poll(shared, WARM_UP_POLL, Some(file.clone())) {
        Ok(polling) => *armed = Some(polling),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot watch the session file; other processes' changes are seen only on a failure"
        ),
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // The last clone of a session may be dropped on the watcher's own event thread (its
        // callback holds the session while it looks), and some watchers join that thread when
        // dropped (macOS's FSEvents one waits for its run loop): never drop one there.
        if let Self::Notify { watcher } = self
            && let Some(watcher) = watcher.take()
        {
            let dropped = std::thread::Builder::new()
                .name("agent-session-unwatch".into())
                .spawn(move || drop(watcher));
            if let Err(e) = dropped {
                tracing::warn!(error = %e, "cannot start a thread to stop the session's watch");
            }
        }
    }
}

fn watched_dir(file: &TokenFile) -> &Path {
    match file.path().parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
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

/// Looks at the store for a session that may be gone (the watch's thread holds no session);
/// returns whether it is still there.
fn look(session: &Weak<Shared>, how: Look) -> bool {
    match session.upgrade() {
        Some(shared) => {
            shared.look_at_store(how);
            true
        }
        None => false,
    }
}

impl Session {
    /// Re-reads the store; if it holds a token that is neither `sent` (the one that just
    /// failed) nor the one this process last wrote, another process put it there: use it.
    pub(crate) async fn reload_if_other(&self, sent: Option<Token>) -> Result<bool, Error> {
        self.explicit(move |shared| {
            let stored = shared.store.load()?;
            let mut state = shared.lock();
            let other =
                stored.token.is_some() && stored.token != sent && stored.token != state.synced;
            if other {
                shared
                    .stats
                    .external_changes
                    .fetch_add(1, Ordering::Relaxed);
                shared.adopt(&mut state, stored);
            }
            Ok(other)
        })
        .await
    }
}

impl Shared {
    /// The store may have changed: one `stat` of the file (or [`TokenStore::version`]), and a
    /// read when its version is not the one the state records, or always with [`Look::Read`].
    /// Inside the gate, so that no write of this process is half-recorded: a token that is not
    /// the one the state records is another process's doing.
    fn look_at_store(&self, how: Look) {
        self.in_gate(|| {
            let now = match self.store.version() {
                Ok(now) => {
                    self.look_failing.store(false, Ordering::Relaxed);
                    now
                }
                Err(e) => {
                    // Polled, the same failure comes back every interval: warned of once.
                    if self.look_failing.swap(true, Ordering::Relaxed) {
                        tracing::debug!(error = %e, "cannot look at the session file");
                    } else {
                        tracing::warn!(error = %e, "cannot look at the session file");
                    }
                    return;
                }
            };
            if how == Look::IfMoved && now == self.lock().version {
                return;
            }
            let stored = match self.store.load() {
                Ok(stored) => stored,
                Err(e) => {
                    // Keep the token we have: a bad file must not replace a good token.
                    tracing::warn!(error = %e, "the session file changed but cannot be used");
                    self.lock().version = now;
                    return;
                }
            };
            let mut state = self.lock();
            if state.synced == stored.token {
                state.version = stored.version;
                return;
            }
            if self.keep_while_blank(&mut state, &stored) {
                return;
            }
            tracing::info!(
                token_found = stored.token.is_some(),
                "session file changed by another process"
            );
            // Counted before the new epoch is published, so that whoever waits for the change
            // sees it counted.
            self.stats.external_changes.fetch_add(1, Ordering::Relaxed);
            self.adopt(&mut state, stored);
        });
    }
}

#[cfg(test)]
mod tests;
