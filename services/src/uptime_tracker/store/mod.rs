//! Where heartbeats are accounted: the [`UptimeStore`] trait, the embedded [`MemoryUptimeStore`]
//! (default) and the [`RedisUptimeStore`] (shared by several tracker instances).
//!
//! A store keeps, per node, the time of its last heartbeat, its version, and one counter per UTC
//! day of the milliseconds it was online that day. [`UptimeStore::heartbeat`] is one atomic
//! read-modify-write (a Lua script on Redis): it credits the time since the node's previous
//! heartbeat, capped at [`Accounting::credit_cap`], to the days that time spans
//! ([`credit`]), then records the new heartbeat. Both stores judge time by the `now_ms` the
//! tracker passes (its [`WallClock`](super::WallClock)), so tests can drive them.
//!
//! **Retention:** a node whose last heartbeat is older than [`Accounting::retention`] is gone
//! (never returned; Redis expires its keys natively with `PEXPIRE`, the embedded store frees it
//! on [`purge`](UptimeStore::purge)); day counters older than the retention are never returned
//! and are dropped as the node keeps heartbeating.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use skytower_transports::identity::PublicKey;

use super::clock::{DAY_MS, Day, DayRange};
use crate::api::ApiError;

mod memory;
mod redis;

pub use memory::MemoryUptimeStore;
pub use redis::RedisUptimeStore;

/// The future of a store operation.
pub type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, UptimeStoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UptimeStoreError {
    /// The embedded store tracks its maximum number of nodes.
    #[error("store full: {0} nodes")]
    Full(usize),
    /// The backend (Redis) cannot be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend returned something this code did not write.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
}

impl From<UptimeStoreError> for ApiError {
    fn from(e: UptimeStoreError) -> Self {
        match e {
            UptimeStoreError::Full(_) => ApiError {
                retry_after: Some(Duration::from_secs(60)),
                ..ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "store_full",
                    e.to_string(),
                )
            },
            UptimeStoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            UptimeStoreError::Corrupt(_) => ApiError::internal(e),
        }
    }
}

/// The accounting rules a store applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accounting {
    /// Most time one heartbeat credits (the online threshold: 6 min).
    pub credit_cap: Duration,
    /// How long data is kept after it was written (default 30 days).
    pub retention: Duration,
    /// Most nodes the embedded store tracks (ignored by Redis).
    pub max_nodes: usize,
}

impl Default for Accounting {
    fn default() -> Self {
        Accounting {
            credit_cap: Duration::from_secs(6 * 60),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_nodes: 200_000,
        }
    }
}

impl Accounting {
    pub(crate) fn cap_ms(&self) -> u64 {
        millis(self.credit_cap)
    }

    pub(crate) fn retention_ms(&self) -> u64 {
        millis(self.retention).max(1)
    }

    /// The first day whose counters are still kept at `now_ms`.
    pub fn first_kept_day(&self, now_ms: u64) -> Day {
        Day::of_ms(now_ms.saturating_sub(self.retention_ms()))
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a heartbeat did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// Milliseconds of uptime credited by this heartbeat.
    pub credited_ms: u64,
    /// Whether the node had no live previous heartbeat (nothing to credit from).
    pub first: bool,
}

/// A node as stored: last heartbeat, version, and the day counters asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's key as stored: 64 lowercase hex characters (not re-validated when read
    /// back, which would cost tens of µs per key; the store only holds keys of verified
    /// heartbeats). Sorting these strings sorts by key bytes.
    pub pk: String,
    /// Unix milliseconds of its last heartbeat.
    pub last_heartbeat_ms: u64,
    /// The version its last heartbeat reported.
    pub version: String,
    /// Milliseconds online per day, for the days asked for that have any.
    pub daily_ms: BTreeMap<Day, u64>,
}

