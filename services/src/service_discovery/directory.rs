//! [`Directory`]: the service entries on a [`TtlStore`], with their id and index scheme.
//!
//! | what | scheme |
//! |---|---|
//! | record id | `<pk>:<port>` (one entry per address; re-registering it with another type moves it) |
//! | value | the [`ServiceEntry`] as JSON |
//! | indexes | `pk:<pk>`, `t:<type>`, `tc:<type>:<CC>`, `tv:<type>:<version>`, `tvc:<type>:<version>:<CC>` |
//!
//! Every query is therefore one sample of one index, whatever its filters: no entry is read,
//! decoded or filtered to answer it except the ones sampled. (Type names, versions and country codes
//! cannot contain `:`, so index names are unambiguous.)

use std::sync::Arc;
use std::time::Duration;

use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::PublicKey;

use super::model::{Registered, Registration, ServiceEntry, ServiceQuery};
use crate::ttl_store::{PutBounds, TtlStore, TtlStoreError};

/// Why a directory operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The caller already has `max` live entries and this address is not one of them.
    #[error(
        "{pk} already has {max} live service entries (the maximum); delete one or let it expire"
    )]
    TooManyEntries {
        /// The caller.
        pk: PublicKey,
        /// The limit.
        max: usize,
    },
    /// The store failed or is full.
    #[error(transparent)]
    Store(#[from] TtlStoreError),
}

/// The service directory over a [`TtlStore`] (see the module docs for the layout).
#[derive(Clone, Debug)]
pub struct Directory {
    store: Arc<dyn TtlStore>,
    ttl: Duration,
    max_per_key: usize,
    max_entries: usize,
}

fn index_names(entry: &ServiceEntry) -> Vec<String> {
    let (t, v) = (&entry.kind, &entry.version);
    let mut names = vec![
        format!("pk:{}", entry.address.pk),
        format!("t:{t}"),
        format!("tv:{t}:{v}"),
    ];
    if let Some(geo) = &entry.geo {
        let c = &geo.country;
        names.push(format!("tc:{t}:{c}"));
        names.push(format!("tvc:{t}:{v}:{c}"));
    }
    names
}

