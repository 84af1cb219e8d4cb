//! The OS's notifications of changes to the session file's directory (inotify, FSEvents,
//! kqueue, through `notify`), and what the watch does with each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::{Armed, Look, Shared, WARM_UP_POLL, poll};
use crate::file::dir_of;

/// Watches `file`'s directory for changes to `file`; with the watch, whether its directory went
/// away (then it sees nothing more, and its callback started the polling again).
pub(super) fn watch(
    shared: &Arc<Shared>,
    file: &Path,
) -> Result<(Armed, Arc<AtomicBool>), notify::Error> {
    let session = Arc::downgrade(shared);
    let name = file.file_name().map(ToOwned::to_owned);
    let dir = std::path::absolute(dir_of(file))?;
    // Which directory it is: one replaced or gone while its events were lost is told by this.
    let identity = crate::file::identity(&dir);
    // notify is given the same path the events are compared with: it joins a relative one to
    // the working directory without normalising `..`, where `absolute` does on Windows.
    let watched_dir = dir.clone();
    let (watched, gone) = (file.to_owned(), Arc::new(AtomicBool::new(false)));
    let seen_gone = Arc::clone(&gone);
    let on_event = move |event: notify::Result<notify::Event>| {
        // Once its directory is gone, a watch sees nothing more: the polling took over.
        let Some(shared) = session
            .upgrade()
            .filter(|_| !seen_gone.load(Ordering::SeqCst))
        else {
            return;
        };
        // Events may have been lost, the directory's own among them.
        let lost = event.as_ref().map_or(true, notify::Event::need_rescan);
        if event.as_ref().is_ok_and(|event| is_gone(event, &dir))
            || (lost && crate::file::identity(&dir) != identity)
        {
            seen_gone.store(true, Ordering::SeqCst);
            return watch_again(&shared, &watched);
        }
        let how = match &event {
            _ if lost => Some(Look::Read),
            Ok(event) if event.paths.iter().any(|p| p.file_name() == name.as_deref()) => {
                look_for(&event.kind)
            }
            _ => None,
        };
        if let Some(how) = how {
            shared.look_at_store(how);
        }
    };
    let mut watcher = notify::recommended_watcher(on_event)?;
    watcher.watch(&watched_dir, RecursiveMode::NonRecursive)?;
    Ok((Armed(Some(Box::new(watcher))), gone))
}

/// What an event of `kind` for the session file asks of the watch.
fn look_for(kind: &EventKind) -> Option<Look> {
    match kind {
        // A file closed after a write: read it.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Look::Read),
        // Opened, read, closed unwritten: nothing changed. (The look's own read raises these:
        // reading on them would never end.) And a rename's third event, after its `From` and
        // `To` (which read).
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        // Its mode or times alone: the stamp tells.
        EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Any | EventKind::Other => {
            Some(Look::IfMoved)
        }
        // Written, renamed onto, created, removed: read it, whatever its stamp says.
        EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_) => Some(Look::Read),
    }
}

/// Whether `event` says that the watched directory `dir` itself was removed or moved away: its
/// watch then sees nothing more (inotify drops it, or follows the directory; so does kqueue).
fn is_gone(event: &notify::Event, dir: &Path) -> bool {
    matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && event.paths.iter().any(|path| path == dir)
}

/// The watched directory is gone: poll the file, and watch it by notification again once the
/// directory is back. Runs once a watch, on its event thread, after the watch is marked gone:
/// it is in place (then replaced here, and dropped on a thread of its own: see [`Drop`]), or
/// its polling thread finds it gone and never puts it there.
fn watch_again(shared: &Arc<Shared>, file: &Path) {
    // The file went with its directory: a lock, seen now rather than at the first poll.
    shared.look_at_store(Look::Read);
    tracing::warn!(
        "the session file's directory was removed or moved; polling it until it is back"
    );
    let mut armed = shared.watcher.lock().unwrap_or_else(|e| e.into_inner());
    match poll(shared, WARM_UP_POLL, Some(PathBuf::from(file))) {
        Ok(polling) => *armed = Some(polling),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot watch the session file; other processes' changes are seen only on a \
                 failure, until the session's next explicit change"
            );
            // No dead watch left in place: the next explicit change arms one again.
            *armed = None;
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // The last clone of a session may be dropped on the watcher's own event thread (its
        // callback holds the session while it looks), and some watchers join that thread when
        // dropped (macOS's FSEvents one waits for its run loop): never drop one there.
        let Some(watcher) = self.0.take() else {
            return;
        };
        // Dropped by the thread alone: if the thread cannot start, its closure is dropped here
        // unrun and the watcher in it left running (dropped here, it could be on its own event
        // thread).
        let watcher = std::mem::ManuallyDrop::new(watcher);
        let spawned = std::thread::Builder::new()
            .name("agent-session-unwatch".into())
            .spawn(move || drop(std::mem::ManuallyDrop::into_inner(watcher)));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to stop the session's watch");
        }
    }
}
