//! route-finder API: routes over the transport discovery's store, every status code path,
//! expired transports never routed over (paused time), and the API source against a real
//! transport discovery.

mod tpd_common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{Method, StatusCode};
use skytower_services::route_finder::source::StoreSource;
use skytower_services::route_finder::{self, Pair, RouteFinder, RoutesRequest, RoutesResponse};
use skytower_services::svcmode::SvcConfig;
use skytower_services::transport_discovery::{
    self as tpd, SignedEntry, TpdClient, TransportDiscovery, TransportRecord, TransportType,
};
use skytower_services::ttl_store::{MemoryTtlStore, Records, TtlStore};
use skytower_transports::identity::SecretKey;
use tpd_common::*;

struct Net {
    tpd: Router,
    rf: RouteFinder,
    app: Router,
}

fn net_with(config: route_finder::Config) -> Net {
    let store: Arc<dyn TtlStore> = Arc::new(MemoryTtlStore::new(10_000));
    let tpd = TransportDiscovery::new(&tpd::Config::default(), store.clone()).router();
    let rf = RouteFinder::new(&config, Arc::new(StoreSource(Records::new(store))));
    let app = rf.router();
    Net { tpd, rf, app }
}

fn net() -> Net {
    net_with(route_finder::Config::default())
}

async fn register(n: &Net, by: &SecretKey, entries: &[SignedEntry]) {
    let _: Vec<TransportRecord> = ok_json(
        &n.tpd,
        signed_req(by, Method::POST, "/transports", &json(&entries)),
    )
    .await;
}

fn routes_req(body: &impl serde::Serialize) -> http::Request<axum::body::Body> {
    plain_req(Method::POST, "/routes", &json(body))
}

fn pair(a: &SecretKey, b: &SecretKey) -> Pair {
    Pair {
        src: a.public_key(),
        dst: b.public_key(),
    }
}

#[tokio::test]
async fn routes_both_ways_shortest_first() {
    let n = net();
    let [a, b, c, d] = [(); 4].map(|_| key());
    // a-b-c-d and a shortcut a-c.
    register(
        &n,
        &b,
        &[
            signed(&a, &b, TransportType::Dmsg),
            signed(&b, &c, TransportType::Stcpr),
        ],
    )
    .await;
    register(
        &n,
        &c,
        &[
            signed(&c, &d, TransportType::Sudph),
            signed(&a, &c, TransportType::Tcp),
        ],
    )
    .await;
    n.rf.refresh_once().await.unwrap();
    let res: RoutesResponse = ok_json(
        &n.app,
        routes_req(&RoutesRequest::new(vec![pair(&a, &d), pair(&d, &a)])),
    )
    .await;
    assert_eq!(res.routes.len(), 2);
    let fwd = &res.routes[0];
    assert_eq!((fwd.src, fwd.dst), (a.public_key(), d.public_key()));
    let lens: Vec<usize> = fwd.paths.iter().map(Vec::len).collect();
    assert_eq!(lens, [2, 3]);
    let hops: Vec<_> = fwd.paths[0].iter().map(|h| (h.from, h.to)).collect();
    assert_eq!(
        hops,
        [
            (a.public_key(), c.public_key()),
            (c.public_key(), d.public_key())
        ]
    );
    assert_eq!(
        fwd.paths[0][0].tp_id,
        signed(&a, &c, TransportType::Tcp).entry.id
    );
    let rev = &res.routes[1];
    assert_eq!(rev.paths[0].first().unwrap().from, d.public_key());
    assert_eq!(rev.paths[0].last().unwrap().to, a.public_key());
    // Bounds: min 3 hops leaves the long path; max_paths 1 keeps the short one.
    let mut req = RoutesRequest::new(vec![pair(&a, &d)]);
    req.min_hops = 3;
    let res: RoutesResponse = ok_json(&n.app, routes_req(&req)).await;
    assert_eq!(
        res.routes[0].paths.iter().map(Vec::len).collect::<Vec<_>>(),
        [3]
    );
    let req = RoutesRequest {
        max_paths: 1,
        ..RoutesRequest::new(vec![pair(&a, &d)])
    };
    let res: RoutesResponse = ok_json(&n.app, routes_req(&req)).await;
    assert_eq!(res.routes[0].paths.len(), 1);
    // Defaults apply to omitted fields.
    let body = serde_json::json!({"pairs": [{"src": a.public_key(), "dst": d.public_key()}]});
    let res: RoutesResponse = ok_json(&n.app, routes_req(&body)).await;
    assert_eq!(res.routes[0].paths.len(), 2);
}

