//! The TCP/DMSG connector under hyper-util's client, axum, and tower layers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skytower_layers::circuit_breaker::{CircuitBreakerLayer, CircuitOpen};
use skytower_transports::connector::{ConnectError, Connector, Listener, Peer, Target};
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::testing::TestNetwork;
use tower::{ServiceBuilder, ServiceExt};

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello {}",
        req.uri().path()
    )))))
}

/// Serves `hello` with hyper on every connection of `listener`; counts connections.
fn serve(mut listener: Listener, conns: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((conn, _peer)) = listener.accept().await {
            conns.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), hyper::service::service_fn(hello))
                    .await;
            });
        }
    })
}

async fn get(client: &HttpClient<Connector, Empty<Bytes>>, uri: &str) -> (String, Option<Peer>) {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.get(uri.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let peer = resp.extensions().get::<Peer>().copied();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_fetches_over_tcp_and_dmsg_and_pools_dmsg_streams() {
    // TCP side.
    let tcp = Listener::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let Peer::Tcp(tcp_addr) = tcp.local_addr().unwrap() else {
        unreachable!()
    };
    let tcp_conns = Arc::new(AtomicUsize::new(0));
    let _tcp = serve(tcp, tcp_conns.clone());
    // DMSG side.
    let net = TestNetwork::start(1).await;
    let b = net.client().await;
    let dmsg_conns = Arc::new(AtomicUsize::new(0));
    let _dmsg = serve(Listener::dmsg(&b, 80).unwrap(), dmsg_conns.clone());
    net.wait_published(&b).await;
    let a = Arc::new(net.client().await);

    let connector = Connector::with_dmsg(a.clone()).connect_timeout(Duration::from_secs(10));
    let client: HttpClient<Connector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build(connector);

    let (body, peer) = get(&client, &format!("http://{tcp_addr}/over-tcp")).await;
    assert_eq!(body, "hello /over-tcp");
    assert_eq!(peer, Some(Peer::Tcp(tcp_addr)));

    let dmsg_uri = format!("dmsg://{}:80", b.public_key());
    for i in 0..10 {
        let (body, peer) = get(&client, &format!("{dmsg_uri}/over-dmsg/{i}")).await;
        assert_eq!(body, format!("hello /over-dmsg/{i}"));
        assert_eq!(peer, Some(Peer::Dmsg(Addr::new(b.public_key(), 80))));
    }
    // Keep-alive pooling reuses DMSG streams. hyper-util's legacy client races a new connect
    // against waiting for a pooled connection that is not idle yet, so a request that follows
    // at once may open another stream; fewer streams than requests proves reuse.
    let streams = dmsg_conns.load(Ordering::Relaxed);
    assert!(
        streams < 10,
        "{streams} DMSG streams for 10 requests: no reuse"
    );
    assert_eq!(tcp_conns.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serves_over_a_dmsg_listener() {
    let net = TestNetwork::start(1).await;
    let b = net.client().await;
    let app = axum::Router::new().route("/hi", axum::routing::get(|| async { "hi from axum" }));
    let listener = Listener::dmsg(&b, 8080).unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    net.wait_published(&b).await;
    let a = Arc::new(net.client().await);
    let client: HttpClient<Connector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build(Connector::with_dmsg(a));
    let (body, _) = get(&client, &format!("dmsg://{}:8080/hi", b.public_key())).await;
    assert_eq!(body, "hi from axum");
    server.abort();
}

#[tokio::test]
async fn targets_parse_with_explicit_transports_and_typed_errors() {
    assert_eq!(
        "tcp://localhost:9".parse::<Target>().unwrap(),
        Target::Tcp {
            host: "localhost".into(),
            port: 9
        }
    );
    assert_eq!(
        "https://example.org".parse::<Target>().unwrap().to_string(),
        "tcp://example.org:443"
    );
    assert_eq!(
        "http://[::1]:8080/x".parse::<Target>().unwrap().to_string(),
        "tcp://[::1]:8080"
    );
    assert!(matches!(
        "ftp://x:1".parse::<Target>(),
        Err(skytower_transports::connector::TargetError::Scheme(_))
    ));
    assert!(matches!(
        "tcp://x".parse::<Target>(),
        Err(skytower_transports::connector::TargetError::NoPort)
    ));
    // A DMSG target without a DMSG client is a clear error, not a panic.
    let pk = skytower_transports::identity::SecretKey::generate()
        .unwrap()
        .public_key();
    let target: Target = format!("dmsg://{pk}:80").parse().unwrap();
    let err = Connector::new().oneshot(target).await.unwrap_err();
    assert!(matches!(err, ConnectError::NoDmsgClient(_)), "{err}");
}

#[tokio::test]
async fn breaker_on_the_connector_opens_per_destination() {
    // A port with nothing listening: bind then drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let alive = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alive_addr = alive.local_addr().unwrap();
    let _accept = tokio::spawn(async move { while alive.accept().await.is_ok() {} });

    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::builder(|t: &Target| t.clone())
                .failure_threshold(3)
                .open_duration(Duration::from_secs(60))
                .build(),
        )
        .service(Connector::new());
    for _ in 0..3 {
        let err = svc
            .clone()
            .oneshot(Target::from(dead_addr))
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<ConnectError>().is_some(), "{err}");
    }
    let err = svc
        .clone()
        .oneshot(Target::from(dead_addr))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen<Target>>().is_some(), "{err}");
    // Another destination is unaffected.
    let conn = svc.oneshot(Target::from(alive_addr)).await.unwrap();
    assert_eq!(conn.peer(), Peer::Tcp(alive_addr));
}
