//! The [`Health`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::layer::{HealthConfig, HealthLayer};
use super::registry::HealthRegistry;
use super::report::{ReportFuture, report};
use crate::BoxError;

/// Answers `GET` and `HEAD` on the health path with a JSON health report and passes every other
/// request to the inner service untouched. See the [module docs](super).
///
/// **Readiness:** `poll_ready` delegates to the inner service, so backpressure passes through.
/// A health request consumes that readiness without calling the inner service; place this layer
/// outside layers that reserve capacity in `poll_ready` if that matters.
#[derive(Clone, Debug)]
pub struct Health<S> {
    inner: S,
    config: Arc<HealthConfig>,
    registry: HealthRegistry,
}

impl<S> Health<S> {
    /// Wraps `inner` with the configuration and registry of `layer` (same as
    /// `layer.layer(inner)`).
    pub fn new(inner: S, layer: &HealthLayer) -> Self {
        Health {
            inner,
            config: Arc::clone(&layer.config),
            registry: layer.registry.clone(),
        }
    }

    /// The registry of checks this service reports (shared with its layer and clones).
    pub fn registry(&self) -> &HealthRegistry {
        &self.registry
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

    /// Starts a health report. Kept out of line so the pass-through path of `call` stays small.
    #[cold]
    #[inline(never)]
    fn report(&self, head: bool) -> ReportFuture {
        report(Arc::clone(&self.config), self.registry.snapshot(), head)
    }

    #[inline]
    fn is_health_request<B>(&self, req: &Request<B>) -> bool {
        (req.method() == Method::GET || req.method() == Method::HEAD)
            && req.uri().path() == self.config.path
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Health<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if self.is_health_request(&req) {
            let head = req.method() == Method::HEAD;
            ResponseFuture::report(self.report(head))
        } else {
            ResponseFuture::inner(self.inner.call(req))
        }
    }
}
