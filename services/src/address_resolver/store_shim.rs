//! PROVISIONAL: a stand-in for `crate::ttl_store` (being written on main), with the API of its
//! sketch, so the UDP side can be built and tested first. Replaced by the shared store on merge.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Boxed future of the store.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Full.
    #[error("store full ({0} records)")]
    Full(usize),
    /// Unreachable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A TTL store of opaque records.
pub trait TtlStore: Send + Sync {
    /// Upsert with TTL and indexes.
    fn put<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
    ) -> StoreFuture<'a, ()>;
    /// Get a live record.
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Delete.
    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Live records with an index.
    fn by_index<'a>(&'a self, index: &'a str) -> StoreFuture<'a, Vec<(String, Vec<u8>)>>;
    /// Purge.
    fn purge_expired(&self) -> StoreFuture<'_, usize>;
    /// Live count.
    fn len(&self) -> StoreFuture<'_, usize>;
}

struct Rec {
    value: Vec<u8>,
    expires: Instant,
    indexes: Vec<String>,
}

/// Memory implementation.
pub struct MemoryTtlStore {
    max: usize,
    map: Mutex<HashMap<String, Rec>>,
}

impl MemoryTtlStore {
    /// At most `max` records.
    pub fn new(max: usize) -> Self {
        MemoryTtlStore {
            max,
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl TtlStore for MemoryTtlStore {
    fn put<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if !m.contains_key(id) && m.len() >= self.max {
                m.retain(|_, r| r.expires > now);
                if m.len() >= self.max {
                    return Err(StoreError::Full(self.max));
                }
            }
            m.insert(
                id.to_owned(),
                Rec {
                    value,
                    expires: now + ttl,
                    indexes: indexes.to_vec(),
                },
            );
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            Ok(m.get(id)
                .filter(|r| r.expires > Instant::now())
                .map(|r| r.value.clone()))
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            Ok(m.remove(id).is_some_and(|r| r.expires > Instant::now()))
        })
    }

    fn by_index<'a>(&'a self, index: &'a str) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(async move {
            let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            Ok(m.iter()
                .filter(|(_, r)| r.expires > now && r.indexes.iter().any(|i| i == index))
                .map(|(k, r)| (k.clone(), r.value.clone()))
                .collect())
        })
    }

    fn purge_expired(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let before = m.len();
            let now = Instant::now();
            m.retain(|_, r| r.expires > now);
            Ok(before - m.len())
        })
    }

    fn len(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            Ok(m.values().filter(|r| r.expires > now).count())
        })
    }
}
