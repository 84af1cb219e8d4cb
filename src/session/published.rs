//! [`Published`]: the token calls use, as the owner's last step left it. The owner writes it
//! from inside its step (so calls see the changes in the order the owner made them); every
//! call reads it, most through a [`CurrentCache`] that looks at one number while nothing
//! changes.
//!
//! A mutex and a version number, where an `ArcSwap` was before: a refresh taken publishes a
//! new token, and the `ArcSwap`'s store (its walk of the readers' debts) and the caches'
//! revalidation cost a refresh about 400 instructions more, with nothing bought by them: the
//! readers that lock are one a service per change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Current;
use crate::token::Token;

/// The current token and epoch, how many times they were published, and the epoch for those
/// who wait for it to change. It starts with no token, in epoch 0.
#[derive(Default)]
pub(crate) struct Published {
    /// Changed under the lock, after `current`: a reader that sees a new number and then
    /// locks finds the value published with it, or a newer one.
    version: AtomicU64,
    // By value, not in an `Arc`: a refresh taken allocates nothing to publish its token.
    current: Mutex<Current>,
    /// The epoch of `current`, told by every publication that changes it.
    epochs: tokio::sync::watch::Sender<u64>,
}

impl Published {
    /// The epochs as they are published, for [`Session::changed_since`](super::Session::changed_since).
    pub(crate) fn epochs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    fn locked(&self) -> MutexGuard<'_, Current> {
        // The lock guards one assignment, which a panic cannot leave half done.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is published now, and its version, read together.
    fn snapshot(&self) -> (u64, Current) {
        let locked = self.locked();
        (self.version.load(Ordering::Relaxed), locked.clone())
    }

    /// Publishes `current` for the calls that start from now on, and tells its epoch to those
    /// who wait if it changed.
    pub(crate) fn store(&self, current: Current) {
        let epoch = current.epoch;
        let mut locked = self.locked();
        // The last copy of the old token may be this one: it goes outside the lock, at the end.
        let old = std::mem::replace(&mut *locked, current);
        self.version.fetch_add(1, Ordering::Release);
        drop(locked);
        if old.epoch != epoch {
            self.epochs.send_replace(epoch);
        }
    }

    /// Whether `value` is the `authorization` value of the token published now: if so, that
    /// token. Compared under the lock, without taking a copy of what is published.
    pub(crate) fn token_if_header(&self, value: &http::HeaderValue) -> Option<Token> {
        self.locked()
            .token
            .as_ref()
            .filter(|token| token.is_header(value))
            .cloned()
    }

    /// What is published now.
    pub(crate) fn load(&self) -> Current {
        self.locked().clone()
    }
}

/// One service's copy of what is [`Published`], and the version it is of.
#[derive(Clone)]
pub(crate) struct CurrentCache {
    published: Arc<Published>,
    version: u64,
    current: Current,
}

impl CurrentCache {
    pub(crate) fn new(published: Arc<Published>) -> Self {
        let (version, current) = published.snapshot();
        Self {
            published,
            version,
            current,
        }
    }

    /// What is published now: one atomic load while nothing changed.
    #[inline]
    pub(crate) fn load(&mut self) -> &Current {
        if self.published.version.load(Ordering::Acquire) != self.version {
            self.reload();
        }
        &self.current
    }

    #[cold]
    fn reload(&mut self) {
        (self.version, self.current) = self.published.snapshot();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64) -> Current {
        Current { token: None, epoch }
    }

    /// A cache sees each publication, and a cache made after one sees it at once.
    #[test]
    fn a_cache_follows_what_is_published() {
        let published = Arc::new(Published::default());
        let mut early = CurrentCache::new(published.clone());
        assert_eq!(early.load().epoch, 0);
        published.store(at(1));
        let mut late = CurrentCache::new(published.clone());
        assert_eq!(late.load().epoch, 1);
        assert_eq!(early.load().epoch, 1);
        published.store(at(2));
        published.store(at(3));
        assert_eq!(early.load().epoch, 3);
        assert_eq!(late.load().epoch, 3);
        assert_eq!(published.load().epoch, 3);
    }

    /// Those who wait for the epoch are told of a new one, and not of a new token alone.
    #[test]
    fn the_epochs_follow_what_is_published() {
        let published = Published::default();
        let mut epochs = published.epochs();
        published.store(at(0));
        assert!(!epochs.has_changed().unwrap(), "the same epoch");
        published.store(at(1));
        assert!(epochs.has_changed().unwrap());
        assert_eq!(*epochs.borrow_and_update(), 1);
    }

    /// Readers on other threads never see an older value after a newer one.
    #[test]
    fn readers_see_publications_in_order() {
        let published = Arc::new(Published::default());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut cache = CurrentCache::new(published.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    while last < 10_000 {
                        let epoch = cache.load().epoch;
                        assert!(epoch >= last, "{epoch} after {last}");
                        last = epoch;
                    }
                })
            })
            .collect();
        for epoch in 1..=10_000 {
            published.store(at(epoch));
        }
        for reader in readers {
            reader.join().expect("a reader saw the epochs in order");
        }
    }
}
