//! A generic store of records that expire: what the deployment services (transport discovery,
//! service discovery, address resolver, uptime tracker) keep their entries in.
//!
//! A record is an id, a value (bytes, usually JSON), a TTL and a set of **index names** it can be
//! listed by (e.g. `edge:<pk>` for a transport, `type:vpn` for a service). [`TtlStore::put`] is
//! an upsert that renews the TTL and replaces the record's indexes; an expired record is never
//! returned, whatever the implementation; [`TtlStore::purge_expired`] frees what is left of
//! expired records (the services call it periodically). [`TtlStore::put_bounded`] inserts only
//! while an index and the store are under given bounds, checked and written in one atomic step
//! (so instances sharing a Redis cannot overshoot them together).
//!
//! - [`MemoryTtlStore`]: embedded, the default. Bounded ([`TtlStoreError::Full`] beyond
//!   `max_records`), on `tokio::time::Instant`, so tests drive expiry with paused time.
//! - [`RedisTtlStore`]: Redis with native expiry (`PEXPIRE`), shared by several instances; Lua
//!   scripts keep a record and its indexes consistent.
//!
//! [`Records`] is a typed view (JSON) over either.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use skytower_services::ttl_store::{MemoryTtlStore, Records};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Service { kind: String, port: u16 }
//!
//! let records: Records<Service> = Records::new(Arc::new(MemoryTtlStore::new(1000)));
//! let vpn = Service { kind: "vpn".into(), port: 44 };
//! records.put("a:44", &vpn, Duration::from_secs(300), &["type:vpn".to_owned()]).await?;
//! assert_eq!(records.by_index("type:vpn").await?, vec![("a:44".to_owned(), vpn)]);
//!
//! tokio::time::advance(Duration::from_secs(301)).await;
//! assert!(records.get("a:44").await?.is_none()); // expired
//! # Ok::<(), skytower_services::ttl_store::TtlStoreError>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ApiError;
pub use crate::dmsg_discovery::StoreSpec;
pub use crate::dmsg_discovery::store::RedisConfig;

mod memory;
mod redis;

pub use memory::MemoryTtlStore;
pub use redis::{RedisNonces, RedisTtlStore};

/// The future of a store operation.
pub type TtlStoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, TtlStoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlStoreError {
    /// The embedded store holds its maximum number of live records.
    #[error("store full: {0} records")]
    Full(usize),
    /// The backend (Redis) cannot be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend returned something this code did not write.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// A new record would exceed the live records allowed under one index
    /// ([`TtlStore::put_bounded`]).
    #[error("index {index} already holds {max} live records")]
    IndexFull {
        /// The index.
        index: String,
        /// Its bound.
        max: usize,
    },
}

impl From<TtlStoreError> for ApiError {
    fn from(e: TtlStoreError) -> Self {
        match e {
            TtlStoreError::Full(_) => ApiError {
                retry_after: Some(Duration::from_secs(10)),
                ..ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "store_full",
                    e.to_string(),
                )
            },
            TtlStoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            TtlStoreError::Corrupt(_) => ApiError::internal(e),
            TtlStoreError::IndexFull { .. } => {
                ApiError::new(http::StatusCode::CONFLICT, "index_full", e.to_string())
            }
        }
    }
}

/// The bounds of a [`TtlStore::put_bounded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutBounds<'a> {
    /// The index whose live records are counted (e.g. `pk:<key>`: one owner's records).
    pub index: &'a str,
    /// Most live records under `index`.
    pub max_in_index: usize,
    /// Most live records in the store (`usize::MAX`: only the store's own bound).
    pub max_records: usize,
}

/// A record as listed: its id and value.
pub type Record = (String, Vec<u8>);

/// A store of expiring records (see the module docs).
#[allow(clippy::len_without_is_empty)] // `len` is async and counts only live records
pub trait TtlStore: Send + Sync + std::fmt::Debug {
    /// `"memory"` or `"redis"`.
    fn kind(&self) -> &'static str;

