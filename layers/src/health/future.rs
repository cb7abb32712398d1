//! The [`Health`](super::Health) response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;

use super::body::ResponseBody;
use super::report::ReportFuture;
use crate::BoxError;

/// Response future of [`Health`](super::Health): either the inner service's future (not boxed)
/// or the health report being computed. Dropping it cancels the running checks.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
}

#[pin_project(project = StateProj)]
enum State<F> {
    /// A pass-through request: the inner service's future.
    Inner {
        #[pin]
        future: F,
    },
    /// A health request: checks running, then the rendered report.
    Report { future: ReportFuture },
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    pub(crate) fn report(future: ReportFuture) -> Self {
        ResponseFuture {
            state: State::Report { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(ResponseBody::inner))
                .map_err(Into::into),
            StateProj::Report { future } => future
                .as_mut()
                .poll(cx)
                .map(|response| Ok(response.map(ResponseBody::report))),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Inner { .. } => "Inner",
            State::Report { .. } => "Report",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
