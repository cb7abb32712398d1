//! service-discovery through the shared service mode on an in-process DMSG network: `--mode
//! dual` answers the same over HTTP and DMSG (signed writes included, with the typed client on
//! `http://` and `dmsg://` base URLs); `--mode dmsg` serves without any TCP listener.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use skytower_services::auth::SignedClient;
use skytower_services::service_discovery::{
    Config, Geo, Registration, ServiceDiscoveryClient, ServiceDiscoveryServer, ServiceQuery,
};
use skytower_services::svcmode::{Mode, SvcConfig};
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};

const T: Duration = Duration::from_secs(20);

fn svc_config(net: &TestNetwork, mode: Mode) -> SvcConfig {
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

/// A server published on DMSG and serving in a task until [`Serving::stop`].
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Waits until `server` is published on `net`, then serves it in a task.
async fn serve(net: &TestNetwork, server: ServiceDiscoveryServer) -> Serving {
    net.wait_published(server.svc().dmsg_client().unwrap())
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Serving { stop, task }
}

impl Serving {
    /// Shuts the server down; asserts that it stopped cleanly within [`T`].
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(T, self.task).await.unwrap().unwrap();
    }
}

/// A connector dialing over DMSG from a new client of `net`.
async fn dmsg_connector(net: &TestNetwork) -> Connector {
    Connector::with_dmsg(Arc::new(net.client().await)).connect_timeout(Duration::from_secs(10))
}

/// Status and body of `GET path`, whatever the status.
async fn raw_get(client: &SignedClient, path: &str) -> (StatusCode, Vec<u8>) {
    match tokio::time::timeout(T, client.send(Method::GET, path, None))
        .await
        .expect("request timed out")
    {
        Ok((status, body)) => (status, body.to_vec()),
        Err(skytower_services::auth::ClientError::Api {
            status,
            code,
            message,
        }) => (status, format!("{code}: {message}").into_bytes()),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_answers_the_same_over_http_and_dmsg() {
    let net = TestNetwork::start(1).await;
    let server = ServiceDiscoveryServer::start(svc_config(&net, Mode::Dual), &Config::default())
        .await
        .unwrap();
    let http_base = format!(
        "http://{}",
        server.http_addr().expect("dual listens on TCP")
    );
    let dmsg_addr = server.dmsg_addr().expect("dual listens on DMSG");
    assert_eq!(dmsg_addr.port, 80);
    let dmsg_base = format!("dmsg://{dmsg_addr}");
    let serving = serve(&net, server).await;

    let connector = dmsg_connector(&net).await;
    let node = Arc::new(SecretKey::generate().unwrap());
    let over = |base: &str| {
        ServiceDiscoveryClient::with_connector(base, connector.clone())
            .unwrap()
            .with_key(node.clone())
    };
    let (via_http, via_dmsg) = (over(&http_base), over(&dmsg_base));

    // Signed writes over either transport, on the same directory.
    let vpn = Registration {
        geo: Some(Geo::country("DE")),
        ..Registration::new(node.public_key(), 44, "vpn", "1.3.0")
    };
    let proxy = Registration::new(node.public_key(), 3, "proxy", "1.3.0");
    assert!(via_dmsg.register(&vpn).await.unwrap().created);
    assert!(!via_http.register(&vpn).await.unwrap().created, "a refresh");
    assert!(via_http.register(&proxy).await.unwrap().created);
    for client in [&via_http, &via_dmsg] {
        let found = client
            .query(&ServiceQuery::of_type("vpn").country("DE"))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, vpn.address);
        assert_eq!(
            client.get(&proxy.address).await.unwrap().unwrap().kind,
            "proxy"
        );
    }

    // Byte-identical answers, errors included.
    let unknown = Addr::new(SecretKey::generate().unwrap().public_key(), 1);
    let (http_raw, dmsg_raw) = (
        via_http.signed_client().clone(),
        via_dmsg.signed_client().clone(),
    );
    for (path, want) in [
        (format!("/api/services/{}", vpn.address), StatusCode::OK),
        (
            "/api/services?type=vpn&country=DE".to_owned(),
            StatusCode::OK,
        ),
        (format!("/api/services/{unknown}"), StatusCode::NOT_FOUND),
        ("/api/services/nope".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/services".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let (hs, hb) = raw_get(&http_raw, &path).await;
        let (ds, db) = raw_get(&dmsg_raw, &path).await;
        assert_eq!(hs, want, "{path}: {}", String::from_utf8_lossy(&hb));
        assert_eq!((hs, &hb), (ds, &db), "{path}");
    }

    // Refusals are the same over DMSG: no key, someone else's address.
    let anonymous = ServiceDiscoveryClient::with_connector(&dmsg_base, connector.clone()).unwrap();
    let err = anonymous.register(&vpn).await.unwrap_err();
    assert_eq!(err.api_code(), Some("missing_signature"), "{err}");
    let other = ServiceDiscoveryClient::with_connector(&dmsg_base, connector.clone())
        .unwrap()
        .with_key(SecretKey::generate().unwrap());
    let err = other.delete(&vpn.address).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(err.api_code(), Some("forbidden_key"));

    // Delete over DMSG, gone over HTTP.
    assert!(via_dmsg.delete(&vpn.address).await.unwrap());
    assert!(!via_dmsg.delete(&vpn.address).await.unwrap());
    assert_eq!(via_http.get(&vpn.address).await.unwrap(), None);

    // `/health` over both: the store and the DMSG side.
    for raw in [&http_raw, &dmsg_raw] {
        let (status, body) = raw_get(raw, "/health").await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["service"], "service-discovery");
        assert_eq!(json["checks"]["store"]["details"]["entries"], 1);
        assert_eq!(
            json["checks"]["dmsg"]["details"]["address"],
            dmsg_addr.to_string()
        );
    }

    // Graceful shutdown withdraws the DMSG entry.
    assert!(net.discovery().store().get(&dmsg_addr.pk).is_some());
    serving.stop().await;
    assert!(net.discovery().store().get(&dmsg_addr.pk).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmsg_mode_serves_without_tcp() {
    let net = TestNetwork::start(1).await;
    let server = ServiceDiscoveryServer::start(svc_config(&net, Mode::Dmsg), &Config::default())
        .await
        .unwrap();
    assert_eq!(server.http_addr(), None);
    let dmsg_addr = server.dmsg_addr().expect("dmsg mode listens on DMSG");
    let serving = serve(&net, server).await;

    let connector = dmsg_connector(&net).await;
    let node = Arc::new(SecretKey::generate().unwrap());
    let client = ServiceDiscoveryClient::with_connector(&format!("dmsg://{dmsg_addr}"), connector)
        .unwrap()
        .with_key(node.clone());
    let visor = Registration::new(node.public_key(), 45, "visor", "1.3.0");
    let done = client.register(&visor).await.unwrap();
    assert!(done.created);
    let found = client
        .query(&ServiceQuery::of_type("visor").quantity(3))
        .await
        .unwrap();
    assert_eq!(found, vec![done.entry]);

    serving.stop().await;
}

#[tokio::test]
async fn dmsg_modes_without_a_key_are_refused_at_start_up() {
    for mode in [Mode::Dmsg, Mode::Dual] {
        let svc = SvcConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            mode,
            ..SvcConfig::default()
        };
        let err = ServiceDiscoveryServer::start(svc, &Config::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("--mode {mode} needs a DMSG key")),
            "{err}"
        );
    }
}
