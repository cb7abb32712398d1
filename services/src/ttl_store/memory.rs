//! [`MemoryTtlStore`]: the embedded store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{PutBounds, Record, TtlStore, TtlStoreError, TtlStoreFuture};

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
    indexes: Vec<String>,
}

/// A set of ids with O(1) insert, remove and random access (for sampling).
#[derive(Debug, Default)]
struct IdSet {
    ids: Vec<String>,
    positions: HashMap<String, usize>,
}

impl IdSet {
    fn insert(&mut self, id: &str) {
        if !self.positions.contains_key(id) {
            self.positions.insert(id.to_owned(), self.ids.len());
            self.ids.push(id.to_owned());
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(at) = self.positions.remove(id) {
            self.ids.swap_remove(at);
            if let Some(moved) = self.ids.get(at) {
                self.positions.insert(moved.clone(), at);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, Entry>,
    index: HashMap<String, IdSet>,
    /// Every record by expiry, so purging costs O(expired · log n), not a scan.
    by_expiry: BTreeSet<(Instant, String)>,
}

impl Inner {
    fn unindex(&mut self, id: &str, indexes: &[String]) {
        for name in indexes {
            if let Some(set) = self.index.get_mut(name) {
                set.remove(id);
                if set.is_empty() {
                    self.index.remove(name);
                }
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.records.remove(id)?;
        self.by_expiry.remove(&(entry.expires, id.to_owned()));
        self.unindex(id, &entry.indexes);
        Some(entry)
    }

    fn purge(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some((expires, id)) = self.by_expiry.first().cloned() {
            if expires > now {
                break;
            }
            self.remove(&id);
            removed += 1;
        }
        removed
    }
}

/// The embedded [`TtlStore`]: a map behind a mutex, at most `max_records` records (expired ones
/// are purged to make room before a put is refused with [`TtlStoreError::Full`]).
#[derive(Debug)]
pub struct MemoryTtlStore {
    max_records: usize,
    inner: Mutex<Inner>,
}

impl MemoryTtlStore {
    /// An empty store holding at most `max_records` records.
    pub fn new(max_records: usize) -> Self {
        MemoryTtlStore {
            max_records,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation leaves the maps inconsistent midway, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_now(
        &self,
        id: &str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &[String],
        bounds: Option<PutBounds<'_>>,
    ) -> Result<bool, TtlStoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let live = inner.records.get(id).is_some_and(|e| e.expires > now);
        if let (Some(b), false) = (bounds, live) {
            // After a purge (which visits only expired records) every count is of live ones.
            inner.purge(now);
            let in_index = inner.index.get(b.index).map_or(0, |ids| ids.ids.len());
            if in_index >= b.max_in_index {
                return Err(TtlStoreError::IndexFull {
                    index: b.index.to_owned(),
                    max: b.max_in_index,
                });
            }
            if inner.records.len() >= b.max_records {
                return Err(TtlStoreError::Full(b.max_records));
            }
        }
        if let Some(old) = inner.remove(id) {
            drop(old);
        } else if inner.records.len() >= self.max_records
            && inner.purge(now) == 0
            && inner.records.len() >= self.max_records
        {
            return Err(TtlStoreError::Full(self.max_records));
        }
        let mut unique = indexes.to_vec();
        unique.sort();
        unique.dedup();
        for name in &unique {
            inner.index.entry(name.clone()).or_default().insert(id);
        }
        inner.by_expiry.insert((now + ttl, id.to_owned()));
        inner.records.insert(
            id.to_owned(),
            Entry {
                value,
                expires: now + ttl,
                indexes: unique,
            },
        );
        Ok(!live)
    }

    fn live<'a>(
        inner: &'a Inner,
        ids: impl Iterator<Item = &'a String> + 'a,
        now: Instant,
    ) -> Vec<Record> {
        ids.filter_map(|id| {
            let e = inner.records.get(id)?;
            (e.expires > now).then(|| (id.clone(), e.value.clone()))
        })
        .collect()
    }
}

impl TtlStore for MemoryTtlStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
    ) -> TtlStoreFuture<'a, ()> {
        let result = self.put_now(id, value, ttl, indexes, None).map(drop);
        Box::pin(async move { result })
    }

    fn put_bounded<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
        bounds: PutBounds<'a>,
    ) -> TtlStoreFuture<'a, bool> {
        let result = self.put_now(id, value, ttl, indexes, Some(bounds));
        Box::pin(async move { result })
    }

    fn get<'a>(&'a self, id: &'a str) -> TtlStoreFuture<'a, Option<Vec<u8>>> {
        let now = Instant::now();
        let value = self
            .lock()
            .records
            .get(id)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone());
        Box::pin(async move { Ok(value) })
    }

