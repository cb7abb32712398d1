//! The fetch chain against a service reachable over DMSG and HTTP: DMSG first, HTTP when the
//! DMSG side is down, and DMSG again once it is back and the memory has expired.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use skytower_transports::connector::Listener;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::dmsg::{Client, ClientConfig};
use skytower_transports::fetch::{FetchChain, FetchError, FetchRequest, Via};
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};
use tower::ServiceExt;

const T: Duration = Duration::from_secs(20);

/// Serves `answer` with hyper on every connection of `listener`.
fn serve(mut listener: Listener, answer: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((conn, _peer)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                            "{answer} {}",
                            req.uri().path()
                        )))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    })
}

/// The service's DMSG side: a client with `key_hex` listening on port 80.
async fn dmsg_side(net: &TestNetwork, key_hex: &str) -> (Client, tokio::task::JoinHandle<()>) {
    let client = Client::start(
        SecretKey::from_hex(key_hex).unwrap(),
        Arc::new(net.discovery().clone()),
        test_client_config(),
    );
    client.wait_for_sessions(1, T).await;
    let task = serve(Listener::dmsg(&client, 80).unwrap(), "dmsg");
    net.wait_published(&client).await;
    (client, task)
}

async fn fetch(chain: &FetchChain, path: &str) -> (Via, String) {
    let res = tokio::time::timeout(T, chain.clone().oneshot(FetchRequest::get(path)))
        .await
        .expect("fetch timed out")
        .expect("fetch failed");
    assert!(res.status.is_success());
    (res.via, String::from_utf8(res.body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_http_when_dmsg_is_down_and_returns_to_dmsg() {
    let net = TestNetwork::start(1).await;
    let key = SecretKey::generate().unwrap();
    let key_hex = key.to_hex().to_string();
    let addr = Addr::new(key.public_key(), 80);

    let tcp = Listener::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tcp_addr = match tcp.local_addr().unwrap() {
        skytower_transports::connector::Peer::Tcp(a) => a,
        other => panic!("{other}"),
    };
    let _http = serve(tcp, "http");
    let (svc_client, svc_task) = dmsg_side(&net, &key_hex).await;

    let remember = Duration::from_millis(600);
    let chain = FetchChain::builder()
        .dmsg(addr)
        .http(format!("http://{tcp_addr}").parse().unwrap())
        // No client given: the chain starts its own ephemeral, dial-only one.
        .discovery(Arc::new(net.discovery().clone()))
        .client_config(ClientConfig {
            negative_ttl: Duration::from_millis(50),
            ..test_client_config()
        })
        .remember(remember)
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Both sides up: DMSG.
    for i in 0..3 {
        assert_eq!(
            fetch(&chain, &format!("/a{i}")).await,
            (Via::Dmsg, format!("dmsg /a{i}"))
        );
    }
    assert_eq!(chain.preferred(), Via::Dmsg);

    // The DMSG side goes down (its sessions close, its entry is deleted): HTTP answers.
    svc_task.abort();
    svc_client.close().await;
    assert_eq!(fetch(&chain, "/b").await, (Via::Http, "http /b".to_owned()));
    assert_eq!(chain.preferred(), Via::Http);
    // While remembered, HTTP goes first (no DMSG attempt to pay for).
    let began = tokio::time::Instant::now();
    assert_eq!(fetch(&chain, "/c").await, (Via::Http, "http /c".to_owned()));
    assert!(began.elapsed() < Duration::from_millis(500));

    // The DMSG side returns with the same key.
    let (_svc_client, _svc_task) = dmsg_side(&net, &key_hex).await;
    // Still remembered until the memory expires... (unless the restart took longer)
    if chain.preferred() == Via::Http {
        assert_eq!(fetch(&chain, "/d").await.0, Via::Http);
    }
    // ...then DMSG again, and it stays DMSG.
    tokio::time::sleep(remember).await;
    assert_eq!(chain.preferred(), Via::Dmsg);
    assert_eq!(fetch(&chain, "/e").await, (Via::Dmsg, "dmsg /e".to_owned()));
    assert_eq!(fetch(&chain, "/f").await, (Via::Dmsg, "dmsg /f".to_owned()));
    assert_eq!(chain.preferred(), Via::Dmsg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_the_callers_client_and_reports_every_failed_way() {
    let net = TestNetwork::start(1).await;
    let caller = Arc::new(net.client().await);
    let (svc_client, _svc_task) =
        dmsg_side(&net, SecretKey::generate().unwrap().to_hex().as_ref()).await;
    let addr = Addr::new(svc_client.public_key(), 80);
    // A closed TCP port for the HTTP side.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let chain = FetchChain::builder()
        .dmsg(addr)
        .http(format!("http://{closed}/prefix/").parse().unwrap())
        .dmsg_client(caller)
        .build()
        .unwrap();
    assert_eq!(fetch(&chain, "/x").await, (Via::Dmsg, "dmsg /x".to_owned()));

    // An unknown DMSG address and a closed HTTP port: both attempts are reported.
    let nobody = Addr::new(SecretKey::generate().unwrap().public_key(), 80);
    let chain = FetchChain::builder()
        .dmsg(nobody)
        .http(format!("http://{closed}").parse().unwrap())
        .dmsg_client(Arc::new(net.client().await))
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = chain.fetch(FetchRequest::get("/y")).await.unwrap_err();
    let FetchError::AllFailed(attempts) = &err else {
        panic!("{err:?}")
    };
    let ways: Vec<Via> = attempts.iter().map(|a| a.via).collect();
    assert_eq!(ways, [Via::Dmsg, Via::Http], "{err}");
    // Nothing worked, so nothing is remembered.
    assert_eq!(chain.preferred(), Via::Dmsg);
}