    /// Inserts or replaces the record `id`: its value, a new TTL from now, and its indexes
    /// (the old ones are dropped).
    fn put<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
    ) -> TtlStoreFuture<'a, ()>;

    /// The live record `id`.
    fn get<'a>(&'a self, id: &'a str) -> TtlStoreFuture<'a, Option<Vec<u8>>>;

    /// Removes `id`; whether a live record was removed.
    fn delete<'a>(&'a self, id: &'a str) -> TtlStoreFuture<'a, bool>;

    /// The live records carrying `index`, in no particular order.
    fn by_index<'a>(&'a self, index: &'a str) -> TtlStoreFuture<'a, Vec<Record>>;

    /// Every live record, in no particular order.
    fn all(&self) -> TtlStoreFuture<'_, Vec<Record>>;

    /// A uniform random sample of at most `n` distinct live records carrying `index`, in random
    /// order. Both implementations draw positions in the index instead of reading all of it, so
    /// the cost follows `n`, not the index's size (while few of its records have expired).
    fn sample_index<'a>(&'a self, index: &'a str, n: usize) -> TtlStoreFuture<'a, Vec<Record>>;

    /// Frees expired records and index entries; how many records were removed.
    fn purge_expired(&self) -> TtlStoreFuture<'_, usize>;

    /// The number of live records.
    fn len(&self) -> TtlStoreFuture<'_, usize>;

    /// Like [`put`](Self::put), but a record that is not live yet is refused when
    /// `bounds.index` already carries `bounds.max_in_index` live records
    /// ([`TtlStoreError::IndexFull`]) or the store holds `bounds.max_records` live records
    /// ([`TtlStoreError::Full`]); replacing a live record is always allowed. Returns whether the
    /// record is new. The check and the write are **one atomic step** in both implementations
    /// (the embedded store's lock; one Lua script on Redis), so concurrent writers, in one
    /// process or in several instances sharing a Redis, cannot overshoot a bound.
    fn put_bounded<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
        bounds: PutBounds<'a>,
    ) -> TtlStoreFuture<'a, bool>;

    /// Where signed-request verifiers remember nonces so that every instance sharing this store
    /// sees them ([`Verifier::with_shared_nonces`](crate::auth::Verifier::with_shared_nonces)):
    /// `Some` for a store shared between processes (Redis), `None` (the default) for the
    /// embedded one, whose single instance has its verifier's own seen-set.
    fn shared_nonces(&self) -> Option<Arc<dyn crate::auth::SharedNonces>> {
        None
    }
}

/// Opens the store named by `spec`: a [`MemoryTtlStore`] of at most `max_records`, or a
/// [`RedisTtlStore`] whose keys start with `namespace` (e.g. `transport-discovery:`; the
/// `RedisConfig`'s own prefix is replaced).
pub async fn open(
    spec: &StoreSpec,
    namespace: &str,
    max_records: usize,
) -> Result<Arc<dyn TtlStore>, TtlStoreError> {
    Ok(match spec {
        StoreSpec::Memory => Arc::new(MemoryTtlStore::new(max_records)),
        StoreSpec::Redis(config) => {
            let mut config = config.clone();
            config.prefix = namespace.to_owned();
            Arc::new(RedisTtlStore::connect(&config).await?)
        }
    })
}

/// Purges `store` every `every` until `cancel` fires (spawn it; log-only on errors).
pub async fn purge_periodically(
    store: Arc<dyn TtlStore>,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "purged expired records"),
            Err(e) => tracing::warn!(error = %e, "purging expired records failed"),
        }
    }
}

