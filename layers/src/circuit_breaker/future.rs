//! The [`ResponseFuture`] of a [`CircuitBreaker`](super::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::classify::Classify;
use super::error::CircuitOpen;
use super::state::Shared;
use crate::BoxError;

/// The response future of a [`CircuitBreaker`](super::CircuitBreaker): either the inner
/// service's future, whose outcome is classified and counted when it completes, or an
/// immediate [`CircuitOpen`] rejection.
///
/// Dropping the future of a probe call before it completes releases the probe slot: the next
/// call becomes the probe. Dropping any other call counts neither as success nor as failure.
#[pin_project(project = ResponseFutureProj)]
pub struct ResponseFuture<F, K, C> {
    #[pin]
    kind: Kind<F, K, C>,
}

#[pin_project(project = KindProj)]
enum Kind<F, K, C> {
    Inner {
        #[pin]
        future: F,
        tracker: Tracker<K>,
        classifier: C,
    },
    Rejected {
        error: Option<CircuitOpen<K>>,
    },
}

impl<F, K, C> ResponseFuture<F, K, C> {
    pub(crate) fn inner(future: F, tracker: Tracker<K>, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Inner {
                future,
                tracker,
                classifier,
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen<K>) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, K, C> fmt::Debug for ResponseFuture<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, T, E, K, C> Future for ResponseFuture<F, K, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
    K: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner {
                future,
                tracker,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                tracker.finish(classifier.is_failure(result.as_ref()));
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("circuit breaker ResponseFuture polled after completion");
                Poll::Ready(Err(error.into()))
            }
        }
    }
}

/// Reports a call's outcome to the shared state, or, for a probe dropped before completing,
/// releases the probe slot.
pub(crate) struct Tracker<K> {
    shared: Arc<Shared<K>>,
    /// `None` once the outcome is recorded.
    key: Option<K>,
    probe: Option<u64>,
    /// Set where the key bounds are known, so `Drop` needs none.
    release: fn(&Shared<K>, K, u64),
}

impl<K> Tracker<K>
where
    K: Clone + Eq + Hash + fmt::Debug,
{
    pub(crate) fn new(shared: Arc<Shared<K>>, key: K, probe: Option<u64>) -> Self {
        Tracker {
            shared,
            key: Some(key),
            probe,
            release: Shared::release_probe,
        }
    }

    fn finish(&mut self, failure: bool) {
        if let Some(key) = self.key.take() {
            self.shared.record(key, self.probe, failure);
        }
    }
}

impl<K> Drop for Tracker<K> {
    fn drop(&mut self) {
        if let (Some(key), Some(probe)) = (self.key.take(), self.probe) {
            (self.release)(&self.shared, key, probe);
        }
    }
}
