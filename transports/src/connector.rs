//! One connector for TCP and DMSG: a `tower::Service<Target>` (and `Service<Uri>` for
//! hyper-util's client) whose response is a [`Connection`] implementing tokio
//! `AsyncRead + AsyncWrite`, so `tower::make::MakeConnection` applies and any tower layer stacks
//! on it. The accept side is [`Listener`], yielding connections from TCP and DMSG alike.
//!
//! ```
//! use skytower_transports::connector::Target;
//!
//! let t: Target = "tcp://127.0.0.1:8080".parse().unwrap();
//! assert_eq!(t.to_string(), "tcp://127.0.0.1:8080");
//! let pk = skytower_transports::identity::SecretKey::generate().unwrap().public_key();
//! let t: Target = format!("dmsg://{pk}").parse().unwrap(); // port 80 implied
//! assert_eq!(t.to_string(), format!("dmsg://{pk}:80"));
//! assert!("dmsg://not-a-key:80".parse::<Target>().is_err());
//! let t: Target = "http://example.org/path".parse().unwrap(); // port 80 implied
//! assert_eq!(t.to_string(), "tcp://example.org:80");
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection as HyperConnection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::Service;

use crate::dmsg::client::{Client, ClientDialError};
use crate::dmsg::stream::DmsgStream;
use crate::dmsg::wire::{Addr, AddrParseError};

/// Where to connect, with its transport explicit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP host (name or IP) and port.
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port.
        port: u16,
    },
    /// A DMSG address.
    Dmsg(Addr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Target::Dmsg(addr) => write!(f, "dmsg://{addr}"),
        }
    }
}

