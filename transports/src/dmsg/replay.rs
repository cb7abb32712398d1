//! Replay protection for stream requests (`docs/protocol.md` §3.3): a request is refused when its
//! timestamp is outside the window, or when its `(source key, nonce)` was already seen while it
//! could still be accepted. The seen-set is bounded: when it is full, new requests are refused
//! (`Full`) rather than forgetting entries that could still be replayed.
//!
//! ```
//! use std::time::Duration;
//! use skytower_transports::dmsg::replay::{ReplayError, ReplayGuard};
//! use skytower_transports::identity::SecretKey;
//!
//! let guard = ReplayGuard::new(Duration::from_secs(30), 1024);
//! let src = SecretKey::generate().unwrap().public_key();
//! let now = 1_700_000_000_000;
//! assert!(guard.check_at(&src, &[1; 16], now, now).is_ok());
//! assert_eq!(guard.check_at(&src, &[1; 16], now, now), Err(ReplayError::Replay));
//! assert_eq!(guard.check_at(&src, &[2; 16], now - 31_000, now), Err(ReplayError::Stale));
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::identity::PublicKey;

/// Why a request failed the replay check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The timestamp is outside the acceptance window.
    #[error("request timestamp outside the replay window")]
    Stale,
    /// `(source, nonce)` was already seen.
    #[error("replayed request")]
    Replay,
    /// The seen-set is full.
    #[error("replay cache full")]
    Full,
}

/// A 64-bit fingerprint of `(source, nonce)` under a per-guard random SipHash key: 8 bytes per
/// entry instead of 80. With the default 65 536 entries a new request collides with a remembered
/// one with probability about 2^-48, and an attacker cannot aim for a collision without the key.
type Key = u64;

#[derive(Debug, Default)]
struct Seen {
    set: HashSet<Key, BuildNoHash>,
    /// Insertion order with the wall-clock millisecond after which each entry can go.
    order: VecDeque<(u64, Key)>,
}

/// A bounded set of recently seen `(source, nonce)` pairs with a timestamp window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    max: usize,
    hasher: std::hash::RandomState,
    seen: Mutex<Seen>,
}

/// The set's keys are already uniformly random fingerprints: hash them as themselves.
#[derive(Clone, Copy, Debug, Default)]
struct BuildNoHash;

#[derive(Default)]
struct NoHash(u64);

impl std::hash::Hasher for NoHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for BuildNoHash {
    type Hasher = NoHash;
    fn build_hasher(&self) -> NoHash {
        NoHash(0)
    }
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ReplayGuard {
    /// Accepts timestamps within ±`window` of the local clock; remembers at most `max` entries.
    pub fn new(window: Duration, max: usize) -> Self {
        ReplayGuard {
            window_ms: window.as_millis() as u64,
            max: max.max(1),
            hasher: std::hash::RandomState::new(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Like [`new`](Self::new), with all `max` entries allocated up front, so memory does not
    /// grow with traffic (what a relay server wants: about 24 bytes per entry plus table overhead,
    /// 2–3 MB for 65 536 entries).
    pub fn preallocated(window: Duration, max: usize) -> Self {
        let guard = Self::new(window, max);
        {
            let mut seen = guard.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.set.reserve(guard.max);
            seen.order.reserve(guard.max);
        }
        guard
    }

    /// Checks (and records) a request against the local wall clock.
    pub fn check(
        &self,
        src: &PublicKey,
        nonce: &[u8; 16],
        timestamp_ms: u64,
    ) -> Result<(), ReplayError> {
        self.check_at(src, nonce, timestamp_ms, unix_ms_now())
    }

    /// Checks (and records) a request as if the local clock read `now_ms`.
    pub fn check_at(
        &self,
        src: &PublicKey,
        nonce: &[u8; 16],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        if timestamp_ms.abs_diff(now_ms) > self.window_ms {
            return Err(ReplayError::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // A request with this timestamp stays acceptable until `timestamp + window`, which is at
        // most `now + 2 × window`; entries older than that can never match an acceptable request.
        while let Some((expiry, key)) = seen.order.front().copied() {
            if expiry > now_ms {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&key);
        }
        let key = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = self.hasher.build_hasher();
            h.write(src.as_bytes());
            h.write(nonce);
            h.finish()
        };
        if seen.set.contains(&key) {
            return Err(ReplayError::Replay);
        }
        if seen.set.len() >= self.max {
            return Err(ReplayError::Full);
        }
        seen.set.insert(key);
        seen.order
            .push_back((now_ms.saturating_add(2 * self.window_ms), key));
        Ok(())
    }

    /// Entries currently remembered.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn window_edges_are_inclusive() {
        let g = ReplayGuard::new(Duration::from_secs(30), 100);
        let pk = SecretKey::generate().unwrap().public_key();
        assert!(g.check_at(&pk, &[1; 16], NOW - 30_000, NOW).is_ok());
        assert!(g.check_at(&pk, &[2; 16], NOW + 30_000, NOW).is_ok());
        assert_eq!(
            g.check_at(&pk, &[3; 16], NOW - 30_001, NOW),
            Err(ReplayError::Stale)
        );
        assert_eq!(
            g.check_at(&pk, &[4; 16], NOW + 30_001, NOW),
            Err(ReplayError::Stale)
        );
    }

    #[test]
    fn same_nonce_other_source_is_fine_and_replays_are_caught_while_acceptable() {
        let g = ReplayGuard::new(Duration::from_secs(30), 100);
        let a = SecretKey::generate().unwrap().public_key();
        let b = SecretKey::generate().unwrap().public_key();
        assert!(g.check_at(&a, &[1; 16], NOW, NOW).is_ok());
        assert!(g.check_at(&b, &[1; 16], NOW, NOW).is_ok());
        // Replayed 29 s later, still within the window: caught.
        assert_eq!(
            g.check_at(&a, &[1; 16], NOW, NOW + 29_000),
            Err(ReplayError::Replay)
        );
        // 31 s later the timestamp itself is stale.
        assert_eq!(
            g.check_at(&a, &[1; 16], NOW, NOW + 31_000),
            Err(ReplayError::Stale)
        );
    }

    #[test]
    fn full_set_refuses_until_entries_expire() {
        let g = ReplayGuard::new(Duration::from_secs(1), 3);
        let a = SecretKey::generate().unwrap().public_key();
        for i in 0..3u8 {
            assert!(g.check_at(&a, &[i; 16], NOW, NOW).is_ok());
        }
        assert_eq!(g.check_at(&a, &[9; 16], NOW, NOW), Err(ReplayError::Full));
        assert_eq!(g.len(), 3);
        // After 2 × window every entry is gone and new requests are accepted.
        assert!(g.check_at(&a, &[9; 16], NOW + 2_000, NOW + 2_000).is_ok());
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn bounded_under_many_sources() {
        let g = ReplayGuard::new(Duration::from_secs(30), 1000);
        let a = SecretKey::generate().unwrap().public_key();
        let mut refused = 0;
        for i in 0..5000u32 {
            let mut nonce = [0u8; 16];
            nonce[..4].copy_from_slice(&i.to_be_bytes());
            if g.check_at(&a, &nonce, NOW, NOW) == Err(ReplayError::Full) {
                refused += 1;
            }
        }
        assert_eq!(g.len(), 1000);
        assert_eq!(refused, 4000);
    }
}
