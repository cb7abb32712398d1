//! [`MemoryStore`]: the embedded store (bounded, TTL on the tokio clock).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use skytower_transports::dmsg::disc::Entry;
use skytower_transports::identity::PublicKey;
use tokio::time::Instant;

use super::{PutOutcome, Store, StoreConfig, StoreError, StoreFuture, StoreStats};

/// A live entry and its high-water mark (which cheap refreshes raise without touching `entry`).
#[derive(Debug)]
struct Record {
    entry: Entry,
    sequence: u64,
    timestamp: u64,
    expires: Instant,
}

// Nearly every slot is `Live`: boxing it would add an allocation and an indirection to every
// read for the sake of the rare, short-lived tombstones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Slot {
    Live(Record),
    Deleted { at: u64, expires: Instant },
}

impl Slot {
    fn expires(&self) -> Instant {
        match self {
            Slot::Live(r) => r.expires,
            Slot::Deleted { expires, .. } => *expires,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<PublicKey, Slot>,
    /// Server entries by free sessions, most first (`Reverse`), then key.
    servers: BTreeSet<(Reverse<u32>, PublicKey)>,
    clients: BTreeSet<PublicKey>,
}

impl Inner {
    fn index(&mut self, e: &Entry) {
        if let Some(s) = &e.server {
            self.servers
                .insert((Reverse(s.available_sessions), e.static_pk));
        }
        if e.client.is_some() {
            self.clients.insert(e.static_pk);
        }
    }

    fn unindex(&mut self, e: &Entry) {
        if let Some(s) = &e.server {
            self.servers
                .remove(&(Reverse(s.available_sessions), e.static_pk));
        }
        if e.client.is_some() {
            self.clients.remove(&e.static_pk);
        }
    }

    /// Removes the slot of `pk` (entry or tombstone) if it expired by `now`.
    fn expire(&mut self, pk: &PublicKey, now: Instant) {
        if self.slots.get(pk).is_some_and(|s| s.expires() <= now)
            && let Some(Slot::Live(r)) = self.slots.remove(pk)
        {
            self.unindex(&r.entry);
        }
    }

    fn purge(&mut self, now: Instant) -> usize {
        let expired: Vec<PublicKey> = self
            .slots
            .iter()
            .filter(|(_, s)| s.expires() <= now)
            .map(|(pk, _)| *pk)
            .collect();
        for pk in &expired {
            self.expire(pk, now);
        }
        expired.len()
    }

    fn live(&self, pk: &PublicKey, now: Instant) -> Option<&Entry> {
        match self.slots.get(pk) {
            Some(Slot::Live(r)) if r.expires > now => Some(&r.entry),
            _ => None,
        }
    }
}

/// The embedded store: a map behind one `RwLock` (reads in parallel; every write, including its
/// compare-and-set checks, under the write lock), server and client indexes kept beside it, and
/// expiry on the tokio clock (so tests can pause time).
///
/// Bounded: at most [`StoreConfig::max_entries`] entries and tombstones together; a new key
/// beyond that is refused with [`StoreError::Full`] (after purging expired ones).
///
/// ```
/// use skytower_services::dmsg_discovery::store::{MemoryStore, PutOutcome, Store, StoreConfig};
/// use skytower_transports::dmsg::disc::Entry;
/// use skytower_transports::identity::SecretKey;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = MemoryStore::new(StoreConfig::default());
/// let key = SecretKey::generate().unwrap();
/// let mut e = Entry::new_server(key.public_key(), "192.0.2.1:8081", 10);
/// e.sign(&key);
/// assert_eq!(store.put(e.clone()).await.unwrap(), PutOutcome::Created);
/// e.sequence += 1; // same content, newer sequence: a cheap refresh
/// e.sign(&key);
/// assert_eq!(store.put(e.clone()).await.unwrap(), PutOutcome::Unchanged);
/// assert!(store.put(e).await.is_err()); // the same sequence again is refused
/// assert_eq!(store.available_servers(512).await.unwrap().len(), 1);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
    config: StoreConfig,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        MemoryStore {
            inner: Arc::new(RwLock::new(Inner::default())),
            config: StoreConfig {
                max_entries: config.max_entries.max(1),
                ..config
            },
        }
    }

