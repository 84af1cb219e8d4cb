//! Blocking work (the file's I/O) off the async workers, on any executor.

/// `spawn_blocking` on the current runtime, or a plain thread when there is none (a response
/// polled outside tokio).
///
/// The work runs in the span of whoever started it (a call's, say), so that its events belong
/// to that.
pub(super) fn spawn_blocking_anywhere(work: impl FnOnce() + Send + 'static) {
    let span = tracing::Span::current();
    let work = move || span.in_scope(work);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(work);
        }
        Err(_) => {
            // A thread that cannot be made drops the work, which releases whoever waits for
            // it (every piece of work here does so when dropped): an error, never a panic.
            let spawned = std::thread::Builder::new()
                .name("agent-session".into())
                .spawn(work);
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a thread for the session's file work");
            }
        }
    }
}
