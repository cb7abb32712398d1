//! The response future of the [`HandshakeQueue`](super::HandshakeQueue).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::error::{HandshakeTimeout, Overloaded};
use super::handle::Shared;
use crate::BoxError;

const POLLED_AFTER_COMPLETION: &str = "HandshakeQueue ResponseFuture polled after completion";

/// Response future of [`HandshakeQueue`](super::HandshakeQueue).
///
/// It holds the call's queue place (and, once granted, its in-flight slot) until it completes
/// or is dropped: dropping it frees both at once and cancels the inner call if one was started.
#[pin_project]
pub struct ResponseFuture<S, Req, F> {
    #[pin]
    kind: Kind<S, Req, F>,
}

#[pin_project(project = KindProj)]
enum Kind<S, Req, F> {
    /// Refused at submission; yields the error on first poll.
    Refused { error: Option<Overloaded> },
    /// Admitted into the queue.
    Admitted {
        /// Submission + timeout.
        #[pin]
        deadline: Sleep,
        #[pin]
        state: State<F>,
        /// The inner service clone and the request, until the inner call is made.
        pending: Option<(S, Req)>,
        /// The queue place, held from submission to completion.
        admission: Option<OwnedSemaphorePermit>,
        /// The in-flight slot, held from leaving the queue to completion.
        in_flight: Option<OwnedSemaphorePermit>,
        shared: Arc<Shared>,
    },
}

#[pin_project(project = StateProj)]
enum State<F> {
    /// Waiting for an in-flight slot (FIFO among polled waiters).
    Queued { semaphore: PollSemaphore },
    /// Holding an in-flight slot, waiting for the inner service to be ready.
    Ready,
    /// The inner call is running.
    Running {
        #[pin]
        fut: F,
    },
    /// Completed (or failed); permits released.
    Done,
}

impl<S, Req, F> ResponseFuture<S, Req, F> {
    pub(crate) fn refused(error: Overloaded) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }

    pub(crate) fn admitted(
        svc: S,
        req: Req,
        admission: OwnedSemaphorePermit,
        in_flight: Option<OwnedSemaphorePermit>,
        shared: Arc<Shared>,
    ) -> Self {
        let state = match in_flight {
            Some(_) => State::Ready,
            None => State::Queued {
                semaphore: PollSemaphore::new(Arc::clone(&shared.in_flight)),
            },
        };
        ResponseFuture {
            kind: Kind::Admitted {
                deadline: tokio::time::sleep(shared.limits.timeout),
                state,
                pending: Some((svc, req)),
                admission: Some(admission),
                in_flight,
                shared,
            },
        }
    }
}

impl<S, Req, F> Future for ResponseFuture<S, Req, F>
where
    S: Service<Req, Future = F>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<S::Response, S::Error>>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error.into())),
                None => panic!("{POLLED_AFTER_COMPLETION}"),
            },
            KindProj::Admitted {
                deadline,
                mut state,
                pending,
                admission,
                in_flight,
                shared,
            } => {
                // Drive the work first, so that work completing exactly at the deadline wins.
                let result = match poll_work(state.as_mut(), pending, in_flight, cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        ready!(deadline.poll(cx));
                        let limit = shared.limits.timeout;
                        let timed_out_total = shared.timed_out.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::debug!(
                            ?limit,
                            started = in_flight.is_some(),
                            timed_out_total,
                            "handshake timed out"
                        );
                        Err(HandshakeTimeout::new(limit).into())
                    }
                };
                // Release everything now (the inner future, the clone, both permits), not
                // when the caller gets around to dropping this future.
                state.set(State::Done);
                pending.take();
                in_flight.take();
                admission.take();
                Poll::Ready(result)
            }
        }
    }
}

/// Advances `Queued -> Ready -> Running -> result`.
fn poll_work<S, Req, F>(
    mut state: Pin<&mut State<F>>,
    pending: &mut Option<(S, Req)>,
    in_flight: &mut Option<OwnedSemaphorePermit>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req, Future = F>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<S::Response, S::Error>>,
{
    loop {
        match state.as_mut().project() {
            StateProj::Queued { semaphore } => match ready!(semaphore.poll_acquire(cx)) {
                Some(permit) => {
                    *in_flight = Some(permit);
                    state.set(State::Ready);
                }
                // The semaphore is owned by the queue and never closed.
                None => return Poll::Ready(Err(Overloaded::new().into())),
            },
            StateProj::Ready => {
                let Some((service, _)) = pending.as_mut() else {
                    panic!("{POLLED_AFTER_COMPLETION}");
                };
                if let Err(e) = ready!(service.poll_ready(cx)) {
                    return Poll::Ready(Err(e.into()));
                }
                let Some((mut service, request)) = pending.take() else {
                    panic!("{POLLED_AFTER_COMPLETION}");
                };
                let fut = service.call(request);
                state.set(State::Running { fut });
            }
            StateProj::Running { fut } => return fut.poll(cx).map_err(Into::into),
            StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
        }
    }
}

impl<S, Req, F> fmt::Debug for ResponseFuture<S, Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Refused { .. } => "refused",
            Kind::Admitted { state, .. } => match state {
                State::Queued { .. } => "queued",
                State::Ready => "awaiting inner readiness",
                State::Running { .. } => "running",
                State::Done => "done",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
