//! The shared service mode: the same service over HTTP and DMSG, dmsg-only mode without TCP,
//! graceful shutdown, the key requirement, and `/health` in DMSG modes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use clap::Parser;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use skytower_services::svcmode::{Mode, SvcArgs, SvcConfig, SvcError, SvcServer};
use skytower_transports::connector::{Connector, Peer};
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};
use tokio::sync::{Notify, oneshot};

const T: Duration = Duration::from_secs(20);

fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello from the service" }))
        .route(
            "/json/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    axum::Json(serde_json::json!({ "n": n, "double": n * 2 }))
                },
            ),
        )
        .route(
            "/peer",
            get(|ext: axum::Extension<Peer>| async move {
                match ext.0 {
                    Peer::Tcp(_) => "tcp",
                    Peer::Dmsg(_) => "dmsg",
                }
            }),
        )
}

fn dmsg_config(net: &TestNetwork, mode: Mode) -> SvcConfig {
    SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        key: Some(SecretKey::generate().unwrap()),
        discovery: Some(Arc::new(net.discovery().clone())),
        mode,
        client: test_client_config(),
        grace: Duration::from_secs(5),
        ..SvcConfig::default()
    }
}

/// Runs `server` until the returned sender fires (or is dropped).
fn run(
    server: SvcServer,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), SvcError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

type Client = HttpClient<Connector, Empty<Bytes>>;

