//! dmsg-discovery through the shared service mode: `--mode dual` answers the same API over
//! HTTP and over DMSG, registering its DMSG side in itself by default; `--mode dmsg` is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::config;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use skytower_services::dmsg_discovery::DiscoveryService;
use skytower_services::dmsg_discovery::{
    Config, DiscoveryServer, DmsgOptions, Mode, RunError, open_store,
};
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::Client;
use skytower_transports::dmsg::disc::{Discovery, Entry};
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::dmsg::server::{Server, ServerConfig};
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::test_client_config;

const T: Duration = Duration::from_secs(20);

type HttpOverAny = HttpClient<Connector, Empty<Bytes>>;

async fn fetch(client: &HttpOverAny, uri: &str) -> (StatusCode, Option<http::HeaderValue>, Bytes) {
    let resp = tokio::time::timeout(T, client.get(uri.parse().unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body)
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_serves_the_api_over_http_and_dmsg_registered_in_itself() {
    // Dual mode with no --discovery: the DMSG side registers in the service itself.
    let cfg = Config {
        mode: Mode::Dual,
        ..config()
    };
    let store = open_store(&cfg).await.unwrap();
    let service = DiscoveryService::new(&cfg, store);
    let options = DmsgOptions {
        key: Some(SecretKey::generate().unwrap()),
        client: test_client_config(),
        ..DmsgOptions::default()
    };
    let server = DiscoveryServer::bind_with_options(&cfg, service, options)
        .await
        .unwrap();
    let http_addr = server.local_addr().unwrap();
    let dmsg_addr = server.dmsg_addr().expect("dual listens on DMSG");
    assert_eq!(dmsg_addr.port, 80);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let disc: Arc<dyn Discovery> =
        Arc::new(HttpDiscovery::new(&format!("http://{http_addr}")).unwrap());

    // A DMSG server registers in the discovery (over HTTP); the discovery's own DMSG client
    // finds it there and connects.
    let mut dmsg_server = Server::bind(
        SecretKey::generate().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let server_pk = dmsg_server.public_key();
    dmsg_server.register(
        disc.clone(),
        dmsg_server.local_addr().to_string(),
        Duration::from_secs(60),
    );
    // The service's client entry (published in itself) lists the server.
    wait_until(
        "the discovery's DMSG side is published in itself",
        async || {
            disc.entry(dmsg_addr.pk)
                .await
                .ok()
                .and_then(|e| e.client)
                .is_some_and(|c| c.delegated_servers.contains(&server_pk))
        },
    )
    .await;

    // A caller over DMSG, bootstrapped from the same discovery over HTTP.
    let caller = Client::start(
        SecretKey::generate().unwrap(),
        disc.clone(),
        test_client_config(),
    );
    assert_eq!(caller.wait_for_sessions(1, T).await, 1);
    let caller = Arc::new(caller);
    let client: HttpOverAny = HttpClient::builder(TokioExecutor::new())
        .build(Connector::with_dmsg(caller.clone()).connect_timeout(Duration::from_secs(10)));

    // An entry to read back, plus an unknown key and a malformed one.
    let key = SecretKey::generate().unwrap();
    let mut entry = Entry::new_server(key.public_key(), "127.0.0.1:8081", 10);
    entry.sign(&key);
    disc.post_entry(entry.clone()).await.unwrap();
    let unknown = SecretKey::generate().unwrap().public_key();

    let http_base = format!("http://{http_addr}");
    let dmsg_base = format!("dmsg://{dmsg_addr}");
    for (path, want) in [
        (
            format!("/dmsg-discovery/entry/{}", key.public_key()),
            StatusCode::OK,
        ),
        (format!("/dmsg-discovery/entry/{server_pk}"), StatusCode::OK),
        (
            format!("/dmsg-discovery/entry/{unknown}"),
            StatusCode::NOT_FOUND,
        ),
        (
            "/dmsg-discovery/entry/nope".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (hs, hc, hb) = fetch(&client, &format!("{http_base}{path}")).await;
        let (ds, dc, db) = fetch(&client, &format!("{dmsg_base}{path}")).await;
        assert_eq!(hs, want, "{path}: {}", String::from_utf8_lossy(&hb));
        assert_eq!(hs, ds, "{path}");
        assert_eq!(hb, db, "{path}");
        assert_eq!(hc, dc, "{path}");
    }
    let (_, _, body) = fetch(
        &client,
        &format!("{dmsg_base}/dmsg-discovery/entry/{}", key.public_key()),
    )
    .await;
    let got: Entry = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, entry);

    // /health (the service mode's) reports the DMSG address and the store, on both transports.
    for base in [&http_base, &dmsg_base] {
        let (status, _, body) = fetch(&client, &format!("{base}/health")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["service"], "dmsg-discovery");
        assert_eq!(
            json["checks"]["dmsg"]["details"]["address"],
            dmsg_addr.to_string()
        );
        assert_eq!(json["checks"]["store"]["status"], "ok", "{json}");
    }

    // Shutdown: graceful, and the DMSG side's entry is removed from the discovery (itself).
    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    if let Ok(c) = Arc::try_unwrap(caller) {
        c.close().await;
    }
    dmsg_server.shutdown().await;
}

#[tokio::test]
async fn dmsg_mode_is_refused_with_the_bootstrap_explanation() {
    let cfg = Config {
        mode: Mode::Dmsg,
        ..config()
    };
    let err = DiscoveryServer::bind(cfg).await.unwrap_err();
    assert!(matches!(err, RunError::DmsgOnly), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("bootstrap dependency"), "{msg}");
    assert!(msg.contains("reachable over plain HTTP"), "{msg}");
}

#[tokio::test]
async fn dual_mode_with_a_bad_discovery_url_is_refused() {
    let cfg = Config {
        mode: Mode::Dual,
        discovery: Some("not a url".into()),
        ..config()
    };
    let store = open_store(&cfg).await.unwrap();
    let options = DmsgOptions {
        key: Some(SecretKey::generate().unwrap()),
        ..DmsgOptions::default()
    };
    let err = DiscoveryServer::bind_with_options(&cfg, DiscoveryService::new(&cfg, store), options)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("--discovery"), "{err}");
}