/// The credit of a heartbeat at `now_ms` after one at `last_ms`: the interval
/// `[last, last + min(now - last, cap))` split at UTC midnights, as `(day, milliseconds)`.
/// Nothing when `now <= last` (a clock step back credits nothing).
///
/// ```
/// use skytower_services::uptime_tracker::{Day, store::credit};
///
/// let day = Day::parse("2026-01-05").unwrap();
/// let midnight = day.next().start_ms();
/// // 2 min before midnight to 3 min after: split between the two days.
/// let pieces = credit(midnight - 120_000, midnight + 180_000, 360_000);
/// assert_eq!(pieces, vec![(day, 120_000), (day.next(), 180_000)]);
/// // A 20-minute gap credits at most the cap (6 min), from the previous heartbeat on.
/// assert_eq!(credit(midnight, midnight + 1_200_000, 360_000), vec![(day.next(), 360_000)]);
/// ```
pub fn credit(last_ms: u64, now_ms: u64, cap_ms: u64) -> Vec<(Day, u64)> {
    let mut out = Vec::new();
    if now_ms <= last_ms {
        return out;
    }
    let end = last_ms + (now_ms - last_ms).min(cap_ms);
    let mut at = last_ms;
    while at < end {
        let day = Day::of_ms(at);
        let piece_end = end.min((at / DAY_MS + 1) * DAY_MS);
        out.push((day, piece_end - at));
        at = piece_end;
    }
    out
}

/// A store of heartbeats and daily uptime (see the module docs).
#[allow(clippy::len_without_is_empty)] // `len` is async and counts only live nodes
pub trait UptimeStore: Send + Sync + std::fmt::Debug {
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;

    /// The accounting rules.
    fn accounting(&self) -> &Accounting;

    /// Records a heartbeat of `pk` at `now_ms` reporting `version`, crediting the time since
    /// its previous one (see [`credit`]). Atomic per node.
    fn heartbeat<'a>(
        &'a self,
        pk: &'a PublicKey,
        version: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, HeartbeatOutcome>;

    /// The live node `pk` with its counters for `days`.
    fn node<'a>(
        &'a self,
        pk: &'a PublicKey,
        days: DayRange,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<NodeRecord>>;

    /// The live nodes among `keys` (every live node when `None`), with their counters for
    /// `days`, sorted by key. At most `limit` nodes (the most recently seen ones); the flag
    /// says whether more were left out.
    fn nodes<'a>(
        &'a self,
        keys: Option<&'a [PublicKey]>,
        days: DayRange,
        now_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, (Vec<NodeRecord>, bool)>;

    /// Frees nodes and counters past the retention; how many nodes were removed.
    fn purge(&self, now_ms: u64) -> StoreFuture<'_, usize>;

    /// The number of live nodes.
    fn len(&self, now_ms: u64) -> StoreFuture<'_, usize>;

    /// Where the heartbeat verifier remembers nonces so every instance sharing this store sees
    /// them (see [`TtlStore::shared_nonces`](crate::ttl_store::TtlStore::shared_nonces)):
    /// `Some` for Redis, `None` (the default) for the embedded store.
    fn shared_nonces(&self) -> Option<std::sync::Arc<dyn crate::auth::SharedNonces>> {
        None
    }
}

/// The behaviour every [`UptimeStore`] must have, run against both implementations by their
/// tests. The stores are built with [`suite::accounting`] (6 min cap, retention given per
/// test); `now_ms` is passed explicitly, so the accounting tests need no clock.
#[doc(hidden)]
pub mod suite {
    use std::future::Future;
    use std::time::Duration;

    use skytower_transports::identity::{PublicKey, SecretKey};

    use super::{Accounting, UptimeStore};
    use crate::uptime_tracker::clock::{DAY_MS, Day, DayRange};

    /// 2026-01-05 00:00 UTC.
    pub const MONDAY: u64 = 1_767_571_200_000;
    const MIN: u64 = 60_000;

