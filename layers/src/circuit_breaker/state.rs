//! The shared per-key state machine and the [`BreakerHandle`] that reads and resets it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{CheckFuture, CheckReport, HealthCheck};

/// How many open keys a health report lists by name.
const HEALTH_KEYS_LISTED: usize = 16;

/// `now + duration`, saturating at about a century ahead instead of overflowing.
fn later(now: Instant, duration: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(duration.min(CENTURY))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// The state of one key's circuit, as reported by [`BreakerHandle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through. `consecutive_failures` counts failures since the last success; the
    /// circuit opens when it reaches the failure threshold.
    Closed {
        /// Failures since the last success (0 for a key the breaker does not track).
        consecutive_failures: u32,
    },
    /// Calls fail at once with [`CircuitOpen`](super::CircuitOpen) until `retry_after` has
    /// passed.
    Open {
        /// Time left until the open period ends and one probe call is let through.
        retry_after: Duration,
    },
    /// The open period has ended: the next call (or the one already in flight) is the single
    /// probe whose outcome closes or re-opens the circuit. Other calls still fail at once.
    HalfOpen,
}

impl CircuitState {
    /// `true` unless the circuit is [`Closed`](CircuitState::Closed).
    pub fn is_open(&self) -> bool {
        !matches!(self, CircuitState::Closed { .. })
    }
}

/// Configuration shared by every clone of one breaker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) failure_threshold: u32,
    pub(crate) open_duration: Duration,
    pub(crate) max_keys: usize,
    pub(crate) idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failure_threshold: 3,
            open_duration: Duration::from_secs(60),
            max_keys: 10_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Closed with at least one failure (healthy keys are not stored).
    Closed { failures: u32 },
    /// Open until `until`; once `until` has passed the next call becomes the probe.
    Open { until: Instant },
    /// The probe `probe` is in flight; `until` is the (elapsed) end of the open period.
    HalfOpen { until: Instant, probe: u64 },
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    /// Last time a call outcome changed this entry (drives idle expiry and LRU eviction).
    touched: Instant,
}

/// What [`Shared::admit`] decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Call the inner service; count the outcome if the circuit is still closed.
    Normal,
    /// Call the inner service as the single probe with this id.
    Probe(u64),
    /// Fail at once.
    Reject(Duration),
}

struct Table<K> {
    map: HashMap<K, Entry>,
    next_probe: u64,
    next_sweep: Instant,
}

/// The state every clone of a layer, its services, their futures and handles share.
pub(crate) struct Shared<K> {
    config: Config,
    /// Mirrors `table.map.len()` so healthy traffic skips the lock while no key is tracked.
    tracked: AtomicUsize,
    table: Mutex<Table<K>>,
}

