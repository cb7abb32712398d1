//! [`SvcServer`]: the listeners, the stacked service, the owned DMSG client, and graceful
//! shutdown.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::{Future, pending};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use skytower_layers::check::{CheckReport, HealthCheck};
use skytower_layers::{BoxError, HealthLayer, HealthRegistry};
use skytower_transports::connector::{Connection, Listener, Peer};
use skytower_transports::dmsg::Client;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::task::AbortOnDrop;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::metrics::{RequestMetricsLayer, record_dmsg_client, transport_label};
use super::{SvcConfig, SvcError};

type Driver = Pin<Box<dyn Future<Output = Result<(), SvcError>> + Send>>;
type Hook = Arc<dyn Fn() + Send + Sync>;
type Hooks = Arc<Mutex<Vec<Hook>>>;

/// Most [`SvcServer::on_scrape`] hooks.
const MAX_HOOKS: usize = 64;
/// Most concurrent connections to the metrics listener.
const MAX_METRICS_CONNECTIONS: usize = 16;

struct MetricsEndpoint {
    listener: TcpListener,
    addr: SocketAddr,
    handle: PrometheusHandle,
}

/// A started service: listeners bound, DMSG client (if any) started and listening. Nothing is
/// served until [`run_until`](Self::run_until) is awaited; dropping it without running closes
/// the listeners and the DMSG client (without removing the discovery entry).
pub struct SvcServer {
    name: Cow<'static, str>,
    http_addr: Option<SocketAddr>,
    dmsg_addr: Option<Addr>,
    client: Option<Arc<Client>>,
    registry: HealthRegistry,
    driver: Driver,
    stop: oneshot::Sender<()>,
    metrics: Option<MetricsEndpoint>,
    hooks: Hooks,
}

impl std::fmt::Debug for SvcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvcServer")
            .field("name", &self.name)
            .field("http_addr", &self.http_addr)
            .field("dmsg_addr", &self.dmsg_addr)
            .field("metrics_addr", &self.metrics_addr())
            .finish_non_exhaustive()
    }
}

impl SvcServer {
    /// Validates `config`, binds the HTTP listener (modes http, dual), starts the DMSG client
    /// and listens on the DMSG port (modes dmsg, dual), and stacks the request-id, trace and
    /// health layers on `service`.
    ///
    /// `service` is any tower HTTP service over hyper's request body (an `axum::Router` is
    /// one); each connection gets a clone, and each request carries the connection's
    /// [`Peer`] (TCP socket address or DMSG address) in its extensions.
    ///
    /// # Errors
    ///
    /// [`SvcError::KeyRequired`] and the other [`SvcConfig::validate`] errors, [`SvcError::Bind`]
    /// (HTTP or metrics address), [`SvcError::DmsgListen`] and [`SvcError::Metrics`].
    pub async fn start<S, B>(
        config: SvcConfig,
        name: impl Into<Cow<'static, str>>,
        service: S,
    ) -> Result<SvcServer, SvcError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + std::fmt::Display,
    {
        config.validate()?;
        let name = name.into();
        let SvcConfig {
            addr,
            key,
            discovery,
            dmsg_port,
            mode,
            grace,
            metrics,
            version,
            client: client_config,
            max_connections,
            header_read_timeout,
            http_listener,
        } = config;

        let metrics = match metrics {
            Some(addr) => {
                let handle = super::metrics::recorder().map_err(SvcError::Metrics)?;
                let (listener, addr) = super::bind_tcp(addr).await?;
                Some(MetricsEndpoint {
                    listener,
                    addr,
                    handle,
                })
            }
            None => None,
        };
        let hooks: Hooks = Arc::new(Mutex::new(Vec::new()));

        let health = HealthLayer::new(name.clone()).version(version);
        let registry = health.registry();

        let tcp = match (mode.http(), http_listener) {
            (true, Some(l)) => Some(Listener::Tcp(l)),
            (true, None) => Some(
                Listener::bind_tcp(addr)
                    .await
                    .map_err(|source| SvcError::Bind { addr, source })?,
            ),
            (false, _) => None,
        };
        let http_addr = match &tcp {
            Some(Listener::Tcp(l)) => Some(
                l.local_addr()
                    .map_err(|source| SvcError::Bind { addr, source })?,
            ),
            _ => None,
        };

        let (client, dmsg) = match (mode.dmsg(), key, discovery) {
            (true, Some(key), Some(discovery)) => {
                let client = Arc::new(Client::start(key, discovery, client_config));
                let listener =
                    Listener::dmsg(&client, dmsg_port).map_err(|source| SvcError::DmsgListen {
                        port: dmsg_port,
                        source,
                    })?;
                (Some(client), Some(listener))
            }
            _ => (None, None),
        };
        let dmsg_addr = client
            .as_ref()
            .map(|c| Addr::new(c.public_key(), dmsg_port));
        if let (Some(client), Some(address)) = (&client, dmsg_addr) {
            let weak = Arc::downgrade(client);
            registry
                .register("dmsg", move || {
                    dmsg_report(weak.upgrade().as_deref(), address)
                })
                .map_err(|e| SvcError::Health(e.to_string()))?;
            let weak = Arc::downgrade(client);
            let service = name.to_string();
            lock(&hooks).push(Arc::new(move || {
                if let Some(client) = weak.upgrade() {
                    record_dmsg_client(&service, &client);
                }
            }));
        }

        let stack = ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http())
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(RequestMetricsLayer::new(&name, metrics.is_some()))
            .layer(health)
            .service(service);

