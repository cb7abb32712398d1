//! The shared, bounded TTL map behind [`NegativeCache`](super::NegativeCache).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{CheckFuture, CheckReport, HealthCheck};

/// Default time a failed key stays bad: 30 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Default maximum number of bad keys remembered at once: 10 000.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// About 30 years: the expiry used when `now + ttl` would overflow [`Instant`].
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A cloneable handle on the bad-key cache shared by a
/// [`NegativeCacheLayer`](super::NegativeCacheLayer), every
/// [`NegativeCache`](super::NegativeCache) it built, and all their clones.
///
/// A key is bad while `now < marked_at + ttl` and good again from `now == marked_at + ttl` on.
/// Time is [`tokio::time::Instant`], so a paused tokio clock (`tokio::time::pause`) drives it.
///
/// # Bound and eviction
///
/// At most `max_entries` keys are held. Marking a new key while full first drops every
/// expired entry, then, if still full, evicts the entry closest to expiry (the oldest mark,
/// since every mark uses the same TTL). That sweep is `O(max_entries)` under the lock; it only
/// runs when the map is full. Expired entries are otherwise removed lazily, when looked up.
/// No background task is involved.
///
/// The handle is also a [`HealthCheck`]: always `ok`, with `{"bad_keys": n}` as details.
pub struct NegativeCacheHandle<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    state: Mutex<State<K>>,
    /// Bumped (under the lock) on every mark. A response future compares it with the value seen
    /// when its call was admitted to know, without locking, whether its key may have been
    /// marked meanwhile and so needs clearing on success.
    marks: AtomicU64,
}

struct State<K> {
    /// Key → instant the key becomes good again.
    entries: HashMap<K, Instant>,
    ttl: Duration,
    max_entries: usize,
}

/// The outcome of admitting a call.
pub(crate) enum Admission {
    /// The key is not bad; `marks` is the mark counter at admission.
    Allowed { marks: u64 },
    /// The key is bad for this much longer.
    Refused { expires_in: Duration },
}

impl<K> Clone for NegativeCacheHandle<K> {
    fn clone(&self) -> Self {
        NegativeCacheHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for NegativeCacheHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("NegativeCacheHandle")
            .field("entries", &state.entries.len())
            .field("ttl", &state.ttl)
            .field("max_entries", &state.max_entries)
            .finish()
    }
}

impl<K> Default for NegativeCacheHandle<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> NegativeCacheHandle<K> {
    /// An empty cache with a TTL of [`DEFAULT_TTL`] (30 s) and at most
    /// [`DEFAULT_MAX_ENTRIES`] (10 000) keys.
    pub fn new() -> Self {
        NegativeCacheHandle {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    entries: HashMap::new(),
                    ttl: DEFAULT_TTL,
                    max_entries: DEFAULT_MAX_ENTRIES,
                }),
                marks: AtomicU64::new(0),
            }),
        }
    }

    /// The time a key stays bad after it is marked.
    pub fn ttl(&self) -> Duration {
        self.lock().ttl
    }

    /// Sets the TTL for marks made from now on (existing entries keep their expiry).
    /// A zero TTL disables caching.
    pub fn set_ttl(&self, ttl: Duration) {
        self.lock().ttl = ttl;
    }

    /// The maximum number of keys held.
    pub fn max_entries(&self) -> usize {
        self.lock().max_entries
    }

    /// Sets the maximum number of keys held (at least 1; `0` is treated as `1`). Shrinking
    /// does not evict at once: the bound is enforced on the next mark of a new key.
    pub fn set_max_entries(&self, max_entries: usize) {
        self.lock().max_entries = max_entries.max(1);
    }

    /// Returns `true` if the two handles share the same cache.
    pub fn same_cache(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries held, expired or not (tests only: `len` drops expired entries first).
    #[cfg(test)]
    pub(crate) fn raw_len(&self) -> usize {
        self.lock().entries.len()
    }

    /// The mark counter (see [`Shared::marks`]).
    pub(crate) fn marks(&self) -> u64 {
        self.shared.marks.load(Ordering::Acquire)
    }
}