    /// Slots held now (live entries, tombstones, and expired ones not purged yet).
    pub fn slots(&self) -> usize {
        self.read().slots.len()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_now(&self, entry: Entry) -> Result<PutOutcome, StoreError> {
        let now = Instant::now();
        let expires = now + self.config.ttl_of(&entry);
        let pk = entry.static_pk;
        let mut inner = self.write();
        inner.expire(&pk, now);
        let outcome = match inner.slots.get_mut(&pk) {
            Some(Slot::Live(r)) => {
                if entry.sequence <= r.sequence {
                    return Err(StoreError::StaleSequence {
                        got: entry.sequence,
                        stored: r.sequence,
                    });
                }
                if entry.timestamp < r.timestamp {
                    return Err(StoreError::OlderTimestamp {
                        got: entry.timestamp,
                        stored: r.timestamp,
                    });
                }
                r.sequence = entry.sequence;
                r.timestamp = entry.timestamp;
                r.expires = expires;
                if r.entry.same_content(&entry) {
                    return Ok(PutOutcome::Unchanged);
                }
                PutOutcome::Updated
            }
            Some(Slot::Deleted { at, .. }) => {
                if entry.timestamp <= *at {
                    return Err(StoreError::Deleted { deleted_at: *at });
                }
                PutOutcome::Created
            }
            None => {
                if inner.slots.len() >= self.config.max_entries {
                    inner.purge(now);
                    if inner.slots.len() >= self.config.max_entries {
                        return Err(StoreError::Full(self.config.max_entries));
                    }
                }
                PutOutcome::Created
            }
        };
        let record = Record {
            sequence: entry.sequence,
            timestamp: entry.timestamp,
            expires,
            entry,
        };
        if let Some(Slot::Live(old)) = inner.slots.remove(&pk) {
            inner.unindex(&old.entry);
        }
        inner.index(&record.entry);
        inner.slots.insert(pk, Slot::Live(record));
        Ok(outcome)
    }

    fn delete_now(&self, pk: PublicKey, timestamp: u64) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.write();
        inner.expire(&pk, now);
        match inner.slots.get(&pk) {
            None => return Err(StoreError::NotFound(pk)),
            Some(Slot::Deleted { at, .. }) => {
                return Err(if timestamp <= *at {
                    StoreError::StaleDelete {
                        got: timestamp,
                        stored: *at,
                    }
                } else {
                    StoreError::NotFound(pk)
                });
            }
            Some(Slot::Live(r)) if timestamp <= r.timestamp => {
                return Err(StoreError::StaleDelete {
                    got: timestamp,
                    stored: r.timestamp,
                });
            }
            Some(Slot::Live(_)) => {}
        }
        let tomb = Slot::Deleted {
            at: timestamp,
            expires: now + self.config.tombstone_ttl,
        };
        if let Some(Slot::Live(r)) = inner.slots.insert(pk, tomb) {
            inner.unindex(&r.entry);
        }
        Ok(())
    }

    fn servers_now(&self, limit: usize, only_available: bool) -> Vec<Entry> {
        let now = Instant::now();
        let inner = self.read();
        inner
            .servers
            .iter()
            .take_while(|(Reverse(free), _)| !only_available || *free > 0)
            .filter_map(|(_, pk)| inner.live(pk, now))
            .take(limit)
            .cloned()
            .collect()
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn get(&self, pk: PublicKey) -> StoreFuture<'_, Option<Entry>> {
        let e = self.read().live(&pk, Instant::now()).cloned();
        Box::pin(std::future::ready(Ok(e)))
    }

    fn put(&self, entry: Entry) -> StoreFuture<'_, PutOutcome> {
        Box::pin(std::future::ready(self.put_now(entry)))
    }

    fn delete(&self, pk: PublicKey, timestamp: u64) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(self.delete_now(pk, timestamp)))
    }

    fn available_servers(&self, limit: usize) -> StoreFuture<'_, Vec<Entry>> {
        Box::pin(std::future::ready(Ok(self.servers_now(limit, true))))
    }

    fn all_servers(&self, limit: usize) -> StoreFuture<'_, Vec<Entry>> {
        Box::pin(std::future::ready(Ok(self.servers_now(limit, false))))
    }

    fn client_keys(&self, limit: usize) -> StoreFuture<'_, Vec<PublicKey>> {
        let now = Instant::now();
        let inner = self.read();
        let keys = inner
            .clients
            .iter()
            .filter(|pk| inner.live(pk, now).is_some())
            .take(limit)
            .copied()
            .collect();
        Box::pin(std::future::ready(Ok(keys)))
    }

    fn purge_expired(&self) -> StoreFuture<'_, usize> {
        let n = self.write().purge(Instant::now());
        Box::pin(std::future::ready(Ok(n)))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        let inner = self.read();
        let stats = StoreStats {
            servers: inner.servers.len() as u64,
            clients: inner.clients.len() as u64,
        };
        Box::pin(std::future::ready(Ok(stats)))
    }
}
