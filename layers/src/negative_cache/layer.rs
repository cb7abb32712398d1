//! The [`NegativeCacheLayer`].

use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use super::{IgnoreCancelled, NegativeCache, NegativeCacheHandle};

/// Applies [`NegativeCache`] to services; every service it builds shares one cache.
///
/// Defaults: TTL 30 s ([`ttl`](Self::ttl)), at most 10 000 keys
/// ([`max_entries`](Self::max_entries)), filter [`IgnoreCancelled`] without `Elapsed`
/// ([`elapsed_is_cancellation`](Self::elapsed_is_cancellation), [`filter`](Self::filter)).
///
/// `E` extracts the key of a request, `F` is the [`FailureFilter`](super::FailureFilter),
/// `K` the key type (`E::Key`; a separate parameter because the layer, not knowing the
/// request type, must still own the typed cache). `K` is usually inferred from the service
/// the layer wraps.
///
/// The TTL and size bound belong to the shared cache: setting them on a layer also applies
/// to the handles and services already sharing it.
pub struct NegativeCacheLayer<E, F, K> {
    extractor: E,
    filter: F,
    cache: NegativeCacheHandle<K>,
}

impl<E, K> NegativeCacheLayer<E, IgnoreCancelled, K> {
    /// A layer keying requests with `extractor`, with a new cache and the default settings.
    pub fn new(extractor: E) -> Self {
        NegativeCacheLayer {
            extractor,
            filter: IgnoreCancelled::new(),
            cache: NegativeCacheHandle::new(),
        }
    }

    /// Also treat tower's `Elapsed` as the caller's cancellation (default `false`; see
    /// [`IgnoreCancelled`] for why).
    pub fn elapsed_is_cancellation(mut self, yes: bool) -> Self {
        self.filter = self.filter.elapsed_is_cancellation(yes);
        self
    }
}

impl<E, F, K> NegativeCacheLayer<E, F, K> {
    /// How long a failed key stays bad (default 30 s; zero disables caching).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.cache.set_ttl(ttl);
        self
    }

    /// The most keys remembered at once (default 10 000, at least 1). When full, a new mark
    /// first drops expired entries, then evicts the entry closest to expiry.
    pub fn max_entries(self, max_entries: usize) -> Self {
        self.cache.set_max_entries(max_entries);
        self
    }

    /// Replaces the [`FailureFilter`](super::FailureFilter) deciding which errors mark a key
    /// bad, e.g. `|e: &BoxError| !e.is::<MyNotFound>()`.
    pub fn filter<F2>(self, filter: F2) -> NegativeCacheLayer<E, F2, K> {
        NegativeCacheLayer {
            extractor: self.extractor,
            filter,
            cache: self.cache,
        }
    }

    /// Shares `cache` (e.g. one cache for two stacks) instead of this layer's own; the layer
    /// then uses `cache`'s TTL and size bound.
    pub fn with_cache(mut self, cache: NegativeCacheHandle<K>) -> Self {
        self.cache = cache;
        self
    }

    /// A handle on the shared cache.
    pub fn handle(&self) -> NegativeCacheHandle<K> {
        self.cache.clone()
    }
}

impl<S, E: Clone, F: Clone, K> Layer<S> for NegativeCacheLayer<E, F, K> {
    type Service = NegativeCache<S, E, F, K>;

    fn layer(&self, inner: S) -> Self::Service {
        NegativeCache::new(
            inner,
            self.extractor.clone(),
            self.filter.clone(),
            self.cache.clone(),
        )
    }
}

impl<E: Clone, F: Clone, K> Clone for NegativeCacheLayer<E, F, K> {
    fn clone(&self) -> Self {
        NegativeCacheLayer {
            extractor: self.extractor.clone(),
            filter: self.filter.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<E, F, K> fmt::Debug for NegativeCacheLayer<E, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegativeCacheLayer")
            .field("extractor", &std::any::type_name::<E>())
            .field("filter", &std::any::type_name::<F>())
            .field("cache", &self.cache)
            .finish()
    }
}