/// A typed (JSON) view of a [`TtlStore`].
pub struct Records<T> {
    store: Arc<dyn TtlStore>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Records {
            store: self.store.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Records<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("store", &self.store)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Records<T> {
    /// A view over `store`.
    pub fn new(store: Arc<dyn TtlStore>) -> Self {
        Records {
            store,
            _type: PhantomData,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn TtlStore> {
        &self.store
    }

    /// [`TtlStore::put`] of `value` as JSON.
    pub async fn put(
        &self,
        id: &str,
        value: &T,
        ttl: Duration,
        indexes: &[String],
    ) -> Result<(), TtlStoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| TtlStoreError::Corrupt(e.to_string()))?;
        self.store.put(id, bytes, ttl, indexes).await
    }

    /// [`TtlStore::get`], decoded.
    pub async fn get(&self, id: &str) -> Result<Option<T>, TtlStoreError> {
        match self.store.get(id).await? {
            Some(bytes) => decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`TtlStore::delete`].
    pub async fn delete(&self, id: &str) -> Result<bool, TtlStoreError> {
        self.store.delete(id).await
    }

    /// [`TtlStore::by_index`], decoded.
    pub async fn by_index(&self, index: &str) -> Result<Vec<(String, T)>, TtlStoreError> {
        decode_all(self.store.by_index(index).await?)
    }

    /// [`TtlStore::sample_index`], decoded.
    pub async fn sample_index(
        &self,
        index: &str,
        n: usize,
    ) -> Result<Vec<(String, T)>, TtlStoreError> {
        decode_all(self.store.sample_index(index, n).await?)
    }

    /// [`TtlStore::all`], decoded.
    pub async fn all(&self) -> Result<Vec<(String, T)>, TtlStoreError> {
        decode_all(self.store.all().await?)
    }
}

fn decode<T: DeserializeOwned>(id: &str, bytes: &[u8]) -> Result<T, TtlStoreError> {
    serde_json::from_slice(bytes).map_err(|e| TtlStoreError::Corrupt(format!("record {id}: {e}")))
}

fn decode_all<T: DeserializeOwned>(
    records: Vec<Record>,
) -> Result<Vec<(String, T)>, TtlStoreError> {
    records
        .into_iter()
        .map(|(id, bytes)| decode(&id, &bytes).map(|v| (id, v)))
        .collect()
}

/// A service's `/health` check of its store: `ok` with the store's kind and its live record
/// count (as `count`, e.g. `"transports"`), `down` with the error when it cannot be reached.
pub(crate) struct StoreCheck {
    /// The store.
    pub(crate) store: Arc<dyn TtlStore>,
    /// The name of the live record count in the details.
    pub(crate) count: &'static str,
}

impl skytower_layers::check::HealthCheck for StoreCheck {
    fn check(&self) -> skytower_layers::check::CheckFuture<'_> {
        use skytower_layers::check::CheckReport;
        Box::pin(async move {
            let kind = self.store.kind();
            match self.store.len().await {
                Ok(n) => CheckReport::ok().with_details(serde_json::json!({
                    "kind": kind,
                    self.count: n,
                })),
                Err(e) => CheckReport::down(serde_json::json!({
                    "kind": kind,
                    "error": e.to_string(),
                })),
            }
        })
    }
}

/// The behaviour every [`TtlStore`] must have; run against both implementations by their tests
/// (and usable by other implementations' tests). `advance` moves the store's clock by at least
/// the given duration (paused tokio time for memory, a real sleep for Redis with short TTLs).
#[doc(hidden)]
pub mod suite {
    use std::future::Future;
    use std::time::Duration;

    use super::TtlStore;

    fn ix(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn sorted(mut v: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
        v.sort();
        v
    }

    /// Upsert, get, indexes replaced on update, delete.
    pub async fn crud(store: &dyn TtlStore) {
        let ttl = Duration::from_secs(60);
        store
            .put("a", b"1".to_vec(), ttl, &ix(&["x", "y"]))
            .await
            .unwrap();
        store
            .put("b", b"2".to_vec(), ttl, &ix(&["y"]))
            .await
            .unwrap();
        assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("nope").await.unwrap(), None);
        assert_eq!(store.len().await.unwrap(), 2);
        assert_eq!(
            sorted(store.by_index("y").await.unwrap()),
            vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())]
        );
        // Update: new value, `x` replaced by `z`.
        store
            .put("a", b"3".to_vec(), ttl, &ix(&["z"]))
            .await
            .unwrap();
        assert_eq!(store.get("a").await.unwrap(), Some(b"3".to_vec()));
        assert!(store.by_index("x").await.unwrap().is_empty());
        assert_eq!(
            store.by_index("z").await.unwrap(),
            vec![("a".into(), b"3".to_vec())]
        );
        assert_eq!(
            store.by_index("y").await.unwrap(),
            vec![("b".into(), b"2".to_vec())]
        );
        assert_eq!(store.len().await.unwrap(), 2);
        // Delete.
        assert!(store.delete("a").await.unwrap());
        assert!(!store.delete("a").await.unwrap());
        assert_eq!(store.get("a").await.unwrap(), None);
        assert!(store.by_index("z").await.unwrap().is_empty());
        assert_eq!(
            store.all().await.unwrap(),
            vec![("b".into(), b"2".to_vec())]
        );
    }