    fn delete<'a>(&'a self, id: &'a str) -> TtlStoreFuture<'a, bool> {
        let now = Instant::now();
        let removed = self.lock().remove(id).is_some_and(|e| e.expires > now);
        Box::pin(async move { Ok(removed) })
    }

    fn by_index<'a>(&'a self, index: &'a str) -> TtlStoreFuture<'a, Vec<Record>> {
        let now = Instant::now();
        let inner = self.lock();
        let records = match inner.index.get(index) {
            Some(set) => Self::live(&inner, set.ids.iter(), now),
            None => Vec::new(),
        };
        drop(inner);
        Box::pin(async move { Ok(records) })
    }

    fn sample_index<'a>(&'a self, index: &'a str, n: usize) -> TtlStoreFuture<'a, Vec<Record>> {
        let now = Instant::now();
        let inner = self.lock();
        let mut out = Vec::with_capacity(n.min(64));
        if let Some(set) = inner.index.get(index) {
            // A lazy Fisher-Yates shuffle of the positions: each step draws one not drawn yet,
            // until `n` live records are found or the index is exhausted (expired records, not
            // yet purged, are skipped).
            let mut swapped: HashMap<usize, usize> = HashMap::new();
            let len = set.ids.len();
            let mut rng = rand::rng();
            for i in 0..len {
                if out.len() == n {
                    break;
                }
                let j = rand::Rng::random_range(&mut rng, i..len);
                let pick = *swapped.get(&j).unwrap_or(&j);
                let at_i = *swapped.get(&i).unwrap_or(&i);
                swapped.insert(j, at_i);
                let id = &set.ids[pick];
                if let Some(e) = inner.records.get(id).filter(|e| e.expires > now) {
                    out.push((id.clone(), e.value.clone()));
                }
            }
        }
        drop(inner);
        Box::pin(async move { Ok(out) })
    }

    fn all(&self) -> TtlStoreFuture<'_, Vec<Record>> {
        let now = Instant::now();
        let inner = self.lock();
        let records = Self::live(&inner, inner.records.keys(), now);
        drop(inner);
        Box::pin(async move { Ok(records) })
    }

    fn purge_expired(&self) -> TtlStoreFuture<'_, usize> {
        let removed = self.lock().purge(Instant::now());
        Box::pin(async move { Ok(removed) })
    }

    fn len(&self) -> TtlStoreFuture<'_, usize> {
        // Purging first makes the count exact and cheap (only the expired are visited).
        let mut inner = self.lock();
        inner.purge(Instant::now());
        let n = inner.records.len();
        drop(inner);
        Box::pin(async move { Ok(n) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl_store::suite;

    #[tokio::test(start_paused = true)]
    async fn crud() {
        suite::crud(&MemoryTtlStore::new(100)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_with_paused_time() {
        suite::expiry(
            &MemoryTtlStore::new(100),
            Duration::from_secs(300),
            tokio::time::advance,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_puts() {
        suite::bounded(&MemoryTtlStore::new(100), tokio::time::advance).await;
    }

    #[tokio::test(start_paused = true)]
    async fn sampling() {
        suite::sampling(&MemoryTtlStore::new(100), tokio::time::advance).await;
    }

    #[tokio::test(start_paused = true)]
    async fn full_store_refuses_new_records_until_some_expire() {
        let store = MemoryTtlStore::new(2);
        let ttl = Duration::from_secs(10);
        store.put("a", vec![], ttl, &[]).await.unwrap();
        store.put("b", vec![], ttl * 2, &[]).await.unwrap();
        assert_eq!(
            store.put("c", vec![], ttl, &[]).await,
            Err(TtlStoreError::Full(2))
        );
        // Updating an existing record is always allowed.
        store.put("a", b"new".to_vec(), ttl, &[]).await.unwrap();
        tokio::time::advance(ttl).await;
        // `a` expired: its room is reclaimed for `c`.
        store.put("c", vec![], ttl, &[]).await.unwrap();
        assert_eq!(store.len().await.unwrap(), 2);
    }
}