#[tokio::test]
async fn every_refusal() {
    let n = net_with(route_finder::Config {
        max_pairs: 2,
        max_paths: 8,
        max_hops: 12,
        ..route_finder::Config::default()
    });
    let [a, b, c, x, y] = [(); 5].map(|_| key());
    let ok = RoutesRequest::new(vec![pair(&a, &c)]);
    // Before the first refresh.
    refused(
        &n.app,
        routes_req(&ok),
        StatusCode::SERVICE_UNAVAILABLE,
        "graph_unavailable",
    )
    .await;
    register(
        &n,
        &b,
        &[
            signed(&a, &b, TransportType::Dmsg),
            signed(&b, &c, TransportType::Dmsg),
        ],
    )
    .await;
    register(&n, &x, &[signed(&x, &y, TransportType::Dmsg)]).await;
    n.rf.refresh_once().await.unwrap();

    refused(
        &n.app,
        plain_req(Method::POST, "/routes", b"{\"pairs\": ["),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    refused(
        &n.app,
        plain_req(
            Method::POST,
            "/routes",
            br#"{"pairs":[{"src":"zz","dst":"zz"}]}"#,
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_request",
    )
    .await;
    refused(
        &n.app,
        plain_req(Method::POST, "/routes", br#"{"pairs":[],"extra":1}"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_request",
    )
    .await;
    refused(
        &n.app,
        routes_req(&RoutesRequest::new(vec![])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_pairs",
    )
    .await;
    refused(
        &n.app,
        routes_req(&RoutesRequest::new(vec![pair(&a, &c); 3])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_pairs",
    )
    .await;
    for (min, max) in [(0, 0), (0, 13), (3, 2)] {
        let req = RoutesRequest {
            min_hops: min,
            max_hops: max,
            ..ok.clone()
        };
        refused(
            &n.app,
            routes_req(&req),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_hops",
        )
        .await;
    }
    for paths in [0, 9] {
        let req = RoutesRequest {
            max_paths: paths,
            ..ok.clone()
        };
        refused(
            &n.app,
            routes_req(&req),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_max_paths",
        )
        .await;
    }
    refused(
        &n.app,
        routes_req(&RoutesRequest::new(vec![pair(&a, &a)])),
        StatusCode::UNPROCESSABLE_ENTITY,
        "same_node",
    )
    .await;
    let stranger = key();
    refused(
        &n.app,
        routes_req(&RoutesRequest::new(vec![pair(&stranger, &a)])),
        StatusCode::NOT_FOUND,
        "unknown_source",
    )
    .await;
    refused(
        &n.app,
        routes_req(&RoutesRequest::new(vec![pair(&a, &stranger)])),
        StatusCode::NOT_FOUND,
        "unknown_destination",
    )
    .await;
    // One pair without a route makes the whole request 404, naming the pair.
    let m = refused(
        &n.app,
        routes_req(&RoutesRequest::new(vec![pair(&a, &c), pair(&a, &x)])),
        StatusCode::NOT_FOUND,
        "no_route",
    )
    .await;
    assert!(m.contains(&x.public_key().to_string()), "{m}");
    let req = RoutesRequest {
        max_hops: 1,
        ..ok.clone()
    };
    refused(&n.app, routes_req(&req), StatusCode::NOT_FOUND, "no_route").await;
    refused(
        &n.app,
        plain_req(Method::GET, "/routes", b""),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let big = vec![b' '; 70 * 1024];
    refused(
        &n.app,
        plain_req(Method::POST, "/routes", &big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;

    // A tiny search budget.
    let tight = net_with(route_finder::Config {
        max_work: 2,
        ..route_finder::Config::default()
    });
    register(
        &tight,
        &b,
        &[
            signed(&a, &b, TransportType::Dmsg),
            signed(&b, &c, TransportType::Dmsg),
        ],
    )
    .await;
    tight.rf.refresh_once().await.unwrap();
    refused(
        &tight.app,
        routes_req(&ok),
        StatusCode::NOT_FOUND,
        "search_limit",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_transport_disappears_from_routes_even_before_the_next_refresh() {
    let n = net();
    let [a, b, c] = [(); 3].map(|_| key());
    let ab = signed(&a, &b, TransportType::Dmsg);
    let bc = signed(&b, &c, TransportType::Dmsg);
    let ac = signed(&a, &c, TransportType::Dmsg);
    register(&n, &a, &[ab, ac]).await;
    register(&n, &b, &[bc]).await;
    tokio::time::advance(Duration::from_secs(200)).await;
    // a-b and b-c are re-registered; a-c is not and expires at 300 s.
    register(&n, &a, &[ab]).await;
    register(&n, &b, &[bc]).await;
    n.rf.refresh_once().await.unwrap();
    let req = RoutesRequest::new(vec![pair(&a, &c)]);
    let res: RoutesResponse = ok_json(&n.app, routes_req(&req)).await;
    assert_eq!(
        res.routes[0].paths.iter().map(Vec::len).collect::<Vec<_>>(),
        [1, 2]
    );
    // 301 s: a-c has expired. The snapshot still lists it, but it is not routed over.
    tokio::time::advance(Duration::from_secs(101)).await;
    let res: RoutesResponse = ok_json(&n.app, routes_req(&req)).await;
    assert_eq!(
        res.routes[0].paths.iter().map(Vec::len).collect::<Vec<_>>(),
        [2]
    );
    assert!(
        res.routes[0].paths[0]
            .iter()
            .all(|h| h.tp_id != ac.entry.id)
    );
    // After a refresh it is gone from the snapshot too.
    n.rf.refresh_once().await.unwrap();
    assert_eq!(n.rf.graph().status().transports, 2);
    // And once everything expired: no route (the nodes are unknown).
    tokio::time::advance(Duration::from_secs(300)).await;
    refused(
        &n.app,
        routes_req(&req),
        StatusCode::NOT_FOUND,
        "unknown_source",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_source_reads_a_running_transport_discovery_and_health_reports_the_graph() {
    let svc = || SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_secs(1),
        ..SvcConfig::default()
    };
    let tpd_server = tpd::TransportDiscoveryServer::bind(svc(), tpd::Config::default())
        .await
        .unwrap();
    let tpd_url = format!("http://{}", tpd_server.http_addr().unwrap());
    let (stop_tpd, tpd_stopped) = tokio::sync::oneshot::channel::<()>();
    let tpd_task = tokio::spawn(tpd_server.serve(async {
        let _ = tpd_stopped.await;
    }));
    let [a, b, c] = [(); 3].map(|_| key());
    let b = Arc::new(b);
    TpdClient::new(&tpd_url)
        .unwrap()
        .with_key(b.clone())
        .register(&[
            signed(&a, &b, TransportType::Dmsg),
            signed(&b, &c, TransportType::Dmsg),
        ])
        .await
        .unwrap();

    let config = route_finder::Config {
        source: route_finder::SourceSpec::Api(tpd_url.clone()),
        refresh: Duration::from_millis(100),
        ..route_finder::Config::default()
    };
    let server = route_finder::RouteFinderServer::bind(svc(), config)
        .await
        .unwrap();
    let rf_url = format!("http://{}", server.http_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let client = route_finder::RfClient::new(&rf_url).unwrap();
    let req = RoutesRequest::new(vec![pair(&a, &c)]);
    // The first refresh runs when serving starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let res = loop {
        match client.routes(&req).await {
            Ok(r) => break r,
            Err(e) => {
                assert_eq!(e.api_code(), Some("graph_unavailable"), "{e}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no graph after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(res.routes[0].paths[0].len(), 2);
    let (status, body) = client
        .http()
        .send(Method::GET, "/health", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        health["checks"]["graph"]["details"]["transports"], 2,
        "{health}"
    );
    let err = client
        .routes(&RoutesRequest::new(vec![pair(&a, &key())]))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("unknown_destination"));

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let _ = stop_tpd.send(());
    tpd_task.await.unwrap().unwrap();
}