    /// `put_bounded`: new records are refused beyond the index bound and the store bound,
    /// replacing a live record is always allowed, expired records do not count, and
    /// concurrent writers cannot overshoot (`advance` moves the store's clock).
    pub async fn bounded<F, Fut>(store: &dyn TtlStore, advance: F)
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        use super::{PutBounds, TtlStoreError};
        let ttl = Duration::from_secs(60);
        let per_owner = |owner: &'static str| PutBounds {
            index: owner,
            max_in_index: 2,
            max_records: 5,
        };
        let put = |id: &'static str, owner: &'static str| async move {
            store
                .put_bounded(
                    id,
                    id.as_bytes().to_vec(),
                    ttl,
                    &ix(&[owner]),
                    per_owner(owner),
                )
                .await
        };
        assert_eq!(put("a1", "a").await, Ok(true));
        assert_eq!(put("a2", "a").await, Ok(true));
        assert_eq!(
            put("a3", "a").await,
            Err(TtlStoreError::IndexFull {
                index: "a".into(),
                max: 2
            })
        );
        assert_eq!(store.get("a3").await.unwrap(), None, "nothing written");
        // Replacing a live record is not a new one.
        assert_eq!(put("a1", "a").await, Ok(false));
        // The store bound: 5 live records in all.
        assert_eq!(put("b1", "b").await, Ok(true));
        assert_eq!(put("b2", "b").await, Ok(true));
        assert_eq!(put("c1", "c").await, Ok(true));
        assert_eq!(put("c2", "c").await, Err(TtlStoreError::Full(5)));
        assert_eq!(store.len().await.unwrap(), 5);
        // Expired records count toward neither bound (before any purge).
        store.delete("c1").await.unwrap();
        let short = |id: &'static str| async move {
            store
                .put_bounded(
                    id,
                    vec![],
                    Duration::from_millis(500),
                    &ix(&["d"]),
                    per_owner("d"),
                )
                .await
        };
        assert_eq!(short("d1").await, Ok(true));
        assert_eq!(put("d2", "d").await, Err(TtlStoreError::Full(5)));
        advance(Duration::from_secs(1)).await;
        assert_eq!(
            put("d2", "d").await,
            Ok(true),
            "the expired d1 freed room in the store"
        );
        store.delete("b1").await.unwrap();
        assert_eq!(put("d3", "d").await, Ok(true), "and under its index");
        assert_eq!(store.len().await.unwrap(), 5);
        // Concurrent new records under one bound: exactly the bound is admitted.
        let e_index = ix(&["e"]);
        let ids: Vec<String> = (0..20).map(|i| format!("e{i:02}")).collect();
        let e_bounds = PutBounds {
            index: "e",
            max_in_index: 3,
            max_records: usize::MAX,
        };
        let results = futures_util::future::join_all(
            ids.iter()
                .map(|id| store.put_bounded(id, vec![], ttl, &e_index, e_bounds)),
        )
        .await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(store.by_index("e").await.unwrap().len(), 3);
        for r in results.into_iter().filter_map(Result::err) {
            assert_eq!(
                r,
                TtlStoreError::IndexFull {
                    index: "e".into(),
                    max: 3
                }
            );
        }
    }

    /// Samples are distinct, live, bounded by `n`, and every record gets sampled.
    pub async fn sampling<F, Fut>(store: &dyn TtlStore, advance: F)
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        let ttl = Duration::from_secs(60);
        for i in 0..20 {
            let id = format!("r{i:02}");
            store
                .put(&id, id.clone().into_bytes(), ttl, &ix(&["s"]))
                .await
                .unwrap();
        }
        // Five short-lived ones that will have expired (still in the index until a purge).
        for i in 0..5 {
            let id = format!("x{i}");
            store
                .put(&id, vec![], Duration::from_millis(500), &ix(&["s"]))
                .await
                .unwrap();
        }
        advance(Duration::from_secs(1)).await;
        assert!(store.sample_index("none", 3).await.unwrap().is_empty());
        assert!(store.sample_index("s", 0).await.unwrap().is_empty());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let sample = store.sample_index("s", 3).await.unwrap();
            assert_eq!(sample.len(), 3);
            let ids: std::collections::HashSet<&String> = sample.iter().map(|(id, _)| id).collect();
            assert_eq!(ids.len(), 3, "distinct");
            for (id, value) in &sample {
                assert!(id.starts_with('r'), "expired record {id} sampled");
                assert_eq!(value, id.as_bytes());
                seen.insert(id.clone());
            }
        }
        assert_eq!(seen.len(), 20, "every live record gets sampled");
        // Asking for more than there is returns every live record.
        let all = store.sample_index("s", 100).await.unwrap();
        assert_eq!(all.len(), 20);
    }

    /// Records expire after their TTL (never returned, then purged); a put renews the TTL.
    pub async fn expiry<F, Fut>(store: &dyn TtlStore, ttl: Duration, advance: F)
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        store
            .put("short", b"s".to_vec(), ttl, &ix(&["k"]))
            .await
            .unwrap();
        store
            .put("renewed", b"r".to_vec(), ttl, &ix(&["k"]))
            .await
            .unwrap();
        store
            .put("long", b"l".to_vec(), ttl * 100, &ix(&["k"]))
            .await
            .unwrap();
        advance(ttl / 2).await;
        store
            .put("renewed", b"r".to_vec(), ttl, &ix(&["k"]))
            .await
            .unwrap();
        advance(ttl / 2 + ttl / 4).await;
        // `short` is past its TTL, `renewed` is not.
        assert_eq!(store.get("short").await.unwrap(), None);
        assert_eq!(store.get("renewed").await.unwrap(), Some(b"r".to_vec()));
        let live: Vec<String> = sorted(store.by_index("k").await.unwrap())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(live, ["long", "renewed"]);
        assert_eq!(store.len().await.unwrap(), 2);
        advance(ttl / 2).await;
        assert_eq!(store.get("renewed").await.unwrap(), None);
        let all: Vec<String> = store
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(all, ["long"]);
        assert!(
            !store.delete("short").await.unwrap(),
            "an expired record is not live"
        );
        store.purge_expired().await.unwrap();
        assert_eq!(store.len().await.unwrap(), 1);
        assert_eq!(store.by_index("k").await.unwrap().len(), 1);
    }
}