/// The index answering `query`.
fn query_index(query: &ServiceQuery) -> String {
    let t = &query.kind;
    match (&query.version, &query.country) {
        (None, None) => format!("t:{t}"),
        (Some(v), None) => format!("tv:{t}:{v}"),
        (None, Some(c)) => format!("tc:{t}:{c}"),
        (Some(v), Some(c)) => format!("tvc:{t}:{v}:{c}"),
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ServiceEntry, TtlStoreError> {
    serde_json::from_slice(bytes).map_err(|e| TtlStoreError::Corrupt(format!("record {id}: {e}")))
}

impl Directory {
    /// A directory over `store`: entries live `ttl` after each registration, a key has at most
    /// `max_per_key` live entries, and at most `max_entries` live entries exist in all (both
    /// checked atomically with the write: [`TtlStore::put_bounded`]).
    pub fn new(
        store: Arc<dyn TtlStore>,
        ttl: Duration,
        max_per_key: usize,
        max_entries: usize,
    ) -> Self {
        Directory {
            store,
            ttl,
            max_per_key,
            max_entries,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TtlStore> {
        &self.store
    }

    /// The entry TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Upserts a validated registration by `owner` (the caller must have checked that the
    /// address is `owner`'s): a new TTL from now, indexes replaced.
    ///
    /// # Errors
    ///
    /// [`DirectoryError::TooManyEntries`] for a new address beyond `max_per_key`;
    /// [`TtlStoreError::Full`] beyond the store's bound; store failures.
    pub async fn register(&self, reg: Registration) -> Result<Registered, DirectoryError> {
        let pk = reg.address.pk;
        let id = reg.address.to_string();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let entry = ServiceEntry::from_registration(reg, unix_ms_now(), ttl_ms);
        let bytes =
            serde_json::to_vec(&entry).map_err(|e| TtlStoreError::Corrupt(e.to_string()))?;
        // Both bounds are checked and the entry written in one atomic step of the store, so
        // concurrent registrations (here or in other instances on the same Redis) cannot
        // overshoot them.
        let own_index = format!("pk:{pk}");
        let bounds = PutBounds {
            index: &own_index,
            max_in_index: self.max_per_key,
            max_records: self.max_entries,
        };
        let created = self
            .store
            .put_bounded(&id, bytes, self.ttl, &index_names(&entry), bounds)
            .await
            .map_err(|e| match e {
                TtlStoreError::IndexFull { .. } => DirectoryError::TooManyEntries {
                    pk,
                    max: self.max_per_key,
                },
                other => other.into(),
            })?;
        Ok(Registered { entry, created })
    }

    /// The live entry at `addr`.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub async fn get(&self, addr: &Addr) -> Result<Option<ServiceEntry>, TtlStoreError> {
        let id = addr.to_string();
        self.get_json(addr)
            .await?
            .map(|bytes| decode(&id, &bytes))
            .transpose()
    }

    /// The live entry at `addr` as stored (JSON written by [`register`](Self::register)):
    /// what the API answers, without decoding (decoding validates the address's key, a curve
    /// point decompression).
    ///
    /// # Errors
    ///
    /// Store failures.
    pub async fn get_json(&self, addr: &Addr) -> Result<Option<Vec<u8>>, TtlStoreError> {
        self.store.get(&addr.to_string()).await
    }

    /// Removes the entry at `addr`; whether a live one was removed.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub async fn delete(&self, addr: &Addr) -> Result<bool, TtlStoreError> {
        self.store.delete(&addr.to_string()).await
    }

    /// The live entries of `pk`.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub async fn of_key(&self, pk: &PublicKey) -> Result<Vec<ServiceEntry>, TtlStoreError> {
        self.store
            .by_index(&format!("pk:{pk}"))
            .await?
            .iter()
            .map(|(id, bytes)| decode(id, bytes))
            .collect()
    }

    /// A uniform random sample of at most `limit` of the live entries matching `query`, in
    /// random order (see [`query_json`](Self::query_json)), decoded.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub async fn query(
        &self,
        query: &ServiceQuery,
        limit: usize,
    ) -> Result<Vec<ServiceEntry>, TtlStoreError> {
        self.query_json(query, limit)
            .await?
            .iter()
            .map(|bytes| decode("(query)", bytes))
            .collect()
    }

    /// Like [`query`](Self::query), the entries as stored (JSON): a
    /// [`TtlStore::sample_index`] of the query's index, whose cost follows `limit`, not the
    /// index's size; nothing is decoded or filtered.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub async fn query_json(
        &self,
        query: &ServiceQuery,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, TtlStoreError> {
        let records = self.store.sample_index(&query_index(query), limit).await?;
        Ok(records.into_iter().map(|(_, value)| value).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use skytower_transports::identity::SecretKey;

    use super::*;
    use crate::service_discovery::model::Geo;
    use crate::ttl_store::MemoryTtlStore;

    fn dir(max_per_key: usize, max_entries: usize) -> Directory {
        Directory::new(
            Arc::new(MemoryTtlStore::new(max_entries)),
            Duration::from_secs(300),
            max_per_key,
            max_entries,
        )
    }

    fn reg(pk: PublicKey, port: u16, kind: &str, version: &str, cc: Option<&str>) -> Registration {
        Registration {
            geo: cc.map(Geo::country),
            ..Registration::new(pk, port, kind, version)
        }
        .validated()
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn every_filter_combination_is_one_index() {
        let d = dir(16, 100);
        let a = SecretKey::generate().unwrap().public_key();
        let b = SecretKey::generate().unwrap().public_key();
        d.register(reg(a, 1, "vpn", "1", Some("de"))).await.unwrap();
        d.register(reg(a, 2, "vpn", "2", Some("FR"))).await.unwrap();
        d.register(reg(b, 1, "vpn", "1", None)).await.unwrap();
        d.register(reg(b, 2, "proxy", "1", Some("DE")))
            .await
            .unwrap();
        let ports = |v: Vec<ServiceEntry>| {
            let mut v: Vec<String> = v.into_iter().map(|e| e.address.to_string()).collect();
            v.sort();
            v
        };
        let q = |q: ServiceQuery| {
            let d = d.clone();
            async move { ports(d.query(&q, 100).await.unwrap()) }
        };
        let mut all_vpn = vec![format!("{a}:1"), format!("{a}:2"), format!("{b}:1")];
        all_vpn.sort();
        assert_eq!(q(ServiceQuery::of_type("vpn")).await, all_vpn);
        assert_eq!(
            q(ServiceQuery::of_type("vpn").country("DE")).await,
            vec![format!("{a}:1")]
        );
        let mut v1 = vec![format!("{a}:1"), format!("{b}:1")];
        v1.sort();
        assert_eq!(q(ServiceQuery::of_type("vpn").version("1")).await, v1);
        assert_eq!(
            q(ServiceQuery::of_type("vpn").version("2").country("FR")).await,
            vec![format!("{a}:2")]
        );
        assert!(
            q(ServiceQuery::of_type("vpn").version("2").country("DE"))
                .await
                .is_empty()
        );
        assert_eq!(
            q(ServiceQuery::of_type("proxy")).await,
            vec![format!("{b}:2")]
        );
        // Re-registering an address with another type moves it between indexes.
        let moved = d.register(reg(b, 2, "visor", "1", None)).await.unwrap();
        assert!(!moved.created);
        assert!(q(ServiceQuery::of_type("proxy")).await.is_empty());
        assert_eq!(
            q(ServiceQuery::of_type("visor")).await,
            vec![format!("{b}:2")]
        );
        assert_eq!(d.of_key(&b).await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn samples_are_distinct_bounded_and_cover_everything() {
        let d = dir(16, 100);
        let mut all = HashSet::new();
        for _ in 0..5 {
            let pk = SecretKey::generate().unwrap().public_key();
            for port in 1..=2 {
                d.register(reg(pk, port, "visor", "1", None)).await.unwrap();
                all.insert(format!("{pk}:{port}"));
            }
        }
        let mut seen = HashSet::new();
        let mut first_positions = HashSet::new();
        for _ in 0..300 {
            let sample = d.query(&ServiceQuery::of_type("visor"), 3).await.unwrap();
            assert_eq!(sample.len(), 3);
            let ids: HashSet<String> = sample.iter().map(|e| e.address.to_string()).collect();
            assert_eq!(ids.len(), 3, "distinct");
            assert!(ids.is_subset(&all));
            first_positions.insert(sample[0].address.to_string());
            seen.extend(ids);
        }
        assert_eq!(seen, all, "every entry gets sampled");
        assert_eq!(first_positions, all, "the order is random too");
        assert_eq!(
            d.query(&ServiceQuery::of_type("visor"), 100)
                .await
                .unwrap()
                .len(),
            10
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_limit_counts_only_new_live_addresses() {
        let d = dir(2, 100);
        let pk = SecretKey::generate().unwrap().public_key();
        assert!(
            d.register(reg(pk, 1, "vpn", "1", None))
                .await
                .unwrap()
                .created
        );
        d.register(reg(pk, 2, "vpn", "1", None)).await.unwrap();
        let err = d.register(reg(pk, 3, "vpn", "1", None)).await.unwrap_err();
        assert_eq!(err, DirectoryError::TooManyEntries { pk, max: 2 });
        // Refreshing an existing address is always allowed.
        assert!(
            !d.register(reg(pk, 2, "vpn", "2", None))
                .await
                .unwrap()
                .created
        );
        // Once one expires, there is room again.
        tokio::time::advance(Duration::from_secs(200)).await;
        d.register(reg(pk, 2, "vpn", "2", None)).await.unwrap();
        tokio::time::advance(Duration::from_secs(101)).await;
        d.register(reg(pk, 3, "vpn", "1", None)).await.unwrap();
        assert_eq!(d.of_key(&pk).await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_bound_refuses_new_entries() {
        let d = dir(16, 1);
        let pk = SecretKey::generate().unwrap().public_key();
        d.register(reg(pk, 1, "vpn", "1", None)).await.unwrap();
        let err = d.register(reg(pk, 2, "vpn", "1", None)).await.unwrap_err();
        assert_eq!(err, DirectoryError::Store(TtlStoreError::Full(1)));
    }
}
