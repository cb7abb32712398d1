//! The [`NegativeCache`] service.

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use tower_service::Service;

use super::cache::Admission;
use super::{FailureFilter, KnownBad, NegativeCacheHandle, ResponseFuture};
use crate::BoxError;
use crate::key::ExtractKey;

/// Refuses calls whose key failed recently, and marks keys bad when their call fails.
///
/// Built by [`NegativeCacheLayer`](super::NegativeCacheLayer); see the
/// [module docs](super) for the behaviour. `E` extracts the key, `F` is the
/// [`FailureFilter`], `K` the key type. Clones share the cache.
///
/// # Readiness
///
/// `poll_ready` delegates to the inner service. A refused call consumes that readiness
/// without calling the inner service: whatever the inner service reserved in `poll_ready`
/// (a `ConcurrencyLimit` permit, a `Buffer` slot) stays held by this instance until its next
/// call or its drop. Place the negative cache *outside* layers that reserve capacity, so that
/// refusals never sit on shared capacity.
pub struct NegativeCache<S, E, F, K> {
    inner: S,
    extractor: E,
    filter: F,
    cache: NegativeCacheHandle<K>,
}

impl<S, E, F, K> NegativeCache<S, E, F, K> {
    /// Wraps `inner`, sharing `cache`.
    pub fn new(inner: S, extractor: E, filter: F, cache: NegativeCacheHandle<K>) -> Self {
        NegativeCache {
            inner,
            extractor,
            filter,
            cache,
        }
    }

    /// A handle on the shared cache.
    pub fn handle(&self) -> NegativeCacheHandle<K> {
        self.cache.clone()
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, E, F, K, Req> Service<Req> for NegativeCache<S, E, F, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    E: ExtractKey<Req, Key = K>,
    F: FailureFilter + Clone,
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extractor.extract_key(&req);
        match self.cache.admit(&key) {
            Admission::Allowed { marks } => ResponseFuture::called(
                self.inner.call(req),
                key,
                self.cache.clone(),
                self.filter.clone(),
                marks,
            ),
            Admission::Refused { expires_in } => {
                tracing::trace!(key = ?key, ?expires_in, "negative cache: refused");
                ResponseFuture::refused(KnownBad { key, expires_in })
            }
        }
    }
}

impl<S: Clone, E: Clone, F: Clone, K> Clone for NegativeCache<S, E, F, K> {
    fn clone(&self) -> Self {
        NegativeCache {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            filter: self.filter.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<S: fmt::Debug, E, F, K> fmt::Debug for NegativeCache<S, E, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegativeCache")
            .field("inner", &self.inner)
            .field("extractor", &std::any::type_name::<E>())
            .field("filter", &std::any::type_name::<F>())
            .field("cache", &self.cache)
            .finish()
    }
}
