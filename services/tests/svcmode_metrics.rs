//! `--metrics`: Prometheus text on a separate listener with per-route, per-transport request
//! counts and latency, and the DMSG client and layer state. (Its own test binary: the metrics
//! recorder is process-global.)

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use skytower_layers::HandshakeQueueLayer;
use skytower_services::svcmode::metrics::{RouteLabelLayer, record_handshake_queue};
use skytower_services::svcmode::{Mode, SvcConfig, SvcServer};
use skytower_transports::connector::Connector;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};

const T: Duration = Duration::from_secs(20);

async fn get_text(client: &HttpClient<Connector, Empty<Bytes>>, uri: &str) -> (u16, String) {
    let res = tokio::time::timeout(T, client.get(uri.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_routes_transports_and_dmsg_state() {
    let net = TestNetwork::start(1).await;
    let app = Router::new()
        .route("/item/{id}", get(|| async { "item" }))
        .route_layer(RouteLabelLayer);
    let config = SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        key: Some(SecretKey::generate().unwrap()),
        discovery: Some(Arc::new(net.discovery().clone())),
        mode: Mode::Dual,
        client: test_client_config(),
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..SvcConfig::default()
    };
    let server = SvcServer::start(config, "svc-metrics", app).await.unwrap();
    let http = server.http_addr().unwrap();
    let dmsg = server.dmsg_addr().unwrap();
    let metrics = server.metrics_addr().unwrap();
    net.wait_published(server.dmsg_client().unwrap()).await;
    // The service reports one of its own layers at each scrape.
    let queue = HandshakeQueueLayer::new().handle();
    server
        .on_scrape(move || record_handshake_queue("svc-metrics", "handshakes", &queue))
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let client: HttpClient<Connector, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new())
        .build(Connector::with_dmsg(Arc::new(net.client().await)));
    for i in 0..3 {
        assert_eq!(
            get_text(&client, &format!("http://{http}/item/{i}"))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        get_text(&client, &format!("dmsg://{dmsg}/item/9")).await.0,
        200
    );
    assert_eq!(
        get_text(&client, &format!("dmsg://{dmsg}/nowhere")).await.0,
        404
    );
    assert_eq!(
        get_text(&client, &format!("http://{http}/health")).await.0,
        200
    );

    let (status, text) = get_text(&client, &format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    let has = |needles: &[&str]| text.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    // Per route (the pattern, not the raw path) and per transport.
    assert!(
        has(&[
            "http_requests_total{",
            r#"route="/item/{id}""#,
            r#"transport="tcp""#,
            r#"status="200""#,
            "} 3"
        ]),
        "{text}"
    );
    assert!(
        has(&[
            "http_requests_total{",
            r#"route="/item/{id}""#,
            r#"transport="dmsg""#,
            "} 1"
        ]),
        "{text}"
    );
    assert!(
        has(&[
            "http_requests_total{",
            r#"route="unmatched""#,
            r#"status="404""#
        ]),
        "{text}"
    );
    assert!(
        has(&["http_requests_total{", r#"route="/health""#]),
        "{text}"
    );
    assert!(
        has(&[
            "http_request_duration_seconds_bucket{",
            r#"route="/item/{id}""#
        ]),
        "{text}"
    );
    assert!(
        has(&["svc_open_connections{", r#"transport="tcp""#]),
        "{text}"
    );
    // DMSG client and layer state.
    assert!(
        has(&["dmsg_sessions{", r#"service="svc-metrics""#, "} 1"]),
        "{text}"
    );
    assert!(has(&["dmsg_session_bytes{", r#"direction="in""#]), "{text}");
    assert!(has(&["dmsg_negative_cache_entries{"]), "{text}");
    assert!(
        has(&["handshake_queue_in_flight{", r#"queue="handshakes""#, "} 0"]),
        "{text}"
    );
    // Only /metrics is served there.
    assert_eq!(
        get_text(&client, &format!("http://{metrics}/other"))
            .await
            .0,
        404
    );

    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The metrics listener is gone with the service.
    assert!(tokio::net::TcpStream::connect(metrics).await.is_err());
}
