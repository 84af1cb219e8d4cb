//! The tokens one key has already verified, so that a token presented again is recognised by
//! its bytes instead of by its HMAC.
//!
//! A token is let into the cache only once its signature was checked (or when the agent signed
//! it itself), with its `exp`: a hit says "this key signed these exact bytes", never "valid",
//! and the caller still compares `exp` with the clock on every call. The cache belongs to one
//! key, so a *lock all*, which replaces the key, starts from an empty one (and clears the old
//! one, for the calls still holding it).

use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// How many tokens are remembered. The agent hands out one refresh a second (the same to every
/// call of that second) plus one token per unlock, and a client sends the newest it has: a few
/// dozen live tokens at most, well inside this, and small enough to clear in an instant.
pub(crate) const VERIFIED_TOKENS: usize = 128;

/// A direct-mapped cache: each token has one slot, chosen from its last bytes (its signature,
/// which for a token of ours is uniformly random); a new token in an occupied slot replaces
/// the old one. Reads take no lock.
pub(crate) struct VerifiedTokens {
    slots: Box<[ArcSwapOption<Entry>]>,
}

struct Entry {
    token: Box<[u8]>,
    exp: u64,
}

impl VerifiedTokens {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..VERIFIED_TOKENS)
                .map(|_| ArcSwapOption::empty())
                .collect(),
        }
    }

    /// The `exp` of `token` if these exact bytes were verified by this key.
    ///
    /// The bytes are compared in constant time, so that how long a miss takes does not say
    /// how much of a cached token a guess got right.
    pub(crate) fn get(&self, token: &[u8]) -> Option<u64> {
        let slot = self.slots[slot(token)].load();
        let entry = slot.as_ref()?;
        same_bytes(&entry.token, token).then_some(entry.exp)
    }

    /// Remembers that `token`, which expires at `exp`, was signed by this key.
    pub(crate) fn insert(&self, token: &[u8], exp: u64) {
        self.slots[slot(token)].store(Some(Arc::new(Entry {
            token: token.into(),
            exp,
        })));
    }

    /// Forgets every token.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.store(None);
        }
    }
}

/// Whether `a` and `b` are equal, looking at every byte whatever the first difference: the
/// differences are folded together and only their sum is tested. Lengths are not secret.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y));
    // Kept opaque so that the fold is not turned into a compare that stops early.
    std::hint::black_box(difference) == 0
}

/// The slot of `token`: its last eight bytes (the end of a JWT's signature), mixed by a
/// multiply so that every bit of them counts. Not a secret: a chosen token can only pick the
/// slot it evicts, which costs its sender an HMAC check, nothing more.
fn slot(token: &[u8]) -> usize {
    let tail = &token[token.len().saturating_sub(8)..];
    let mut word = [0; 8];
    word[..tail.len()].copy_from_slice(tail);
    let mixed = u64::from_le_bytes(word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The top bits of the product depend on all of the word's; VERIFIED_TOKENS is a power of
    // two, so its index fits in them.
    (mixed >> (64 - VERIFIED_TOKENS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_what_was_put_in() {
        let cache = VerifiedTokens::new();
        assert_eq!(cache.get(b"a.b.c"), None);
        cache.insert(b"a.b.c", 42);
        assert_eq!(cache.get(b"a.b.c"), Some(42));
        assert_eq!(cache.get(b"a.b.d"), None);
        assert_eq!(cache.get(b"a.b.c."), None);
        assert_eq!(cache.get(b""), None);
        cache.clear();
        assert_eq!(cache.get(b"a.b.c"), None);
    }

    #[test]
    fn compares_every_byte() {
        assert!(same_bytes(b"", b""));
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"xbc", b"abc"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedTokens::new();
        for i in 0..10 * VERIFIED_TOKENS {
            cache.insert(format!("token-{i:08}").as_bytes(), 1);
        }
        let held = cache
            .slots
            .iter()
            .filter(|slot| slot.load().is_some())
            .count();
        assert!(held <= VERIFIED_TOKENS);
        // The newest is always there: it took its slot last.
        let newest = format!("token-{:08}", 10 * VERIFIED_TOKENS - 1);
        assert_eq!(cache.get(newest.as_bytes()), Some(1));
    }

    #[test]
    fn slots_are_spread() {
        let used: std::collections::HashSet<usize> = (0..VERIFIED_TOKENS * 4)
            .map(|i| slot(format!("tok{i:05}").as_bytes()))
            .collect();
        assert!(used.len() > VERIFIED_TOKENS / 2, "{}", used.len());
        assert!(used.iter().all(|&s| s < VERIFIED_TOKENS));
    }
}
