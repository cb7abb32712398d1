//! [`CircuitBreakerLayer`] and its [`CircuitBreakerBuilder`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::classify::ErrorsAreFailures;
use super::service::CircuitBreaker;
use super::state::{BreakerHandle, Config, Shared};

/// Applies a keyed [`CircuitBreaker`] to services.
///
/// `K` is the key type (picked from each request by the extractor `E`), `C` the
/// [`Classify`](super::Classify)er. Every clone of the layer, every service it makes and every
/// [`BreakerHandle`] taken from them shares one state.
///
/// Defaults (see [`CircuitBreakerBuilder`] to change them): open after 3 consecutive failures,
/// stay open 60 s, track at most 10 000 keys, forget failures untouched for 10 min, count
/// every `Err` as a failure.
pub struct CircuitBreakerLayer<K, E, C = ErrorsAreFailures> {
    extractor: E,
    classifier: C,
    shared: Arc<Shared<K>>,
}

impl<K, E> CircuitBreakerLayer<K, E> {
    /// A breaker with the default configuration, keyed by `extractor`.
    pub fn new(extractor: E) -> Self {
        CircuitBreakerBuilder::new(extractor).build()
    }

    /// A builder to configure a breaker keyed by `extractor`.
    pub fn builder(extractor: E) -> CircuitBreakerBuilder<K, E> {
        CircuitBreakerBuilder::new(extractor)
    }
}

impl<K, E, C> CircuitBreakerLayer<K, E, C> {
    /// A handle on the per-key state shared by this layer and every service it makes.
    pub fn handle(&self) -> BreakerHandle<K> {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, E: Clone, C: Clone> Clone for CircuitBreakerLayer<K, E, C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, E, C> fmt::Debug for CircuitBreakerLayer<K, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("extractor", &std::any::type_name::<E>())
            .field("classifier", &std::any::type_name::<C>())
            .field("config", self.shared.config())
            .finish()
    }
}

impl<S, K, E: Clone, C: Clone> Layer<S> for CircuitBreakerLayer<K, E, C> {
    type Service = CircuitBreaker<S, K, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(
            inner,
            self.extractor.clone(),
            self.classifier.clone(),
            Arc::clone(&self.shared),
        )
    }
}

/// Configures a [`CircuitBreakerLayer`]; made by [`CircuitBreakerLayer::builder`].
pub struct CircuitBreakerBuilder<K, E, C = ErrorsAreFailures> {
    extractor: E,
    classifier: C,
    config: Config,
    _key: PhantomData<fn() -> K>,
}

impl<K, E> CircuitBreakerBuilder<K, E> {
    /// A builder with the default configuration, keyed by `extractor`.
    pub fn new(extractor: E) -> Self {
        CircuitBreakerBuilder {
            extractor,
            classifier: ErrorsAreFailures,
            config: Config::default(),
            _key: PhantomData,
        }
    }
}

impl<K, E, C> CircuitBreakerBuilder<K, E, C> {
    /// Consecutive failures that open a key's circuit. Default 3; 0 is treated as 1.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.config.failure_threshold = failures.max(1);
        self
    }

    /// How long an open circuit rejects calls before letting one probe through. Default 60 s.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        self
    }

    /// The most keys with state (failures, open, half-open) kept at once. Default 10 000; 0 is
    /// treated as 1. When full, the least recently touched closed keys are evicted first (in
    /// batches of 1/64 of the capacity); open keys are evicted only when every tracked key is
    /// open, the one whose open period ends soonest first.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.config.max_keys = keys.max(1);
        self
    }

    /// How long a closed key's failure count survives without a new failure. Default 10 min.
    /// Open keys never expire this way.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Uses `classifier` to decide which outcomes are failures. Default [`ErrorsAreFailures`].
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<K, E, C2> {
        CircuitBreakerBuilder {
            extractor: self.extractor,
            classifier,
            config: self.config,
            _key: PhantomData,
        }
    }

    /// Builds the layer, with a fresh state.
    pub fn build(self) -> CircuitBreakerLayer<K, E, C> {
        CircuitBreakerLayer {
            extractor: self.extractor,
            classifier: self.classifier,
            shared: Arc::new(Shared::new(self.config)),
        }
    }
}

impl<K, E: Clone, C: Clone> Clone for CircuitBreakerBuilder<K, E, C> {
    fn clone(&self) -> Self {
        CircuitBreakerBuilder {
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            config: self.config,
            _key: PhantomData,
        }
    }
}

impl<K, E, C> fmt::Debug for CircuitBreakerBuilder<K, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("extractor", &std::any::type_name::<E>())
            .field("classifier", &std::any::type_name::<C>())
            .field("config", &self.config)
            .finish()
    }
}
