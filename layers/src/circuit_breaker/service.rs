//! The [`CircuitBreaker`] service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::classify::{Classify, ErrorsAreFailures};
use super::error::CircuitOpen;
use super::future::{ResponseFuture, Tracker};
use super::state::{Admit, BreakerHandle, Config, Shared};
use crate::BoxError;
use crate::key::ExtractKey;

/// A keyed circuit breaker around the service `S`: see the [module docs](super).
///
/// Made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer) (to configure it and share its
/// state among services) or [`CircuitBreaker::new`] (default configuration, own state).
///
/// `poll_ready` delegates to the inner service. A call whose key's circuit is open is rejected
/// in `call` with [`CircuitOpen`] without calling the inner service, so the readiness it
/// reserved goes unused: place the breaker *outside* layers that reserve capacity in
/// `poll_ready` (concurrency limits, buffers) so rejected calls do not hold it.
pub struct CircuitBreaker<S, K, E, C = ErrorsAreFailures> {
    inner: S,
    extractor: E,
    classifier: C,
    shared: Arc<Shared<K>>,
}

impl<S, K, E> CircuitBreaker<S, K, E> {
    /// Wraps `inner` in a breaker keyed by `extractor`, with the default configuration (see
    /// [`CircuitBreakerLayer`](super::CircuitBreakerLayer)) and its own state.
    pub fn new(inner: S, extractor: E) -> Self {
        Self::from_parts(
            inner,
            extractor,
            ErrorsAreFailures,
            Arc::new(Shared::new(Config::default())),
        )
    }
}

impl<S, K, E, C> CircuitBreaker<S, K, E, C> {
    pub(crate) fn from_parts(
        inner: S,
        extractor: E,
        classifier: C,
        shared: Arc<Shared<K>>,
    ) -> Self {
        CircuitBreaker {
            inner,
            extractor,
            classifier,
            shared,
        }
    }

    /// A handle on the per-key state this service shares with its clones and its layer.
    pub fn handle(&self) -> BreakerHandle<K> {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, E: Clone, C: Clone> Clone for CircuitBreaker<S, K, E, C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, K, E, C> fmt::Debug for CircuitBreaker<S, K, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("extractor", &std::any::type_name::<E>())
            .field("classifier", &std::any::type_name::<C>())
            .field("config", self.shared.config())
            .finish()
    }
}

impl<S, K, E, C, Req> Service<Req> for CircuitBreaker<S, K, E, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    E: ExtractKey<Req, Key = K>,
    C: Classify<S::Response> + Clone,
    K: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, K, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extractor.extract_key(&req);
        let probe = match self.shared.admit(&key) {
            Admit::Normal => None,
            Admit::Probe(id) => Some(id),
            Admit::Reject(retry_after) => {
                return ResponseFuture::rejected(CircuitOpen { key, retry_after });
            }
        };
        let tracker = Tracker::new(Arc::clone(&self.shared), key, probe);
        ResponseFuture::inner(self.inner.call(req), tracker, self.classifier.clone())
    }
}
