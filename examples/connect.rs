//! One connector for TCP and DMSG, with resilience layers, under hyper's HTTP client.
//!
//! Run: `cargo run --example connect`
//!
//! Brings up an in-process DMSG network (discovery + one relay server) on loopback, serves the
//! same tiny HTTP service over plain TCP and over DMSG, and fetches a page from each through one
//! hyper-util client whose connector stack is
//! `Timeout ▸ CircuitBreaker (per destination) ▸ Connector (tcp:// | dmsg://)`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skytower::layers::BoxError;
use skytower::layers::circuit_breaker::CircuitBreakerLayer;
use skytower::transports::connector::{Connection, Connector, Listener, Peer};
use skytower::transports::testing::TestNetwork;
use tower::{ServiceBuilder, ServiceExt};

/// The connector stack's future, boxed because hyper-util needs `Unpin`.
type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<Connection>, BoxError>> + Send>>;

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello from {}\n",
        req.uri().path()
    )))))
}

/// Serves `hello` on every connection `listener` accepts.
fn serve(mut listener: Listener) {
    tokio::spawn(async move {
        while let Ok((conn, peer)) = listener.accept().await {
            tracing::debug!(%peer, "connection");
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), hyper::service::service_fn(hello))
                    .await;
            });
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A DMSG network on loopback and two clients: `site` serves, `browser` fetches.
    let net = TestNetwork::start(1).await;
    let site = net.client().await;
    let browser = Arc::new(net.client().await);

    // The same service on TCP and on DMSG port 80.
    let tcp = Listener::bind_tcp("127.0.0.1:0".parse()?).await?;
    let Peer::Tcp(tcp_addr) = tcp.local_addr()? else {
        return Err("expected a TCP listener".into());
    };
    serve(tcp);
    serve(Listener::dmsg(&site, 80)?);
    net.wait_published(&site).await;

    // Connector stack: timeout, per-destination breaker, TCP-or-DMSG connector.
    let stack = ServiceBuilder::new()
        .map_future(|f| Box::pin(f) as ConnectFuture)
        .timeout(Duration::from_secs(10))
        .layer(
            CircuitBreakerLayer::builder(|uri: &Uri| uri.authority().map(|a| a.to_string()))
                .failure_threshold(3)
                .open_duration(Duration::from_secs(60))
                .build(),
        )
        .service(Connector::with_dmsg(browser.clone()));
    let client: HttpClient<_, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build(stack);

    for uri in [
        format!("http://{tcp_addr}/over-tcp"),
        format!("dmsg://{}:80/over-dmsg", site.public_key()),
    ] {
        let resp = client.get(uri.parse()?).await?;
        let peer = resp.extensions().get::<Peer>().copied();
        let body = resp.into_body().collect().await?.to_bytes();
        println!(
            "GET {uri}\n  peer: {}\n  body: {}",
            fmt_peer(peer),
            String::from_utf8_lossy(&body).trim()
        );
    }

    // The connector also works as a plain tower service, outside HTTP.
    let conn = Connector::with_dmsg(browser.clone())
        .oneshot(
            format!("dmsg://{}:80", site.public_key())
                .parse::<skytower::transports::connector::Target>()?,
        )
        .await?;
    println!("raw connection to {}", conn.peer());
    Ok(())
}

fn fmt_peer(peer: Option<Peer>) -> String {
    peer.map_or_else(|| "unknown".into(), |p| p.to_string())
}