    /// The rules the suite expects: 6 min cap, the given retention, 100 nodes.
    pub fn accounting(retention: Duration) -> Accounting {
        Accounting {
            credit_cap: Duration::from_secs(360),
            retention,
            max_nodes: 100,
        }
    }

    fn pk() -> PublicKey {
        SecretKey::generate().expect("random key").public_key()
    }

    fn hex(keys: &[PublicKey]) -> Vec<String> {
        keys.iter().map(ToString::to_string).collect()
    }

    fn ids(records: &[super::NodeRecord]) -> Vec<String> {
        records.iter().map(|r| r.pk.clone()).collect()
    }

    fn week(now: u64) -> DayRange {
        let today = Day::of_ms(now);
        DayRange {
            from: today.minus(6),
            to: today,
        }
    }

    /// Heartbeats credit the capped time since the previous one, split at midnight; the first
    /// credits nothing; a step back credits nothing; the version follows the last heartbeat.
    /// (Retention must be at least 30 days.)
    pub async fn accounting_rules(store: &dyn UptimeStore) {
        let a = pk();
        let d0 = Day::of_ms(MONDAY);
        let t0 = MONDAY + DAY_MS - 2 * MIN; // 23:58 on day 0
        let first = store.heartbeat(&a, "1.0.0", t0).await.unwrap();
        assert_eq!((first.credited_ms, first.first), (0, true));
        // 23:58 → 00:03: 2 min on day 0, 3 min on day 1.
        let hb = store.heartbeat(&a, "1.0.0", t0 + 5 * MIN).await.unwrap();
        assert_eq!((hb.credited_ms, hb.first), (5 * MIN, false));
        // 00:03 → 00:23 (a 20 min gap): 6 min credited, from 00:03.
        let hb = store.heartbeat(&a, "1.0.1", t0 + 25 * MIN).await.unwrap();
        assert_eq!(hb.credited_ms, 6 * MIN);
        // A step back credits nothing and is recorded as the last heartbeat.
        let hb = store.heartbeat(&a, "1.0.1", t0 + 24 * MIN).await.unwrap();
        assert_eq!(hb.credited_ms, 0);
        // Ten heartbeats 10 s apart credit 100 s, not ten caps.
        let mut at = t0 + 24 * MIN;
        for _ in 0..10 {
            at += 10_000;
            store.heartbeat(&a, "1.0.2", at).await.unwrap();
        }
        let now = at;
        let rec = store.node(&a, week(now), now).await.unwrap().unwrap();
        assert_eq!(rec.pk, a.to_string());
        assert_eq!(rec.version, "1.0.2");
        assert_eq!(rec.last_heartbeat_ms, now);
        assert_eq!(
            rec.daily_ms.into_iter().collect::<Vec<_>>(),
            vec![(d0, 2 * MIN), (d0.next(), 3 * MIN + 6 * MIN + 100_000)]
        );
        // Only the days asked for.
        let only_d0 = DayRange { from: d0, to: d0 };
        let rec = store.node(&a, only_d0, now).await.unwrap().unwrap();
        assert_eq!(rec.daily_ms.len(), 1);
        assert_eq!(store.node(&pk(), week(now), now).await.unwrap(), None);
    }

    /// Listing: by keys (unknown keys skipped), everything, sorted by key, bounded by `limit`
    /// keeping the most recently seen.
    pub async fn listing(store: &dyn UptimeStore) {
        let keys: Vec<PublicKey> = (0..5).map(|_| pk()).collect();
        for (i, k) in keys.iter().enumerate() {
            store
                .heartbeat(k, "v", MONDAY + i as u64 * MIN)
                .await
                .unwrap();
        }
        let now = MONDAY + 10 * MIN;
        let range = week(now);
        let (all, truncated) = store.nodes(None, range, now, 100).await.unwrap();
        assert!(!truncated);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(ids(&all), hex(&sorted));
        let (some, truncated) = store.nodes(None, range, now, 2).await.unwrap();
        assert!(truncated);
        let mut newest = vec![keys[3], keys[4]];
        newest.sort();
        assert_eq!(ids(&some), hex(&newest));
        let wanted = [keys[1], pk(), keys[0]];
        let (picked, truncated) = store.nodes(Some(&wanted), range, now, 100).await.unwrap();
        assert!(!truncated);
        let mut expect = vec![keys[0], keys[1]];
        expect.sort();
        assert_eq!(ids(&picked), hex(&expect));
        assert_eq!(store.len(now).await.unwrap(), 5);
    }

