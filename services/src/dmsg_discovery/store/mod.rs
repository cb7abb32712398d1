//! Where entries live: the [`Store`] trait and its two implementations, [`MemoryStore`]
//! (embedded, the default) and [`RedisStore`] (shared by several discovery instances).
//!
//! A store receives entries that the API has already validated and verified (shape, signature,
//! timestamp window, loopback policy); it owns everything that depends on what is stored:
//!
//! - **compare-and-set**: an update must carry a sequence greater than, and a timestamp not older
//!   than, the stored high-water mark, checked and written atomically (one lock in memory, one
//!   Lua script in Redis), so concurrent updates never lose the highest one;
//! - **cheap refresh**: an entry whose content ([`Entry::same_content`]) equals the stored one
//!   only raises the high-water mark and renews the TTL: the served entry and the indexes are
//!   not rewritten ([`PutOutcome::Unchanged`]);
//! - **TTL** by kind (an entry with a server section lives [`StoreConfig::server_ttl`], a client
//!   entry [`StoreConfig::client_ttl`]): an expired entry is never returned, and
//!   [`Store::purge_expired`] removes what is left of it (the service calls it periodically);
//! - **tombstones**: a delete leaves the delete's timestamp for [`StoreConfig::tombstone_ttl`]
//!   (the API's timestamp window), so neither the delete nor the deleted entry can be replayed
//!   while their timestamps would still pass the window.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use skytower_transports::dmsg::disc::Entry;
use skytower_transports::identity::PublicKey;

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore};

/// TTLs and bounds shared by both stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Lifetime of an entry with a server section (default 2 min; servers refresh every minute).
    pub server_ttl: Duration,
    /// Lifetime of a client-only entry (default 60 min; clients re-announce every 30 min).
    pub client_ttl: Duration,
    /// How long a delete is remembered (default 2 min: twice the API's timestamp window).
    pub tombstone_ttl: Duration,
    /// Most entries (and tombstones) the embedded store holds; Redis is bounded by its own
    /// `maxmemory` instead.
    pub max_entries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            server_ttl: Duration::from_secs(120),
            client_ttl: Duration::from_secs(3600),
            tombstone_ttl: Duration::from_secs(120),
            max_entries: 100_000,
        }
    }
}

impl StoreConfig {
    /// The TTL of `entry` (server entries are the short-lived kind).
    pub fn ttl_of(&self, entry: &Entry) -> Duration {
        if entry.server.is_some() {
            self.server_ttl
        } else {
            self.client_ttl
        }
    }
}

/// What a successful [`Store::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// No live entry existed for the key.
    Created,
    /// The content changed: the entry and the indexes were rewritten.
    Updated,
    /// Same content, newer sequence: only the high-water mark and the TTL were renewed.
    Unchanged,
}

impl PutOutcome {
    /// The word the API answers with (`created`, `updated`, `unchanged`).
    pub const fn as_str(self) -> &'static str {
        match self {
            PutOutcome::Created => "created",
            PutOutcome::Updated => "updated",
            PutOutcome::Unchanged => "unchanged",
        }
    }
}

/// Why a store refused or failed an operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The sequence is not greater than the stored one (a replay, or a lost race).
    #[error("sequence {got} is not greater than the stored sequence {stored}")]
    StaleSequence {
        /// The refused sequence.
        got: u64,
        /// The stored high-water sequence.
        stored: u64,
    },
    /// The timestamp is older than the stored one.
    #[error("timestamp {got} is older than the stored timestamp {stored}")]
    OlderTimestamp {
        /// The refused timestamp.
        got: u64,
        /// The stored high-water timestamp.
        stored: u64,
    },
    /// The key's entry was deleted by a delete at least as new as this entry.
    #[error("the entry was deleted at {deleted_at}; a new entry must have a later timestamp")]
    Deleted {
        /// The delete's timestamp.
        deleted_at: u64,
    },
    /// A delete not newer than the stored entry (or than an earlier delete): a replay.
    #[error("delete timestamp {got} is not newer than {stored}")]
    StaleDelete {
        /// The delete's timestamp.
        got: u64,
        /// The stored entry's (or the earlier delete's) timestamp.
        stored: u64,
    },
    /// No live entry for the key.
    #[error("no entry for {0}")]
    NotFound(PublicKey),
    /// The embedded store is at its bound.
    #[error("the store is full ({0} entries)")]
    Full(usize),
    /// The backend cannot be reached (Redis down); the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend holds data this service cannot read.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Counts reported by [`Store::stats`] (for `/health`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Indexed server entries (may include expired ones not purged yet, in Redis).
    pub servers: u64,
    /// Indexed client keys (likewise).
    pub clients: u64,
}

/// One entry as JSON text, exactly as the HTTP API sends it (`{"static": ..., "server": ...}`).
pub type EntryJson = Box<serde_json::value::RawValue>;

/// A boxed future returned by [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Storage of discovery entries. Implementations must make [`put`](Store::put) and
/// [`delete`](Store::delete) atomic per key (see the [module docs](self)).
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/health` (`memory`, `redis`).
    fn kind(&self) -> &'static str;
    /// The live entry of `pk`, if any.
    fn get(&self, pk: PublicKey) -> StoreFuture<'_, Option<Entry>>;
    /// Creates, updates or refreshes the entry (already verified by the caller).
    fn put(&self, entry: Entry) -> StoreFuture<'_, PutOutcome>;
    /// Deletes the entry of `pk` for a verified delete made at `timestamp` (unix ms), leaving a
    /// tombstone.
    fn delete(&self, pk: PublicKey, timestamp: u64) -> StoreFuture<'_, ()>;
    /// Live server entries with free sessions, most free first, at most `limit`.
    fn available_servers(&self, limit: usize) -> StoreFuture<'_, Vec<Entry>>;
    /// Live server entries (most free first), at most `limit`.
    fn all_servers(&self, limit: usize) -> StoreFuture<'_, Vec<Entry>>;
    /// [`available_servers`](Store::available_servers) as JSON texts: what the HTTP API sends.
    /// The default serialises the typed entries; a store that keeps entries as JSON (Redis)
    /// returns them as stored, without parsing them again (entries were verified when written).
    fn available_servers_json(&self, limit: usize) -> StoreFuture<'_, Vec<EntryJson>> {
        Box::pin(async move { to_json(&self.available_servers(limit).await?) })
    }
    /// [`all_servers`](Store::all_servers) as JSON texts (see
    /// [`available_servers_json`](Store::available_servers_json)).
    fn all_servers_json(&self, limit: usize) -> StoreFuture<'_, Vec<EntryJson>> {
        Box::pin(async move { to_json(&self.all_servers(limit).await?) })
    }
    /// Keys of live entries with a client section, at most `limit`.
    fn client_keys(&self, limit: usize) -> StoreFuture<'_, Vec<PublicKey>>;
    /// Removes expired entries, tombstones and index members; returns how many were removed.
    fn purge_expired(&self) -> StoreFuture<'_, usize>;
    /// Checks the backend (Redis: a round trip) and reports index sizes.
    fn stats(&self) -> StoreFuture<'_, StoreStats>;
}

/// Entries serialised one by one (the default of the `*_json` methods).
fn to_json(entries: &[Entry]) -> Result<Vec<EntryJson>, StoreError> {
    entries
        .iter()
        .map(|e| serde_json::value::to_raw_value(e).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_words() {
        assert_eq!(PutOutcome::Created.as_str(), "created");
        assert_eq!(PutOutcome::Updated.as_str(), "updated");
        assert_eq!(PutOutcome::Unchanged.as_str(), "unchanged");
    }
}
