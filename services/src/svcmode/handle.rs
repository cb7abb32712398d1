//! [`SvcHandle`]: a started [`SvcServer`] together with the service it serves, and the
//! [`Maintain`] task that runs beside the service while it is served.

use std::future::Future;
use std::net::SocketAddr;

use skytower_transports::dmsg::wire::Addr;
use tokio_util::sync::CancellationToken;

use super::{SvcError, SvcServer};

/// A service's upkeep while it is served (purging expired records, refreshing a snapshot,
/// scraping): [`SvcHandle::serve`] runs [`maintain`](Self::maintain) beside the service.
pub trait Maintain: Send + Sync + 'static {
    /// The error [`SvcHandle::serve`] returns: the service's own start-up/run error, which
    /// wraps the service mode's [`SvcError`].
    type Error: From<SvcError>;

    /// The task's name in logs (`"<TASK> task failed"` if it panics).
    const TASK: &'static str;

    /// Runs the upkeep until `stop` is cancelled.
    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// A started service: its [`SvcServer`] (listeners bound, in DMSG modes its DMSG client
/// started) and the service, ready to [`serve`](Self::serve).
///
/// Every deployment service's server type is this handle over its service (for example
/// `route_finder::RouteFinderServer` is `SvcHandle<RouteFinder>`); the service's own module
/// adds the constructors (`bind`, `bind_with`, ...), which start the [`SvcServer`] with the
/// service's router and `/health` checks and then call [`new`](Self::new).
#[derive(Debug)]
pub struct SvcHandle<S> {
    server: SvcServer,
    service: S,
}

impl<S> SvcHandle<S> {
    /// Pairs a started `server` with the `service` it serves.
    pub fn new(server: SvcServer, service: S) -> Self {
        SvcHandle { server, service }
    }

    /// The bound HTTP address (modes http and dual).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.http_addr()
    }

    /// The DMSG address (`pk:port`) served on (modes dmsg and dual).
    pub fn dmsg_addr(&self) -> Option<Addr> {
        self.server.dmsg_addr()
    }

    /// The service-mode server (DMSG client, health registry, metrics hooks).
    pub fn svc(&self) -> &SvcServer {
        &self.server
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The server and the service.
    pub fn into_parts(self) -> (SvcServer, S) {
        (self.server, self.service)
    }
}

impl<S: Maintain> SvcHandle<S> {
    /// Serves until `shutdown` completes while the service's [`Maintain`] task runs, then
    /// shuts down gracefully (see [`SvcServer::run_until`]: stop accepting, let in-flight
    /// requests finish for the grace period, close the DMSG side) and stops the task before
    /// returning (see [`SvcServer::run_beside`]).
    ///
    /// # Errors
    ///
    /// The service's error wrapping [`SvcError::ListenersClosed`] when every listener failed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), S::Error> {
        let SvcHandle { server, service } = self;
        server
            .run_beside(shutdown, S::TASK, move |stop| async move {
                service.maintain(stop).await;
            })
            .await
            .map_err(S::Error::from)
    }
}