    /// Retention: a silent node disappears after it (never returned, then purged); a node that
    /// keeps heartbeating stays, and its counters older than the retention are not returned.
    /// `retention` is short (seconds); `advance` moves the store's clock by at least the given
    /// duration (a no-op for the embedded store, whose clock is `now_ms`; a real sleep for
    /// Redis, whose native key expiry runs on its own clock). Returns nothing; panics on a
    /// violation.
    pub async fn retention<F, Fut>(store: &dyn UptimeStore, retention: Duration, advance: F)
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        let ret = super::millis(retention);
        let silent = pk();
        let busy = pk();
        let t0 = MONDAY;
        store.heartbeat(&silent, "v", t0).await.unwrap();
        store.heartbeat(&busy, "v", t0).await.unwrap();
        advance(retention / 2).await;
        let t1 = t0 + ret / 2;
        store.heartbeat(&busy, "v", t1).await.unwrap();
        assert_eq!(store.len(t1).await.unwrap(), 2);
        advance(retention / 2 + retention / 4).await;
        let t2 = t0 + ret + ret / 4;
        // `silent` is past the retention, `busy` is not.
        assert_eq!(store.node(&silent, week(t2), t2).await.unwrap(), None);
        assert!(store.node(&busy, week(t2), t2).await.unwrap().is_some());
        let (live, _) = store.nodes(None, week(t2), t2, 100).await.unwrap();
        assert_eq!(ids(&live), hex(&[busy]));
        let (picked, _) = store
            .nodes(Some(&[silent]), week(t2), t2, 100)
            .await
            .unwrap();
        assert!(picked.is_empty());
        store.purge(t2).await.unwrap();
        assert_eq!(store.len(t2).await.unwrap(), 1);
        // A new heartbeat of the expired node starts afresh: nothing credited from before.
        let again = store.heartbeat(&silent, "v", t2).await.unwrap();
        assert_eq!((again.credited_ms, again.first), (0, true));
    }

    /// Counters of days older than the retention are not returned (retention of 2 days).
    pub async fn old_days_are_dropped(store: &dyn UptimeStore) {
        let a = pk();
        let d0 = Day::of_ms(MONDAY);
        // Day 0: 23:54 → 24:00 (6 min).
        let t = MONDAY + DAY_MS - 6 * MIN;
        store.heartbeat(&a, "v", t).await.unwrap();
        store.heartbeat(&a, "v", t + 6 * MIN).await.unwrap();
        // Heartbeats every 5 min keep it alive for 3 days.
        let mut at = t + 6 * MIN;
        for _ in 0..(3 * 288) {
            at += 5 * MIN;
            store.heartbeat(&a, "v", at).await.unwrap();
        }
        let range = DayRange {
            from: d0,
            to: Day::of_ms(at),
        };
        let rec = store.node(&a, range, at).await.unwrap().unwrap();
        assert!(
            !rec.daily_ms.contains_key(&d0),
            "day 0 is past the 2-day retention: {:?}",
            rec.daily_ms
        );
        assert_eq!(rec.daily_ms.get(&Day(d0.0 + 2)), Some(&DAY_MS));
        store.purge(at).await.unwrap();
        let rec = store.node(&a, range, at).await.unwrap().unwrap();
        assert!(!rec.daily_ms.contains_key(&d0));
        assert_eq!(rec.daily_ms.get(&Day(d0.0 + 3)), Some(&DAY_MS));
    }
}
