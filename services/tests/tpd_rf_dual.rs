//! transport-discovery and route-finder served in `dual` mode answer the same over HTTP and
//! over DMSG (an in-process DMSG network).

mod tpd_common;

use std::sync::Arc;
use std::time::Duration;

use skytower_services::route_finder::source::StoreSource;
use skytower_services::route_finder::{
    self, Pair, RfClient, RouteFinder, RouteFinderServer, RoutesRequest,
};
use skytower_services::svcmode::{Mode, SvcConfig};
use skytower_services::transport_discovery::{
    self as tpd, TpdClient, TransportDiscovery, TransportDiscoveryServer, TransportType,
};
use skytower_services::ttl_store::{MemoryTtlStore, Records, TtlStore};
use skytower_transports::connector::Connector;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};
use tpd_common::*;

fn dual(net: &TestNetwork) -> SvcConfig {
    SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        key: Some(SecretKey::generate().unwrap()),
        discovery: Some(Arc::new(net.discovery().clone())),
        mode: Mode::Dual,
        client: test_client_config(),
        grace: Duration::from_secs(2),
        ..SvcConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_answers_the_same_over_http_and_dmsg() {
    let net = TestNetwork::start(1).await;
    let store: Arc<dyn TtlStore> = Arc::new(MemoryTtlStore::new(1000));
    let tpd_server = TransportDiscoveryServer::bind_with(
        dual(&net),
        TransportDiscovery::new(&tpd::Config::default(), store.clone()),
    )
    .await
    .unwrap();
    net.wait_published(tpd_server.svc().dmsg_client().unwrap())
        .await;
    let tpd_http = format!("http://{}", tpd_server.http_addr().unwrap());
    let tpd_dmsg = format!("dmsg://{}", tpd_server.dmsg_addr().unwrap());
    let (stop_tpd, tpd_stopped) = tokio::sync::oneshot::channel::<()>();
    let tpd_task = tokio::spawn(tpd_server.serve(async {
        let _ = tpd_stopped.await;
    }));

    let rf = RouteFinder::new(
        &route_finder::Config::default(),
        Arc::new(StoreSource(Records::new(store))),
    );
    let rf_server = RouteFinderServer::bind_with(dual(&net), rf.clone())
        .await
        .unwrap();
    net.wait_published(rf_server.svc().dmsg_client().unwrap())
        .await;
    let rf_http = format!("http://{}", rf_server.http_addr().unwrap());
    let rf_dmsg = format!("dmsg://{}", rf_server.dmsg_addr().unwrap());
    let (stop_rf, rf_stopped) = tokio::sync::oneshot::channel::<()>();
    let rf_task = tokio::spawn(rf_server.serve(async {
        let _ = rf_stopped.await;
    }));

    // A caller on the DMSG network.
    let caller = Arc::new(net.client().await);
    let over_dmsg =
        || Connector::with_dmsg(caller.clone()).connect_timeout(Duration::from_secs(10));
    let [a, b, c] = [(); 3].map(|_| Arc::new(key()));
    let tpd_via_dmsg = TpdClient::with_connector(&tpd_dmsg, over_dmsg())
        .unwrap()
        .with_key(b.clone());
    let tpd_via_http = TpdClient::new(&tpd_http).unwrap().with_key(b.clone());

    // Register over DMSG (signed requests work there too), read over both.
    let ab = signed(&a, &b, TransportType::Dmsg);
    let bc = signed(&b, &c, TransportType::Stcpr);
    tpd_via_dmsg.register(&[ab, bc]).await.unwrap();
    let all_http = tpd_via_http.all().await.unwrap();
    let all_dmsg = tpd_via_dmsg.all().await.unwrap();
    assert_eq!(all_http, all_dmsg);
    assert_eq!(all_http.len(), 2);
    assert_eq!(
        tpd_via_dmsg.by_id(&ab.entry.id).await.unwrap(),
        tpd_via_http.by_id(&ab.entry.id).await.unwrap()
    );
    // The same refusal over both.
    let stranger = TpdClient::with_connector(&tpd_dmsg, over_dmsg())
        .unwrap()
        .with_key(Arc::new(key()));
    let e = stranger.delete(&ab.entry.id).await.unwrap_err();
    assert_eq!(e.api_code(), Some("caller_not_edge"));
    let e = TpdClient::new(&tpd_http)
        .unwrap()
        .with_key(Arc::new(key()))
        .delete(&ab.entry.id)
        .await
        .unwrap_err();
    assert_eq!(e.api_code(), Some("caller_not_edge"));

    // Routes: the same answer over both.
    rf.refresh_once().await.unwrap();
    let req = RoutesRequest::new(vec![
        Pair {
            src: a.public_key(),
            dst: c.public_key(),
        },
        Pair {
            src: c.public_key(),
            dst: a.public_key(),
        },
    ]);
    let via_http = RfClient::new(&rf_http).unwrap().routes(&req).await.unwrap();
    let via_dmsg = RfClient::with_connector(&rf_dmsg, over_dmsg())
        .unwrap()
        .routes(&req)
        .await
        .unwrap();
    assert_eq!(via_http, via_dmsg);
    assert_eq!(via_http.routes[0].paths[0].len(), 2);
    let bad = RoutesRequest::new(vec![Pair {
        src: a.public_key(),
        dst: a.public_key(),
    }]);
    let e = RfClient::with_connector(&rf_dmsg, over_dmsg())
        .unwrap()
        .routes(&bad)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status().map(|s| s.as_u16()), e.api_code()),
        (Some(422), Some("same_node"))
    );

    let _ = stop_rf.send(());
    rf_task.await.unwrap().unwrap();
    let _ = stop_tpd.send(());
    tpd_task.await.unwrap().unwrap();
}