async fn fetch(client: &Client, uri: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let resp = tokio::time::timeout(T, client.get(uri.parse().unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_answers_identically_over_http_and_dmsg() {
    let net = TestNetwork::start(1).await;
    let server = SvcServer::start(dmsg_config(&net, Mode::Dual), "svc-test", app())
        .await
        .unwrap();
    let http_addr = server.http_addr().expect("dual listens on TCP");
    let dmsg_addr = server.dmsg_addr().expect("dual listens on DMSG");
    assert_eq!(dmsg_addr.port, 80);
    net.wait_published(server.dmsg_client().unwrap()).await;
    let (stop, task) = run(server);

    let caller = Arc::new(net.client().await);
    let client: Client = HttpClient::builder(TokioExecutor::new())
        .build(Connector::with_dmsg(caller).connect_timeout(Duration::from_secs(10)));
    let http_base = format!("http://{http_addr}");
    let dmsg_base = format!("dmsg://{dmsg_addr}");

    for path in ["/hello", "/json/21", "/nope"] {
        let (hs, hh, hb) = fetch(&client, &format!("{http_base}{path}")).await;
        let (ds, dh, db) = fetch(&client, &format!("{dmsg_base}{path}")).await;
        assert_eq!(hs, ds, "{path}");
        assert_eq!(hb, db, "{path}");
        assert_eq!(hh.get("content-type"), dh.get("content-type"), "{path}");
        // The request-id layer is on for both.
        assert!(hh.contains_key("x-request-id"), "{path}: {hh:?}");
        assert!(dh.contains_key("x-request-id"), "{path}: {dh:?}");
    }
    let (_, _, body) = fetch(&client, &format!("{http_base}/hello")).await;
    assert_eq!(body, "hello from the service");
    // The service sees which transport a request came over.
    assert_eq!(fetch(&client, &format!("{http_base}/peer")).await.2, "tcp");
    assert_eq!(fetch(&client, &format!("{dmsg_base}/peer")).await.2, "dmsg");

    // `/health` over either transport reports the DMSG address and the connected server.
    for base in [&http_base, &dmsg_base] {
        let (status, _, body) = fetch(&client, &format!("{base}/health")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["service"], "svc-test");
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
        let dmsg = &json["checks"]["dmsg"];
        assert_eq!(dmsg["status"], "ok");
        assert_eq!(dmsg["details"]["address"], dmsg_addr.to_string());
        let servers: Vec<String> =
            serde_json::from_value(dmsg["details"]["servers"].clone()).unwrap();
        assert_eq!(servers, vec![net.server_keys()[0].to_string()]);
    }

    // Shutdown removes the entry from discovery.
    assert!(net.discovery().store().get(&dmsg_addr.pk).is_some());
    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(net.discovery().store().get(&dmsg_addr.pk).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmsg_only_mode_has_no_tcp_listener() {
    let net = TestNetwork::start(1).await;
    // A port that was free a moment ago: nothing may listen on it in dmsg mode.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = dmsg_config(&net, Mode::Dmsg);
    config.addr = format!("127.0.0.1:{port}").parse().unwrap();
    config.dmsg_port = 8080;
    let server = SvcServer::start(config, "svc-test", app()).await.unwrap();
    assert_eq!(server.http_addr(), None);
    let dmsg_addr = server.dmsg_addr().unwrap();
    assert_eq!(dmsg_addr.port, 8080);
    net.wait_published(server.dmsg_client().unwrap()).await;
    let (stop, task) = run(server);

    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "something listens on {port} in dmsg mode");

    let caller = Arc::new(net.client().await);
    let client: Client =
        HttpClient::builder(TokioExecutor::new()).build(Connector::with_dmsg(caller));
    let (status, _, body) = fetch(&client, &format!("dmsg://{dmsg_addr}/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from the service");
    let (_, _, body) = fetch(&client, &format!("dmsg://{dmsg_addr}/health")).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["checks"]["dmsg"]["details"]["address"],
        dmsg_addr.to_string()
    );

    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(net.discovery().store().get(&dmsg_addr.pk).is_none());
}

/// An app whose `/slow` signals `started` and answers after `delay`.
fn slow_app(started: Arc<Notify>, delay: Duration) -> Router {
    Router::new().route(
        "/slow",
        get(move || {
            let started = started.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(delay).await;
                "slow done"
            }
        }),
    )
}

async fn wait_refused(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_completes_during_shutdown_while_new_connections_are_refused() {
    let started = Arc::new(Notify::new());
    let config = SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_secs(10),
        ..SvcConfig::default()
    };
    let server = SvcServer::start(
        config,
        "svc-test",
        slow_app(started.clone(), Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    let addr = server.http_addr().unwrap();
    let (stop, task) = run(server);

    let client: Client = HttpClient::builder(TokioExecutor::new()).build(Connector::new());
    let slow = tokio::spawn({
        let client = client.clone();
        async move { fetch(&client, &format!("http://{addr}/slow")).await }
    });
    tokio::time::timeout(T, started.notified()).await.unwrap();
    let began = tokio::time::Instant::now();
    stop.send(()).unwrap();

    wait_refused(addr).await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before shutdown refused new connections"
    );
    let (status, _, body) = tokio::time::timeout(T, slow).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done");
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_the_shutdown() {
    let started = Arc::new(Notify::new());
    let config = SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_millis(200),
        ..SvcConfig::default()
    };
    let server = SvcServer::start(
        config,
        "svc-test",
        slow_app(started.clone(), Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let addr = server.http_addr().unwrap();
    let (stop, task) = run(server);
    let client: Client = HttpClient::builder(TokioExecutor::new()).build(Connector::new());
    let slow = tokio::spawn(async move {
        client
            .get(format!("http://{addr}/slow").parse().unwrap())
            .await
    });
    tokio::time::timeout(T, started.notified()).await.unwrap();
    let began = tokio::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    // The cut-off request fails instead of hanging.
    let res = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap();
    assert!(res.is_err());
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    svc: SvcArgs,
}

#[tokio::test]
async fn dmsg_and_dual_without_a_key_are_refused() {
    for mode in ["dmsg", "dual"] {
        let cli = Cli::try_parse_from(["svc", "--mode", mode, "--discovery", "http://127.0.0.1:9"])
            .unwrap();
        let err = cli.svc.resolve().unwrap_err();
        assert!(matches!(err, SvcError::KeyRequired { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("--mode {mode} needs a DMSG key: pass --key FILE")),
            "{err}"
        );
        // A config built by hand is refused by start too.
        let config = SvcConfig {
            mode: cli.svc.mode,
            ..SvcConfig::default()
        };
        let err = SvcServer::start(config, "svc-test", app())
            .await
            .unwrap_err();
        assert!(matches!(err, SvcError::KeyRequired { .. }), "{err:?}");
    }
    // http mode needs neither.
    let cli = Cli::try_parse_from(["svc"]).unwrap();
    let config = cli.svc.resolve().unwrap();
    assert_eq!(config.mode, Mode::Http);
    assert_eq!(config.dmsg_port, 80);
    assert_eq!(config.grace, Duration::from_secs(10));
    // A bad mode is a clap error.
    assert!(Cli::try_parse_from(["svc", "--mode", "tcp"]).is_err());
}

#[tokio::test]
async fn key_file_is_loaded_for_dmsg_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.key");
    let key = SecretKey::generate_and_save(&path, skytower_transports::identity::KeyFormat::Json)
        .unwrap();
    let cli = Cli::try_parse_from([
        "svc",
        "--mode",
        "dual",
        "--key",
        path.to_str().unwrap(),
        "--discovery",
        "http://127.0.0.1:9",
        "--dmsg-port",
        "81",
        "--grace",
        "250ms",
    ])
    .unwrap();
    let config = cli.svc.resolve().unwrap();
    assert_eq!(config.key.as_ref().unwrap().public_key(), key.public_key());
    assert_eq!(config.dmsg_port, 81);
    assert_eq!(config.grace, Duration::from_millis(250));
    // A missing key file is an error naming it.
    let missing = dir.path().join("missing.key");
    let cli = Cli::try_parse_from([
        "svc",
        "--mode",
        "dmsg",
        "--key",
        missing.to_str().unwrap(),
        "--discovery",
        "http://127.0.0.1:9",
    ])
    .unwrap();
    let err = cli.svc.resolve().unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
}
