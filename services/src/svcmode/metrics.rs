//! Prometheus metrics (`--metrics ADDR`): request counts and latency per route and transport,
//! open connections, and the state of the DMSG client and of the resilience layers, rendered by
//! `metrics-exporter-prometheus` on a separate listener.
//!
//! Metrics (every one labelled `service`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `http_requests_total` | counter | `route`, `method`, `status`, `transport` (`tcp`/`dmsg`) |
//! | `http_request_duration_seconds` | histogram | `route`, `transport` |
//! | `svc_open_connections` | gauge | `transport` |
//! | `dmsg_sessions`, `dmsg_streams` | gauge | — |
//! | `dmsg_session_bytes` | gauge (bytes moved by the current sessions) | `direction` (`in`/`out`) |
//! | `dmsg_negative_cache_entries`, `dmsg_breaker_open_keys` | gauge | — |
//! | `handshake_queue_in_flight`, `handshake_queue_queued` | gauge | `queue` |
//! | `handshake_queue_refused_total`, `handshake_queue_timed_out_total` | counter | `queue` |
//! | `breaker_open_keys` | gauge | `breaker` |
//! | `negative_cache_entries` | gauge | `cache` |
//!
//! **Routes**: a layer outside the service cannot see which route of an `axum::Router`
//! matched, so `route` is `/health` for the health endpoint, the matched route pattern for
//! routers that add [`RouteLabelLayer`] with `Router::route_layer`, and `unmatched`
//! otherwise, which keeps the label set bounded (no raw paths).
//!
//! The DMSG gauges are sampled at each scrape; a service reports its own layers (a handshake
//! queue, a breaker, a negative cache) with [`SvcServer::on_scrape`](super::SvcServer::on_scrape)
//! and the `record_*` helpers here.
//!
//! The metrics recorder is process-global (the `metrics` facade's): the first service started
//! with `--metrics` installs it; another recorder installed earlier by the embedding program is
//! an error ([`SvcError::Metrics`](super::SvcError::Metrics)).

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use http::{Method, Request, Response};
use metrics::{SharedString, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use skytower_layers::circuit_breaker::BreakerHandle;
use skytower_layers::handshake_queue::HandshakeQueueHandle;
use skytower_layers::negative_cache::NegativeCacheHandle;
use skytower_transports::connector::Peer;
use skytower_transports::dmsg::Client;
use tower::{Layer, Service};

/// Latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub(crate) fn recorder() -> Result<PrometheusHandle, String> {
    RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// The route pattern a request matched, put in the response's extensions (by
/// [`RouteLabelLayer`], or by any service that knows its routes) for the `route` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteLabel(pub Arc<str>);

/// Copies axum's `MatchedPath` into the response as a [`RouteLabel`]. Add it with
/// `Router::route_layer(RouteLabelLayer)` (it must run after routing) to get per-route metrics.
///
/// ```
/// use axum::{Router, routing::get};
/// use skytower_services::svcmode::metrics::RouteLabelLayer;
///
/// let app: Router = Router::new()
///     .route("/entry/{pk}", get(|| async { "entry" }))
///     .route_layer(RouteLabelLayer);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteLabelLayer;

impl<S> Layer<S> for RouteLabelLayer {
    type Service = RouteLabelService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteLabelService { inner }
    }
}

/// The service of [`RouteLabelLayer`].
#[derive(Clone, Debug)]
pub struct RouteLabelService<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RouteLabelService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RouteLabelFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| RouteLabel(Arc::from(m.as_str())));
        RouteLabelFuture {
            inner: self.inner.call(req),
            route,
        }
    }
}

/// The response future of [`RouteLabelService`]: the inner response with its [`RouteLabel`].
#[pin_project::pin_project]
#[derive(Debug)]
pub struct RouteLabelFuture<F> {
    #[pin]
    inner: F,
    route: Option<RouteLabel>,
}

impl<F, ResB, E> Future for RouteLabelFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(route) = this.route.take() {
            res.extensions_mut().insert(route);
        }
        Poll::Ready(Ok(res))
    }
}

/// Records `http_requests_total` and `http_request_duration_seconds` (when enabled).
#[derive(Clone, Debug)]
pub(crate) struct RequestMetricsLayer {
    service: Arc<str>,
    health_path: &'static str,
    enabled: bool,
}