/// Why a target could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URI.
    #[error("invalid target URI: {0}")]
    Uri(#[from] http::uri::InvalidUri),
    /// A scheme other than tcp, http, https, dmsg.
    #[error("unsupported scheme {0:?} (expected tcp, http, https or dmsg)")]
    Scheme(String),
    /// No host.
    #[error("target has no host")]
    NoHost,
    /// A TCP target without a port and no default for its scheme.
    #[error("tcp target needs a port")]
    NoPort,
    /// A bad DMSG address.
    #[error(transparent)]
    Dmsg(#[from] AddrParseError),
}

impl TryFrom<&Uri> for Target {
    type Error = TargetError;

    fn try_from(uri: &Uri) -> Result<Self, TargetError> {
        let scheme = uri.scheme_str().unwrap_or("");
        let host = uri.host().ok_or(TargetError::NoHost)?;
        match scheme {
            "dmsg" => {
                let port = uri.port_u16().unwrap_or(80);
                Ok(Target::Dmsg(format!("{host}:{port}").parse()?))
            }
            "tcp" | "http" | "https" => {
                let default = match scheme {
                    "http" => Some(80),
                    "https" => Some(443),
                    _ => None,
                };
                let port = uri.port_u16().or(default).ok_or(TargetError::NoPort)?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Ok(Target::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            other => Err(TargetError::Scheme(other.to_owned())),
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        let uri: Uri = s.parse()?;
        Target::try_from(&uri)
    }
}

impl From<Addr> for Target {
    fn from(addr: Addr) -> Self {
        Target::Dmsg(addr)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

/// The other end of a [`Connection`]. Also put in hyper responses' extensions (via
/// `Connected::extra`), so an HTTP client can see whom it talked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A DMSG peer (its public key and port).
    Dmsg(Addr),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "tcp://{a}"),
            Peer::Dmsg(a) => write!(f, "dmsg://{a}"),
        }
    }
}

#[derive(Debug)]
enum Io {
    Tcp(TcpStream),
    Dmsg(Box<DmsgStream>),
}

/// A connection over TCP or DMSG: tokio `AsyncRead + AsyncWrite`.
#[derive(Debug)]
pub struct Connection {
    io: Io,
    peer: Peer,
}

impl Connection {
    /// The other end.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Wraps a TCP stream.
    pub fn tcp(stream: TcpStream) -> io::Result<Self> {
        let peer = Peer::Tcp(stream.peer_addr()?);
        Ok(Connection {
            io: Io::Tcp(stream),
            peer,
        })
    }

    /// Wraps a DMSG stream.
    pub fn dmsg(stream: DmsgStream) -> Self {
        let peer = Peer::Dmsg(stream.remote_addr());
        Connection {
            io: Io::Dmsg(Box::new(stream)),
            peer,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Dmsg(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Dmsg(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Dmsg(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Dmsg(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl HyperConnection for Connection {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.peer)
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target was malformed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// TCP connect failed.
    #[error("connect {target}: {source}")]
    Tcp {
        /// Where.
        target: Target,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The DMSG dial failed.
    #[error(transparent)]
    Dmsg(#[from] ClientDialError),
    /// A DMSG target, but this connector has no DMSG client.
    #[error("{0}: this connector has no DMSG client")]
    NoDmsgClient(Target),
    /// The connect timeout elapsed.
    #[error("connect {0}: timed out")]
    Timeout(Target),
}

/// Connects to [`Target`]s over TCP or DMSG. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Connector {
    dmsg: Option<Arc<Client>>,
    connect_timeout: Option<Duration>,
}

impl Connector {
    /// A TCP-only connector.
    pub fn new() -> Self {
        Connector::default()
    }

    /// A connector that dials DMSG targets through `client`.
    pub fn with_dmsg(client: Arc<Client>) -> Self {
        Connector {
            dmsg: Some(client),
            connect_timeout: None,
        }
    }

    /// Bounds each connect (TCP connect, or the whole DMSG dial ladder).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The DMSG client, if any.
    pub fn dmsg_client(&self) -> Option<&Arc<Client>> {
        self.dmsg.as_ref()
    }

    async fn connect(self, target: Target) -> Result<Connection, ConnectError> {
        let work = async {
            match &target {
                Target::Tcp { host, port } => {
                    let stream =
                        TcpStream::connect((host.as_str(), *port))
                            .await
                            .map_err(|source| ConnectError::Tcp {
                                target: target.clone(),
                                source,
                            })?;
                    let _ = stream.set_nodelay(true);
                    Connection::tcp(stream).map_err(|source| ConnectError::Tcp {
                        target: target.clone(),
                        source,
                    })
                }
                Target::Dmsg(addr) => {
                    let client = self
                        .dmsg
                        .as_ref()
                        .ok_or_else(|| ConnectError::NoDmsgClient(target.clone()))?;
                    Ok(Connection::dmsg(client.dial(*addr).await?))
                }
            }
        };
        match self.connect_timeout {
            Some(t) => tokio::time::timeout(t, work)
                .await
                .map_err(|_| ConnectError::Timeout(target.clone()))?,
            None => work.await,
        }
    }
}

/// The future of [`Connector`]'s services (boxed: hyper-util needs `Unpin`).
pub type ConnectFuture<T> = Pin<Box<dyn Future<Output = Result<T, ConnectError>> + Send>>;

impl Service<Target> for Connector {
    type Response = Connection;
    type Error = ConnectError;
    type Future = ConnectFuture<Connection>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Target) -> Self::Future {
        Box::pin(self.clone().connect(target))
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<Connection>;
    type Error = ConnectError;
    type Future = ConnectFuture<TokioIo<Connection>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let target = Target::try_from(&uri)?;
            this.connect(target).await.map(TokioIo::new)
        })
    }
}

/// Accepts connections over TCP or DMSG, with the peer of each. Usable with hyper-util's server
/// (wrap each connection in `TokioIo`) and, with the `axum` feature, with `axum::serve`.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A DMSG listener.
    Dmsg(crate::dmsg::ports::Listener, Addr),
}

impl Listener {
    /// Binds a TCP listener.
    pub async fn bind_tcp(addr: SocketAddr) -> io::Result<Self> {
        Ok(Listener::Tcp(tokio::net::TcpListener::bind(addr).await?))
    }

    /// Listens on DMSG `port` of `client`.
    pub fn dmsg(client: &Client, port: u16) -> Result<Self, crate::dmsg::ports::PortError> {
        let l = client.listen(port)?;
        Ok(Listener::Dmsg(l, Addr::new(client.public_key(), port)))
    }

    /// Accepts the next connection. Transient TCP accept errors (e.g. a peer that reset before
    /// we got to it) are skipped; a closed DMSG listener returns `Err(ConnectionAborted)`.
    pub async fn accept(&mut self) -> io::Result<(Connection, Peer)> {
        match self {
            Listener::Tcp(l) => loop {
                match l.accept().await {
                    Ok((s, addr)) => {
                        let _ = s.set_nodelay(true);
                        let peer = Peer::Tcp(addr);
                        return Ok((
                            Connection {
                                io: Io::Tcp(s),
                                peer,
                            },
                            peer,
                        ));
                    }
                    Err(e) if is_transient(&e) => {
                        tracing::debug!(error = %e, "transient accept error");
                    }
                    Err(e) => return Err(e),
                }
            },
            Listener::Dmsg(l, _) => match l.accept().await {
                Some(s) => {
                    let c = Connection::dmsg(s);
                    let peer = c.peer;
                    Ok((c, peer))
                }
                None => Err(io::ErrorKind::ConnectionAborted.into()),
            },
        }
    }

    /// Where this listener accepts.
    pub fn local_addr(&self) -> io::Result<Peer> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Peer::Tcp),
            Listener::Dmsg(_, addr) => Ok(Peer::Dmsg(*addr)),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(feature = "axum")]
impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = Peer;

    async fn accept(&mut self) -> (Connection, Peer) {
        loop {
            match Listener::accept(self).await {
                Ok(pair) => return pair,
                Err(e) => {
                    // A closed DMSG listener or a fatal TCP error: nothing more will come. Back
                    // off instead of spinning; graceful shutdown stops calling accept.
                    tracing::warn!(error = %e, "listener failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Listener::local_addr(self)
    }
}
