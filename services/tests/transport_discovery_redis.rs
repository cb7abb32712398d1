//! transport-discovery and route-finder on Redis with real short TTLs: registrations expire,
//! re-registration refreshes, and an expired transport disappears from routes. Each test starts
//! its own `redis-server` (skipped loudly when it is not installed, failing in CI).

mod common;
mod tpd_common;

use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use http::{Method, StatusCode};
use skytower_services::route_finder::{self, Pair, RouteFinder, RoutesRequest, RoutesResponse};
use skytower_services::transport_discovery::{
    self as tpd, TransportDiscovery, TransportRecord, TransportType,
};
use skytower_services::ttl_store::{RedisConfig, StoreSpec};
use tpd_common::*;

#[tokio::test]
async fn registrations_expire_and_vanish_from_routes_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let spec = StoreSpec::Redis(RedisConfig::new(redis.url()));
    let config = tpd::Config {
        store: spec.clone(),
        entry_ttl: Duration::from_millis(1500),
        ..tpd::Config::default()
    };
    let store = tpd::open_store(&config).await.unwrap();
    assert_eq!(store.kind(), "redis");
    let app = TransportDiscovery::new(&config, store).router();
    // The route finder reads the same Redis namespace directly, as `--store` does.
    let rf_config = route_finder::Config {
        source: route_finder::SourceSpec::Store(spec, tpd::DEFAULT_NAMESPACE.to_owned()),
        ..route_finder::Config::default()
    };
    let rf = RouteFinder::new(
        &rf_config,
        route_finder::open_source(&rf_config).await.unwrap(),
    );
    let rf_app = rf.router();

    let [a, b, c] = [(); 3].map(|_| key());
    let (ab, bc, ac) = (
        signed(&a, &b, TransportType::Dmsg),
        signed(&b, &c, TransportType::Dmsg),
        signed(&a, &c, TransportType::Dmsg),
    );
    register_entries(&app, &a, &[ab, ac]).await;
    register_entries(&app, &b, &[bc]).await;
    let got: TransportRecord = ok_json(&app, get(&id_path(ac.entry.id))).await;
    assert_eq!(got.signed(), ac);
    let req = RoutesRequest::new(vec![Pair {
        src: a.public_key(),
        dst: c.public_key(),
    }]);
    rf.refresh_once().await.unwrap();
    let res: RoutesResponse =
        ok_json(&rf_app, plain_req(Method::POST, "/routes", &json(&req))).await;
    assert_eq!(res.routes[0].paths.len(), 2);

    // Re-register ab and bc halfway; ac is left to expire.
    tokio::time::sleep(Duration::from_millis(800)).await;
    register_entries(&app, &a, &[ab]).await;
    register_entries(&app, &b, &[bc]).await;
    rf.refresh_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;

    // 1.7 s: ac is gone from every read, and from routes even before a refresh.
    refused(
        &app,
        get(&id_path(ac.entry.id)),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let of_c = of_edge(&app, c.public_key()).await;
    assert_eq!(ids(&of_c), [bc.entry.id]);
    let res: RoutesResponse =
        ok_json(&rf_app, plain_req(Method::POST, "/routes", &json(&req))).await;
    assert_eq!(
        res.routes[0].paths.iter().map(Vec::len).collect::<Vec<_>>(),
        [2]
    );
    rf.refresh_once().await.unwrap();
    assert_eq!(rf.graph().status().transports, 2);

    // Everything expires.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let all = all_transports(&app).await;
    assert!(all.is_empty());
    refused(
        &rf_app,
        plain_req(Method::POST, "/routes", &json(&req)),
        StatusCode::NOT_FOUND,
        "unknown_source",
    )
    .await;
}

#[tokio::test]
async fn concurrent_upserts_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let config = tpd::Config {
        store: StoreSpec::Redis(RedisConfig::new(redis.url())),
        ..tpd::Config::default()
    };
    let app = TransportDiscovery::new(&config, tpd::open_store(&config).await.unwrap()).router();
    let hub = Arc::new(key());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let k = key();
        let e = signed(&hub, &k, TransportType::Stcpr);
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..2 {
                register_entries(&app, &k, &[e]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let of_hub = of_edge(&app, hub.public_key()).await;
    assert_eq!(of_hub.len(), 32);
}