impl RequestMetricsLayer {
    pub(crate) fn new(service: &str, enabled: bool) -> Self {
        RequestMetricsLayer {
            service: Arc::from(service),
            health_path: "/health",
            enabled,
        }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequestMetricsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RequestMetrics<S> {
    inner: S,
    layer: RequestMetricsLayer,
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub(crate) fn transport_label(peer: Option<&Peer>) -> &'static str {
    match peer {
        Some(Peer::Tcp(_)) => "tcp",
        Some(Peer::Dmsg(_)) => "dmsg",
        None => "other",
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RequestMetrics<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RequestMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let meta = self.layer.enabled.then(|| RequestMeta {
            service: self.layer.service.clone(),
            method: method_label(req.method()),
            transport: transport_label(req.extensions().get::<Peer>()),
            health: req.uri().path() == self.layer.health_path,
            started: tokio::time::Instant::now(),
        });
        RequestMetricsFuture {
            inner: self.inner.call(req),
            meta,
        }
    }
}

/// What [`RequestMetrics`] knows of a request before it is answered.
#[derive(Debug)]
struct RequestMeta {
    service: Arc<str>,
    method: &'static str,
    transport: &'static str,
    health: bool,
    started: tokio::time::Instant,
}

impl RequestMeta {
    fn record<ResB, E>(self, result: &Result<Response<ResB>, E>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let (status, route): (SharedString, SharedString) = match result {
            Ok(res) => {
                let route = match res.extensions().get::<RouteLabel>() {
                    Some(r) => SharedString::from(r.0.clone()), // an `Arc` clone
                    None if self.health => SharedString::const_str("/health"),
                    None => SharedString::const_str("unmatched"),
                };
                (status_label(res.status()), route)
            }
            Err(_) => (
                SharedString::const_str("error"),
                SharedString::const_str("unmatched"),
            ),
        };
        // The service label shares the layer's `Arc<str>`: no copy per request.
        let service = SharedString::from(self.service);
        counter!(
            "http_requests_total",
            "service" => service.clone(),
            "route" => route.clone(),
            "method" => self.method,
            "status" => status,
            "transport" => self.transport,
        )
        .increment(1);
        histogram!(
            "http_request_duration_seconds",
            "service" => service,
            "route" => route,
            "transport" => self.transport,
        )
        .record(elapsed);
    }
}

/// The `status` label: the common codes without an allocation.
fn status_label(status: http::StatusCode) -> SharedString {
    const COMMON: [(u16, &str); 14] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (429, "429"),
        (500, "500"),
        (503, "503"),
    ];
    let code = status.as_u16();
    match COMMON.iter().find(|(c, _)| *c == code) {
        Some((_, label)) => SharedString::const_str(label),
        None => SharedString::from(code.to_string()),
    }
}

/// The response future of [`RequestMetrics`]: records the request when the response (or the
/// error) is ready; nothing when metrics are off.
#[pin_project::pin_project]
#[derive(Debug)]
pub(crate) struct RequestMetricsFuture<F> {
    #[pin]
    inner: F,
    meta: Option<RequestMeta>,
}

impl<F, ResB, E> Future for RequestMetricsFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(meta) = this.meta.take() {
            meta.record(&result);
        }
        Poll::Ready(result)
    }
}

/// Sets the DMSG client gauges of `service`.
pub(crate) fn record_dmsg_client(service: &str, client: &Client) {
    let sessions = client.sessions();
    let service = service.to_owned();
    gauge!("dmsg_sessions", "service" => service.clone()).set(sessions.len() as f64);
    let streams: usize = sessions.iter().map(|s| s.open_streams).sum();
    gauge!("dmsg_streams", "service" => service.clone()).set(streams as f64);
    let bytes_in: u64 = sessions.iter().map(|s| s.bytes_in).sum();
    let bytes_out: u64 = sessions.iter().map(|s| s.bytes_out).sum();
    gauge!("dmsg_session_bytes", "service" => service.clone(), "direction" => "in")
        .set(bytes_in as f64);
    gauge!("dmsg_session_bytes", "service" => service.clone(), "direction" => "out")
        .set(bytes_out as f64);
    gauge!("dmsg_negative_cache_entries", "service" => service.clone())
        .set(client.negative_cache().len() as f64);
    let open = client.breaker().map_or(0, |b| b.open_keys().len());
    gauge!("dmsg_breaker_open_keys", "service" => service).set(open as f64);
}

/// Reports a handshake queue's state (for [`SvcServer::on_scrape`](super::SvcServer::on_scrape)).
pub fn record_handshake_queue(service: &str, queue: &str, handle: &HandshakeQueueHandle) {
    let (service, queue) = (service.to_owned(), queue.to_owned());
    gauge!("handshake_queue_in_flight", "service" => service.clone(), "queue" => queue.clone())
        .set(handle.in_flight() as f64);
    gauge!("handshake_queue_queued", "service" => service.clone(), "queue" => queue.clone())
        .set(handle.queued() as f64);
    counter!("handshake_queue_refused_total", "service" => service.clone(), "queue" => queue.clone())
        .absolute(handle.refused_total());
    counter!("handshake_queue_timed_out_total", "service" => service, "queue" => queue)
        .absolute(handle.timed_out_total());
}

/// Reports a circuit breaker's open keys (for [`SvcServer::on_scrape`](super::SvcServer::on_scrape)).
pub fn record_breaker<K>(service: &str, breaker: &str, handle: &BreakerHandle<K>)
where
    K: Clone + Eq + Hash + std::fmt::Debug,
{
    gauge!("breaker_open_keys", "service" => service.to_owned(), "breaker" => breaker.to_owned())
        .set(handle.open_keys().len() as f64);
}

/// Reports a negative cache's size (for [`SvcServer::on_scrape`](super::SvcServer::on_scrape)).
pub fn record_negative_cache<K>(service: &str, cache: &str, handle: &NegativeCacheHandle<K>)
where
    K: Eq + Hash + std::fmt::Debug,
{
    gauge!("negative_cache_entries", "service" => service.to_owned(), "cache" => cache.to_owned())
        .set(handle.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_decimal_code() {
        for code in [
            200, 201, 204, 304, 400, 404, 413, 429, 500, 503, 101, 418, 599,
        ] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(&*status_label(status), code.to_string().as_str());
        }
    }
}