impl<K> NegativeCacheHandle<K>
where
    K: Eq + Hash + fmt::Debug,
{
    /// Returns `true` if `key` is currently bad.
    pub fn is_bad(&self, key: &K) -> bool {
        self.expires_in(key).is_some()
    }

    /// How long `key` stays bad, or `None` if it is not bad. Removes the entry if it expired.
    pub fn expires_in(&self, key: &K) -> Option<Duration> {
        let mut state = self.lock();
        remaining(&mut state, key)
    }

    /// Marks `key` bad for the TTL from now, as a recorded failure would. Re-marking a key
    /// restarts its TTL.
    pub fn insert(&self, key: K) {
        self.mark(key);
    }

    /// Forgets `key`. Returns `true` if it was bad.
    pub fn remove(&self, key: &K) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        match state.entries.remove(key) {
            Some(expires_at) if now < expires_at => {
                tracing::debug!(key = ?key, "negative cache: key cleared");
                true
            }
            _ => false,
        }
    }

    /// Forgets every key.
    pub fn clear(&self) {
        let mut state = self.lock();
        let n = state.entries.len();
        state.entries.clear();
        tracing::debug!(entries = n, "negative cache: cleared");
    }

    /// The number of bad keys. Drops expired entries first, so this is `O(len)`.
    pub fn len(&self) -> usize {
        let mut state = self.lock();
        purge_expired(&mut state, Instant::now());
        state.entries.len()
    }

    /// Returns `true` if no key is bad.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every bad key with the time it stays bad, soonest to expire first.
    pub fn snapshot(&self) -> Vec<(K, Duration)>
    where
        K: Clone,
    {
        let state = self.lock();
        let now = Instant::now();
        let mut out: Vec<(K, Duration)> = state
            .entries
            .iter()
            .filter(|&(_, &expires_at)| now < expires_at)
            .map(|(key, &expires_at)| (key.clone(), expires_at - now))
            .collect();
        out.sort_by_key(|&(_, expires_in)| expires_in);
        out
    }

    /// Admits or refuses a call for `key` (the hot path: one lock, one lookup, no clone).
    pub(crate) fn admit(&self, key: &K) -> Admission {
        let mut state = self.lock();
        match remaining(&mut state, key) {
            Some(expires_in) => Admission::Refused { expires_in },
            // Read under the lock: any mark after this admission bumps the counter.
            None => Admission::Allowed {
                marks: self.shared.marks.load(Ordering::Acquire),
            },
        }
    }

    /// Records a failure of `key`: bad for the TTL from now.
    pub(crate) fn mark(&self, key: K) {
        let mut state = self.lock();
        let now = Instant::now();
        let ttl = state.ttl;
        let expires_at = now.checked_add(ttl).unwrap_or(now + FAR_FUTURE);
        if !state.entries.contains_key(&key) && state.entries.len() >= state.max_entries {
            make_room(&mut state, now);
        }
        tracing::debug!(key = ?key, ttl = ?ttl, "negative cache: key marked bad");
        state.entries.insert(key, expires_at);
        self.shared.marks.fetch_add(1, Ordering::AcqRel);
    }

    /// Clears `key` after a success, if it is present.
    pub(crate) fn clear_on_success(&self, key: &K) {
        let mut state = self.lock();
        if state.entries.remove(key).is_some() {
            tracing::debug!(key = ?key, "negative cache: key cleared by a success");
        }
    }
}

/// Time left for `key`, removing it if expired.
fn remaining<K: Eq + Hash>(state: &mut State<K>, key: &K) -> Option<Duration> {
    let expires_at = *state.entries.get(key)?;
    let now = Instant::now();
    if now < expires_at {
        Some(expires_at - now)
    } else {
        state.entries.remove(key);
        None
    }
}

fn purge_expired<K>(state: &mut State<K>, now: Instant) {
    state.entries.retain(|_, expires_at| now < *expires_at);
}

/// Frees one slot: drop expired entries, then, if still full, the entry closest to expiry.
fn make_room<K: Eq + Hash + fmt::Debug>(state: &mut State<K>, now: Instant) {
    purge_expired(state, now);
    while state.entries.len() >= state.max_entries {
        // Find the soonest expiry, then remove the (first) entry carrying it; no key clone.
        let Some(soonest) = state.entries.values().min().copied() else {
            return;
        };
        let mut evicted = false;
        state.entries.retain(|key, expires_at| {
            if !evicted && *expires_at == soonest {
                evicted = true;
                tracing::debug!(key = ?key, "negative cache: full, evicted the key closest to expiry");
                false
            } else {
                true
            }
        });
    }
}

impl<K> HealthCheck for NegativeCacheHandle<K>
where
    K: Eq + Hash + fmt::Debug + Send + 'static,
{
    fn check(&self) -> CheckFuture<'_> {
        let report = CheckReport::ok().with_details(serde_json::json!({ "bad_keys": self.len() }));
        Box::pin(std::future::ready(report))
    }
}