        let (stop, stop_rx) = oneshot::channel();
        let settings = ConnSettings {
            grace,
            max_connections,
            header_read_timeout,
        };
        let driver = Box::pin(drive(tcp, dmsg, stack, settings, name.to_string(), stop_rx));
        tracing::info!(
            service = %name,
            %mode,
            http = ?http_addr,
            dmsg = ?dmsg_addr.map(|a| a.to_string()),
            metrics = ?metrics.as_ref().map(|m| m.addr),
            "service started"
        );
        Ok(SvcServer {
            name,
            http_addr,
            dmsg_addr,
            client,
            registry,
            driver,
            stop,
            metrics,
            hooks,
        })
    }

    /// The bound metrics address (with [`SvcConfig::metrics`]).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// Runs `hook` before each metrics scrape, so the service can report the state of its own
    /// layers (see [`metrics::record_handshake_queue`](super::metrics::record_handshake_queue)
    /// and the other `record_*` helpers). Hooks must be quick and must not block.
    ///
    /// # Errors
    ///
    /// [`SvcError::TooManyHooks`] beyond 64 hooks.
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) -> Result<(), SvcError> {
        let mut hooks = lock(&self.hooks);
        if hooks.len() >= MAX_HOOKS {
            return Err(SvcError::TooManyHooks(MAX_HOOKS));
        }
        hooks.push(Arc::new(hook));
        Ok(())
    }

    /// The bound HTTP address (modes http and dual; `None` in mode dmsg, which has no TCP
    /// listener).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The DMSG address (`pk:port`) served on (modes dmsg and dual).
    pub fn dmsg_addr(&self) -> Option<Addr> {
        self.dmsg_addr
    }

    /// The DMSG client this service owns (modes dmsg and dual). Do not keep clones of it past
    /// the shutdown: the entry is removed by closing the client.
    pub fn dmsg_client(&self) -> Option<&Client> {
        self.client.as_deref()
    }

    /// A weak handle on the DMSG client this service owns (modes dmsg and dual), for tasks that
    /// live beside the service (a control API). Upgrade it only for the duration of one
    /// operation: [`run_until`](Self::run_until) waits briefly for other strong references to
    /// go away before closing the client (and removing its discovery entry).
    pub fn dmsg_client_weak(&self) -> Option<std::sync::Weak<Client>> {
        self.client.as_ref().map(Arc::downgrade)
    }

    /// The health registry of the stacked `/health` layer: register the service's own checks.
    pub fn health(&self) -> &HealthRegistry {
        &self.registry
    }

    /// Registers the service's own `/health` check `name` (see [`health`](Self::health)).
    ///
    /// # Errors
    ///
    /// [`SvcError::Health`] when the registry is full.
    pub fn add_check(
        &self,
        name: impl Into<Cow<'static, str>>,
        check: impl HealthCheck,
    ) -> Result<(), SvcError> {
        self.registry
            .register(name, check)
            .map_err(|e| SvcError::Health(e.to_string()))
    }

    /// Like [`run_until`](Self::run_until), with a task running beside the service: `task`
    /// is spawned with a [`CancellationToken`] when serving starts; after the graceful
    /// shutdown the token is cancelled and the task awaited before this returns (a panic in it
    /// is logged as `<task_name> task failed`). The task is aborted if this future is dropped.
    ///
    /// # Errors
    ///
    /// As [`run_until`](Self::run_until).
    pub async fn run_beside<F, Fut>(
        self,
        shutdown: impl Future<Output = ()>,
        task_name: &str,
        task: F,
    ) -> Result<(), SvcError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(task(stop.clone()));
        let _owner = AbortOnDrop::new(&task);
        let result = self.run_until(shutdown).await;
        stop.cancel();
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{task_name} task failed");
        }
        result
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting on every
    /// listener (the TCP port is closed, the DMSG port freed), lets in-flight requests finish
    /// for up to the grace period, closes the remaining connections, and closes the DMSG client,
    /// which removes its entry from discovery.
    ///
    /// # Errors
    ///
    /// [`SvcError::ListenersClosed`] if every listener failed before the shutdown (the DMSG
    /// client is still closed).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), SvcError> {
        let SvcServer {
            name,
            client,
            registry,
            mut driver,
            stop,
            metrics,
            hooks,
            ..
        } = self;
        // The metrics listener lives exactly as long as this call.
        let metrics = metrics.map(|m| {
            let task = tokio::spawn(serve_metrics(m, hooks));
            (AbortOnDrop::new(&task), task)
        });
        let result = tokio::select! {
            r = &mut driver => r,
            () = shutdown => {
                tracing::info!(service = %name, "shutting down");
                // Withdraw the DMSG entry first, while every listener (and a discovery served by
                // this very process) still works, so nobody dials us during the grace period.
                if let Some(client) = &client {
                    client.withdraw().await;
                }
                let _ = stop.send(());
                driver.await
            }
        };
        registry.deregister("dmsg");
        if let Some(client) = client {
            close_client(client).await;
        }
        // Stop the metrics listener and wait until its socket is closed.
        if let Some((owner, task)) = metrics {
            drop(owner); // aborts
            let _ = task.await;
        }
        tracing::info!(service = %name, "stopped");
        result
    }
}

