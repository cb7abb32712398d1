//! The response future of [`NegativeCache`](super::NegativeCache).

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::{FailureFilter, KnownBad, NegativeCacheHandle};
use crate::BoxError;

/// Response future of [`NegativeCache`](super::NegativeCache).
///
/// Either the inner service's future, which records the outcome for its key when it completes
/// (dropping it before then records nothing), or an immediate [`KnownBad`] refusal.
#[pin_project]
pub struct ResponseFuture<F, Filt, K> {
    #[pin]
    kind: Kind<F, Filt, K>,
}

#[pin_project(project = KindProj)]
enum Kind<F, Filt, K> {
    Called {
        #[pin]
        future: F,
        /// `None` once the outcome has been recorded.
        record: Option<Record<Filt, K>>,
    },
    Refused {
        /// `None` once returned.
        error: Option<KnownBad<K>>,
    },
}

/// What a called future needs to record its outcome; the key is moved in, not cloned.
struct Record<Filt, K> {
    key: K,
    cache: NegativeCacheHandle<K>,
    filter: Filt,
    /// The cache's mark counter when the call was admitted.
    marks: u64,
}

impl<F, Filt, K> ResponseFuture<F, Filt, K> {
    pub(crate) fn called(
        future: F,
        key: K,
        cache: NegativeCacheHandle<K>,
        filter: Filt,
        marks: u64,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                record: Some(Record {
                    key,
                    cache,
                    filter,
                    marks,
                }),
            },
        }
    }

    pub(crate) fn refused(error: KnownBad<K>) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, Filt, K, T, E> Future for ResponseFuture<F, Filt, K>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    Filt: FailureFilter,
    K: Eq + Hash + fmt::Debug + Send + Sync + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, record } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(record) = record.take() {
                    match &result {
                        // Lock-free unless a mark happened since admission.
                        Ok(_) if record.cache.marks() != record.marks => {
                            record.cache.clear_on_success(&record.key);
                        }
                        Ok(_) => {}
                        Err(error) if record.filter.is_failure(error) => {
                            record.cache.mark(record.key);
                        }
                        Err(error) => {
                            tracing::trace!(key = ?record.key, %error, "negative cache: error not recorded");
                        }
                    }
                }
                Poll::Ready(result)
            }
            KindProj::Refused { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error.into())),
                None => panic!("negative cache ResponseFuture polled after completion"),
            },
        }
    }
}

impl<F, Filt, K: fmt::Debug> fmt::Debug for ResponseFuture<F, Filt, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { record, .. } => f
                .debug_struct("ResponseFuture::Called")
                .field("key", &record.as_ref().map(|r| &r.key))
                .finish_non_exhaustive(),
            Kind::Refused { error } => f
                .debug_struct("ResponseFuture::Refused")
                .field("error", error)
                .finish(),
        }
    }
}