impl<K> Shared<K> {
    pub(crate) fn new(config: Config) -> Self {
        Shared {
            config,
            tracked: AtomicUsize::new(0),
            table: Mutex::new(Table {
                map: HashMap::new(),
                next_probe: 0,
                next_sweep: later(Instant::now(), config.idle_timeout),
            }),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Table<K>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_len(&self, table: &Table<K>) {
        self.tracked.store(table.map.len(), Ordering::Release);
    }
}

impl<K> Shared<K>
where
    K: Clone + Eq + Hash + fmt::Debug,
{
    /// Decides whether a call for `key` may reach the inner service.
    pub(crate) fn admit(&self, key: &K) -> Admit {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return Admit::Normal;
        }
        let mut table = self.lock();
        let Table {
            map, next_probe, ..
        } = &mut *table;
        let Some(entry) = map.get_mut(key) else {
            return Admit::Normal;
        };
        match entry.phase {
            Phase::Closed { .. } => Admit::Normal,
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Admit::Reject(until - now);
                }
                *next_probe = next_probe.wrapping_add(1);
                let probe = *next_probe;
                entry.phase = Phase::HalfOpen { until, probe };
                tracing::debug!(?key, probe, "circuit half-open: letting one probe through");
                Admit::Probe(probe)
            }
            Phase::HalfOpen { .. } => Admit::Reject(Duration::ZERO),
        }
    }

    /// Records the outcome of a call admitted by [`admit`](Self::admit).
    pub(crate) fn record(&self, key: K, probe: Option<u64>, failure: bool) {
        if probe.is_none() && !failure && self.tracked.load(Ordering::Acquire) == 0 {
            // A success for an untracked (healthy) key: nothing to reset.
            return;
        }
        let mut table = self.lock();
        match probe {
            Some(id) => self.record_probe(&mut table, key, id, failure, Instant::now()),
            None if failure => self.record_failure(&mut table, key, Instant::now()),
            None => {
                if let Some(entry) = table.map.get(&key)
                    && matches!(entry.phase, Phase::Closed { .. })
                {
                    table.map.remove(&key);
                }
                // A success from a call admitted before the circuit opened does not close it:
                // only the probe decides.
            }
        }
        self.sync_len(&table);
    }

    fn record_probe(&self, table: &mut Table<K>, key: K, id: u64, failure: bool, now: Instant) {
        let Some(entry) = table.map.get_mut(&key) else {
            return; // reset or evicted while the probe was in flight
        };
        if !matches!(entry.phase, Phase::HalfOpen { probe, .. } if probe == id) {
            return; // a stale probe (the key was reset and re-opened meanwhile)
        }
        if failure {
            let until = later(now, self.config.open_duration);
            entry.phase = Phase::Open { until };
            entry.touched = now;
            tracing::warn!(?key, open_for = ?self.config.open_duration, "circuit re-opened: probe failed");
        } else {
            table.map.remove(&key);
            tracing::info!(?key, "circuit closed: probe succeeded");
        }
    }

    fn record_failure(&self, table: &mut Table<K>, key: K, now: Instant) {
        let idle = self.config.idle_timeout;
        if let Some(entry) = table.map.get_mut(&key) {
            let Phase::Closed { failures } = entry.phase else {
                // A call admitted before the circuit opened: the circuit is already open or
                // probing, and only the probe decides what happens next.
                return;
            };
            let failures = if now.duration_since(entry.touched) >= idle {
                1 // the earlier failures had expired
            } else {
                failures.saturating_add(1)
            };
            entry.touched = now;
            entry.phase = self.after_failures(&key, failures, now);
            return;
        }
        let phase = self.after_failures(&key, 1, now);
        self.make_room(table, now);
        table.map.insert(
            key,
            Entry {
                phase,
                touched: now,
            },
        );
    }

    /// The phase after `failures` consecutive failures.
    fn after_failures(&self, key: &K, failures: u32, now: Instant) -> Phase {
        if failures >= self.config.failure_threshold {
            tracing::warn!(
                ?key,
                failures,
                open_for = ?self.config.open_duration,
                "circuit opened"
            );
            Phase::Open {
                until: later(now, self.config.open_duration),
            }
        } else {
            Phase::Closed { failures }
        }
    }

    /// Makes room for one new entry: periodically drops idle entries, then, while the table is
    /// full, evicts per the documented policy.
    fn make_room(&self, table: &mut Table<K>, now: Instant) {
        if now >= table.next_sweep {
            self.sweep_idle(table, now);
            table.next_sweep = later(now, self.config.idle_timeout);
        }
        let max = self.config.max_keys;
        if table.map.len() < max {
            return;
        }
        // Least recently touched closed entries first, in batches of 1/64 of the capacity so
        // the O(n) scan is amortised over many insertions.
        let mut closed: Vec<(Instant, &K)> = table
            .map
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::Closed { .. }))
            .map(|(k, e)| (e.touched, k))
            .collect();
        let excess = table.map.len() + 1 - max;
        let victims: Vec<K> = if closed.is_empty() {
            // Every entry is open or probing: evict the one whose open period ends soonest.
            table
                .map
                .iter()
                .filter_map(|(k, e)| match e.phase {
                    Phase::Open { until } | Phase::HalfOpen { until, .. } => Some((until, k)),
                    Phase::Closed { .. } => None,
                })
                .min_by_key(|(until, _)| *until)
                .map(|(_, k)| k.clone())
                .into_iter()
                .collect()
        } else {
            let batch = (max / 64).max(excess).clamp(1, closed.len());
            if batch < closed.len() {
                closed.select_nth_unstable_by_key(batch - 1, |(t, _)| *t);
            }
            closed[..batch].iter().map(|(_, k)| (*k).clone()).collect()
        };
        for key in victims {
            if let Some(entry) = table.map.remove(&key) {
                match entry.phase {
                    Phase::Closed { .. } => {
                        tracing::debug!(?key, "circuit state evicted (table full)")
                    }
                    _ => tracing::warn!(?key, "open circuit evicted: every tracked key is open"),
                }
            }
        }
    }

    fn sweep_idle(&self, table: &mut Table<K>, now: Instant) {
        let idle = self.config.idle_timeout;
        table.map.retain(|_, e| {
            !(matches!(e.phase, Phase::Closed { .. }) && now.duration_since(e.touched) >= idle)
        });
    }

    fn state_of(&self, entry: &Entry, now: Instant) -> CircuitState {
        match entry.phase {
            Phase::Closed { failures } => CircuitState::Closed {
                consecutive_failures: if now.duration_since(entry.touched)
                    >= self.config.idle_timeout
                {
                    0
                } else {
                    failures
                },
            },
            Phase::Open { until } if now < until => CircuitState::Open {
                retry_after: until - now,
            },
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Releases the probe slot of a probe whose response future was dropped.
    pub(crate) fn release_probe(&self, key: K, id: u64) {
        let mut table = self.lock();
        if let Some(entry) = table.map.get_mut(&key)
            && let Phase::HalfOpen { until, probe } = entry.phase
            && probe == id
        {
            entry.phase = Phase::Open { until };
            tracing::debug!(?key, "probe dropped before completing: next call may probe");
        }
    }
}

/// A cloneable handle on one breaker's per-key state: read it, reset it, report it as a
/// [`HealthCheck`].
///
/// Every clone of a [`CircuitBreakerLayer`](super::CircuitBreakerLayer), of the services it
/// makes and of this handle shares the same state.
pub struct BreakerHandle<K> {
    pub(crate) shared: Arc<Shared<K>>,
}

impl<K> Clone for BreakerHandle<K> {
    fn clone(&self) -> Self {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for BreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("config", &self.shared.config)
            .field("tracked", &self.shared.tracked.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K> BreakerHandle<K>
where
    K: Clone + Eq + Hash + fmt::Debug,
{
    /// The state of `key`'s circuit. Untracked keys are `Closed { consecutive_failures: 0 }`.
    pub fn state(&self, key: &K) -> CircuitState {
        let now = Instant::now();
        let table = self.shared.lock();
        match table.map.get(key) {
            Some(entry) => self.shared.state_of(entry, now),
            None => CircuitState::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// The state of every tracked key (keys with failures, open or half-open), in no
    /// particular order. Healthy keys are not tracked and do not appear.
    pub fn snapshot(&self) -> Vec<(K, CircuitState)> {
        let now = Instant::now();
        let mut table = self.shared.lock();
        self.shared.sweep_idle(&mut table, now);
        self.shared.sync_len(&table);
        table
            .map
            .iter()
            .map(|(k, e)| (k.clone(), self.shared.state_of(e, now)))
            .collect()
    }

    /// Forgets everything about `key`: its circuit is closed with no failures. A probe in flight
    /// for it is ignored when it completes. Returns whether the key was tracked.
    pub fn reset(&self, key: &K) -> bool {
        let mut table = self.shared.lock();
        let was = table.map.remove(key).is_some();
        self.shared.sync_len(&table);
        if was {
            tracing::info!(?key, "circuit reset");
        }
        was
    }

    /// Closes every circuit and forgets every failure.
    pub fn reset_all(&self) {
        let mut table = self.shared.lock();
        table.map.clear();
        self.shared.sync_len(&table);
        tracing::info!("all circuits reset");
    }

    /// The number of tracked keys (at most `max_keys`), after dropping idle entries. O(n).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let mut table = self.shared.lock();
        self.shared.sweep_idle(&mut table, now);
        self.shared.sync_len(&table);
        table.map.len()
    }

    /// `true` when no key is tracked: every circuit is closed with no recent failure.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys whose circuit is open or half-open, with their state.
    pub fn open_keys(&self) -> Vec<(K, CircuitState)> {
        let now = Instant::now();
        let table = self.shared.lock();
        table
            .map
            .iter()
            .filter(|(_, e)| !matches!(e.phase, Phase::Closed { .. }))
            .map(|(k, e)| (k.clone(), self.shared.state_of(e, now)))
            .collect()
    }

    /// The health report: `ok` when no circuit is open, `degraded` when some are, never `down`
    /// (a few unreachable peers do not make this node unhealthy).
    ///
    /// Details: `open` (count of open or half-open keys), `tracked` (keys with state) and,
    /// when degraded, `keys`: up to 16 open keys rendered with `Debug`, sorted.
    pub fn report(&self) -> CheckReport {
        let open = self.open_keys();
        let tracked = self.shared.tracked.load(Ordering::Acquire);
        if open.is_empty() {
            return CheckReport::ok().with_details(serde_json::json!({
                "open": 0,
                "tracked": tracked,
            }));
        }
        let mut keys: Vec<String> = open.iter().map(|(k, _)| format!("{k:?}")).collect();
        keys.sort_unstable();
        keys.truncate(HEALTH_KEYS_LISTED);
        CheckReport::degraded(serde_json::json!({
            "open": open.len(),
            "tracked": tracked,
            "keys": keys,
        }))
    }
}

impl<K> HealthCheck for BreakerHandle<K>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + 'static,
{
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(std::future::ready(self.report()))
    }
}