/// Closes the owned client (removing its discovery entry). Every strong reference other than
/// ours lived in connection tasks, which are all gone by now; a health check that upgraded
/// its weak reference a moment ago is waited for briefly.
async fn close_client(mut client: Arc<Client>) {
    for _ in 0..100 {
        match Arc::try_unwrap(client) {
            Ok(c) => {
                c.close().await;
                return;
            }
            Err(c) => {
                client = c;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::warn!("the DMSG client is still shared; dropping it without removing its entry");
}

fn dmsg_report(client: Option<&Client>, address: Addr) -> CheckReport {
    let Some(client) = client else {
        return CheckReport::down(serde_json::json!({
            "address": address.to_string(),
            "error": "closed",
        }));
    };
    let sessions = client.sessions();
    let servers: Vec<String> = sessions.iter().map(|s| s.server.to_string()).collect();
    let details = serde_json::json!({
        "address": address.to_string(),
        "servers": servers,
        "sessions": sessions.len(),
        "streams": sessions.iter().map(|s| s.open_streams).sum::<usize>(),
    });
    if sessions.is_empty() {
        CheckReport::degraded(details)
    } else {
        CheckReport::ok().with_details(details)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `GET /metrics` (Prometheus text format) until dropped.
async fn serve_metrics(endpoint: MetricsEndpoint, hooks: Hooks) {
    let MetricsEndpoint {
        listener, handle, ..
    } = endpoint;
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let io = match listener.accept().await {
            Ok((io, _)) => io,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if conns.len() >= MAX_METRICS_CONNECTIONS {
            tracing::debug!("too many metrics connections; dropping one");
            continue;
        }
        let handle = handle.clone();
        let hooks = hooks.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = metrics_response(&req, &handle, &hooks);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}

fn metrics_response(
    req: &Request<Incoming>,
    handle: &PrometheusHandle,
    hooks: &Hooks,
) -> Response<Full<Bytes>> {
    let status = |code: StatusCode| {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = code;
        res
    };
    if req.uri().path() != "/metrics" {
        return status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let hooks: Vec<Hook> = lock(hooks).clone();
    for hook in hooks {
        hook();
    }
    handle.run_upkeep();
    let body = handle.render();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

#[derive(Clone, Copy, Debug)]
struct ConnSettings {
    grace: Duration,
    max_connections: usize,
    header_read_timeout: Duration,
}

async fn accept_on(l: &mut Option<Listener>) -> std::io::Result<(Connection, Peer)> {
    match l {
        Some(l) => l.accept().await,
        None => pending().await,
    }
}

/// The accept loop over both listeners, then the bounded graceful shutdown.
async fn drive<S, B>(
    mut tcp: Option<Listener>,
    mut dmsg: Option<Listener>,
    service: S,
    settings: ConnSettings,
    name: String,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), SvcError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    let mut result = Ok(());
    loop {
        // Reap finished connections so the set stays as small as the live ones.
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            _ = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = accept_on(&mut tcp) => r.map_err(|e| ("http", e)),
            r = accept_on(&mut dmsg) => r.map_err(|e| ("dmsg", e)),
        };
        let (io, peer) = match accepted {
            Ok(pair) => pair,
            Err(("dmsg", e)) => {
                tracing::error!(error = %e, "the DMSG listener closed; no longer serving on DMSG");
                dmsg = None;
                if tcp.is_none() {
                    result = Err(SvcError::ListenersClosed);
                    break;
                }
                continue;
            }
            Err((_, e)) => {
                // Fatal accept errors (e.g. out of file descriptors) usually pass: back off.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        tracing::debug!(%peer, "connection accepted");
        let open = metrics::gauge!(
            "svc_open_connections",
            "service" => name.clone(),
            "transport" => transport_label(Some(&peer)),
        );
        open.increment(1.0);
        let svc = service
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                req
            });
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    // Stop accepting: the TCP port is closed and the DMSG port freed.
    drop(tcp);
    drop(dmsg);
    let live = conns.len();
    tracing::info!(connections = live, grace = ?settings.grace, "draining connections");
    match tokio::time::timeout(settings.grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections finished"),
        Err(_) => {
            tracing::warn!(
                remaining = conns.len(),
                "grace period over; closing the remaining connections"
            );
            conns.abort_all();
        }
    }
    while conns.join_next().await.is_some() {}
    result
}
