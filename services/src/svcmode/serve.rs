//! [`SvcServer`]: the listeners, the stacked service, the owned DMSG client, and graceful
//! shutdown.

use std::borrow::Cow;
use std::future::{Future, pending};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use skytower_layers::check::CheckReport;
use skytower_layers::{BoxError, HealthLayer, HealthRegistry};
use skytower_transports::connector::{Connection, Listener, Peer};
use skytower_transports::dmsg::Client;
use skytower_transports::dmsg::wire::Addr;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::{SvcConfig, SvcError};

type Driver = Pin<Box<dyn Future<Output = Result<(), SvcError>> + Send>>;

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
}

impl std::fmt::Debug for SvcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvcServer")
            .field("name", &self.name)
            .field("http_addr", &self.http_addr)
            .field("dmsg_addr", &self.dmsg_addr)
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
    /// and [`SvcError::DmsgListen`].
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
            version,
            client: client_config,
            max_connections,
            header_read_timeout,
        } = config;

        let health = HealthLayer::new(name.clone()).version(version);
        let registry = health.registry();

        let tcp = if mode.http() {
            let l = Listener::bind_tcp(addr)
                .await
                .map_err(|source| SvcError::Bind { addr, source })?;
            Some(l)
        } else {
            None
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
        }

        let stack = ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http())
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(health)
            .service(service);

        let (stop, stop_rx) = oneshot::channel();
        let settings = ConnSettings {
            grace,
            max_connections,
            header_read_timeout,
        };
        let driver = Box::pin(drive(tcp, dmsg, stack, settings, stop_rx));
        tracing::info!(
            service = %name,
            %mode,
            http = ?http_addr,
            dmsg = ?dmsg_addr.map(|a| a.to_string()),
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
        })
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

    /// The health registry of the stacked `/health` layer: register the service's own checks.
    pub fn health(&self) -> &HealthRegistry {
        &self.registry
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
            ..
        } = self;
        let result = tokio::select! {
            r = &mut driver => r,
            () = shutdown => {
                tracing::info!(service = %name, "shutting down");
                let _ = stop.send(());
                driver.await
            }
        };
        registry.deregister("dmsg");
        if let Some(client) = client {
            close_client(client).await;
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
