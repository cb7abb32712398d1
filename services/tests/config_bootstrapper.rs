//! config-bootstrapper: DMSG addresses scraped from `/health` (skytower and Go shapes), DMSG
//! servers from dmsg-discovery, stale values when a service is down, scrapes bounded in time
//! and size, answers from the cache, refusals, and `--mode dual` answering the same over HTTP
//! and DMSG — with a node then reaching a service over DMSG at the address it was given.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use skytower_services::config_bootstrapper::{
    BootstrapClient, BootstrapConfig, BootstrapService, Bootstrapper, Freshness, NetworkConfig,
};
use skytower_services::dmsg_discovery::{FakeRelativeClock, KeyedRateLimit};
use skytower_services::svcmode::{Mode, SvcConfig};
use skytower_services::uptime_tracker::{TrackerConfig, UptimeClient, UptimeTracker};
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::disc::Entry;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const T: Duration = Duration::from_secs(20);

/// What a fake service's `/health` does.
#[derive(Clone, Debug)]
enum Health {
    Answer(StatusCode, String),
    Hang,
}

/// A fake service on loopback: a controllable `/health` and a server list.
#[derive(Clone)]
struct Fake {
    health: Arc<Mutex<Health>>,
    servers: Arc<Mutex<serde_json::Value>>,
    hits: Arc<AtomicUsize>,
    url: String,
    _task: Arc<skytower_transports::task::AbortOnDrop>,
}

impl Fake {
    async fn start(health: Health) -> Fake {
        let state = (
            Arc::new(Mutex::new(health)),
            Arc::new(Mutex::new(serde_json::json!([]))),
            Arc::new(AtomicUsize::new(0)),
        );
        type St = (
            Arc<Mutex<Health>>,
            Arc<Mutex<serde_json::Value>>,
            Arc<AtomicUsize>,
        );
        let app =
            Router::new()
                .route(
                    "/health",
                    get(|State((h, _, hits)): State<St>| async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let h = h.lock().unwrap().clone();
                        match h {
                            Health::Answer(status, body) => (status, body).into_response(),
                            Health::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                Response::new(Body::empty())
                            }
                        }
                    }),
                )
                .route(
                    "/dmsg-discovery/all_servers",
                    get(|State((_, s, _)): State<St>| async move {
                        axum::Json(s.lock().unwrap().clone())
                    }),
                )
                .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake {
            health: state.0,
            servers: state.1,
            hits: state.2,
            url,
            _task: Arc::new(skytower_transports::task::AbortOnDrop::new(&task)),
        }
    }

    fn set(&self, h: Health) {
        *self.health.lock().unwrap() = h;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn ours(addr: Addr) -> Health {
    Health::Answer(
        StatusCode::OK,
        serde_json::json!({"service": "x", "status": "ok",
            "checks": {"dmsg": {"status": "ok", "details": {"address": addr.to_string()}}}})
        .to_string(),
    )
}

fn addr() -> Addr {
    Addr::new(SecretKey::generate().unwrap().public_key(), 80)
}

fn server_entry(free: u32) -> Entry {
    let key = SecretKey::generate().unwrap();
    let mut e = Entry::new_server(key.public_key(), "192.0.2.1:8081", free);
    e.sign(&key);
    e
}

fn config(toml: &str) -> BootstrapConfig {
    BootstrapConfig::from_toml_str(toml).unwrap()
}

fn service(config: BootstrapConfig) -> BootstrapService {
    BootstrapService::new(config, 1_000_000, 1_000_000)
}

async fn get_config(app: &Router) -> (StatusCode, serde_json::Value) {
    let res = app
        .clone()
        .oneshot(Request::get("/config").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// A port nothing listens on.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn scrapes_dmsg_addresses_and_servers_and_serves_the_lists() {
    let (disc_addr, tpd_addr) = (addr(), addr());
    let disc = Fake::start(ours(disc_addr)).await;
    // A Go service: top-level dmsg_address, and degraded (503) — the address still counts.
    let go = Fake::start(Health::Answer(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(r#"{{"build_info":{{"version":"1"}},"dmsg_address":"{tpd_addr}"}}"#),
    ))
    .await;
    // An HTTP-only service.
    let http_only = Fake::start(Health::Answer(
        StatusCode::OK,
        r#"{"service":"ar","status":"ok","checks":{}}"#.into(),
    ))
    .await;
    let (a, b) = (server_entry(10), server_entry(5));
    let mut forged = server_entry(99);
    forged.server.as_mut().unwrap().available_sessions = 100; // signature no longer matches
    let client_key = SecretKey::generate().unwrap();
    let mut client_entry = Entry::new_client(client_key.public_key(), vec![]);
    client_entry.sign(&client_key);
    *disc.servers.lock().unwrap() = serde_json::json!([
        serde_json::to_value(&forged).unwrap(),
        serde_json::to_value(&a).unwrap(),
        {"not": "an entry"},
        serde_json::to_value(&client_entry).unwrap(),
        serde_json::to_value(&b).unwrap(),
    ]);
    let rsn = SecretKey::generate().unwrap().public_key();
    let svc = service(config(&format!(
        r#"
        route_setup_nodes = ["{rsn}"]
        stun_servers = ["stun.example.org:3478"]
        dns_server = "1.1.1.1"
        [services]
        dmsg_discovery = "{}"
        transport_discovery = "{}/"
        address_resolver = "{}"
        "#,
        disc.url, go.url, http_only.url
    )));

    // Before the first scrape: everything unknown, the lists already there.
    let before = svc.network_config();
    let d = before.services.dmsg_discovery.as_ref().unwrap();
    assert_eq!((d.status, d.dmsg_address), (Freshness::Unknown, None));
    assert_eq!(before.dmsg_servers.status, Freshness::Unknown);
    assert_eq!(before.route_setup_nodes, vec![rsn]);

    svc.refresh_once().await;
    let net = svc.network_config();
    let s = &net.services;
    let d = s.dmsg_discovery.as_ref().unwrap();
    assert_eq!(
        (d.status, d.dmsg_address, d.error.as_deref()),
        (Freshness::Ok, Some(disc_addr), None)
    );
    assert_eq!(d.url, disc.url);
    assert_eq!(d.dmsg_url(), Some(format!("dmsg://{disc_addr}")));
    let t = s.transport_discovery.as_ref().unwrap();
    assert_eq!((t.status, t.dmsg_address), (Freshness::Ok, Some(tpd_addr)));
    let r = s.address_resolver.as_ref().unwrap();
    assert_eq!((r.status, r.dmsg_address), (Freshness::Ok, None));
    assert!(r.updated_at.is_some());
    assert!(
        s.route_finder.is_none() && s.uptime_tracker.is_none() && s.service_discovery.is_none()
    );
    assert_eq!(net.dmsg_servers.status, Freshness::Ok);
    assert_eq!(
        net.dmsg_servers.entries,
        vec![a.clone(), b.clone()],
        "only valid, signed server entries"
    );
    assert_eq!(net.stun_servers, ["stun.example.org:3478"]);
    assert_eq!(net.dns_server.as_deref(), Some("1.1.1.1"));

    // The API answers exactly that.
    let (status, json) = get_config(&svc.router()).await;
    assert_eq!(status, StatusCode::OK);
    let served: NetworkConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(served, net);
    assert_eq!(
        json["services"]["dmsg_discovery"]["dmsg_address"],
        disc_addr.to_string()
    );
    assert_eq!(json["services"]["dmsg_discovery"]["status"], "ok");
    assert!(json["services"].get("route_finder").is_none());

    // At most scrape.max_dmsg_servers servers.
    let svc = service(config(&format!(
        "[services]\ndmsg_discovery = \"{}\"\n[scrape]\nmax_dmsg_servers = 1",
        disc.url
    )));
    svc.refresh_once().await;
    assert_eq!(svc.network_config().dmsg_servers.entries, vec![a]);
}

#[tokio::test]
async fn a_down_service_is_served_stale_with_its_last_address() {
    let known = addr();
    let fake = Fake::start(ours(known)).await;
    let never = closed_url();
    let svc = service(config(&format!(
        "[services]\nuptime_tracker = \"{}\"\nroute_finder = \"{never}\"",
        fake.url
    )));
    svc.refresh_once().await;
    let ut = svc.network_config().services.uptime_tracker.unwrap();
    assert_eq!((ut.status, ut.dmsg_address), (Freshness::Ok, Some(known)));
    let first_update = ut.updated_at.unwrap();
    let rf = svc.network_config().services.route_finder.unwrap();
    assert_eq!((rf.status, rf.dmsg_address), (Freshness::Unknown, None));
    assert!(
        rf.error.as_deref().unwrap().contains("unreachable"),
        "{rf:?}"
    );
    // No dmsg_discovery configured: the server list says why it is empty.
    let servers = svc.network_config().dmsg_servers;
    assert_eq!(servers.status, Freshness::Unknown);
    assert!(
        servers
            .error
            .unwrap()
            .contains("no services.dmsg_discovery")
    );

    // The service breaks: its last address is served, marked stale, with the reason.
    fake.set(Health::Answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "boom".into(),
    ));
    svc.refresh_once().await;
    let ut = svc.network_config().services.uptime_tracker.unwrap();
    assert_eq!(
        (ut.status, ut.dmsg_address),
        (Freshness::Stale, Some(known))
    );
    assert_eq!(ut.updated_at, Some(first_update));
    assert!(ut.error.as_deref().unwrap().contains("500"), "{ut:?}");
    let (_, json) = get_config(&svc.router()).await;
    assert_eq!(json["services"]["uptime_tracker"]["status"], "stale");
    assert_eq!(
        json["services"]["uptime_tracker"]["dmsg_address"],
        known.to_string()
    );

    // Garbage is a failure too (stale), not a new "no address".
    fake.set(Health::Answer(
        StatusCode::OK,
        r#"{"dmsg_address":"nope:80"}"#.into(),
    ));
    svc.refresh_once().await;
    let ut = svc.network_config().services.uptime_tracker.unwrap();
    assert_eq!(
        (ut.status, ut.dmsg_address),
        (Freshness::Stale, Some(known))
    );
    assert!(ut.error.unwrap().contains("bad DMSG address"));

    // It comes back with a new address.
    let moved = addr();
    fake.set(ours(moved));
    svc.refresh_once().await;
    let ut = svc.network_config().services.uptime_tracker.unwrap();
    assert_eq!(
        (ut.status, ut.dmsg_address, ut.error),
        (Freshness::Ok, Some(moved), None)
    );
}

#[tokio::test]
async fn scrapes_are_bounded_in_time_and_size() {
    let hanging = Fake::start(Health::Hang).await;
    let huge = Fake::start(Health::Answer(StatusCode::OK, "x".repeat(10_000))).await;
    let fine_addr = addr();
    let fine = Fake::start(ours(fine_addr)).await;
    let svc = service(config(&format!(
        "[services]\nroute_finder = \"{}\"\nservice_discovery = \"{}\"\nuptime_tracker = \"{}\"\n\
         [scrape]\ntimeout = \"300ms\"\nmax_health_bytes = 1024",
        hanging.url, huge.url, fine.url
    )));
    let started = std::time::Instant::now();
    svc.refresh_once().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let s = svc.network_config().services;
    let rf = s.route_finder.unwrap();
    assert_eq!(rf.status, Freshness::Unknown);
    assert!(rf.error.unwrap().contains("no answer within 300ms"));
    let sd = s.service_discovery.unwrap();
    assert_eq!(sd.status, Freshness::Unknown);
    assert!(sd.error.unwrap().contains("larger than 1024 bytes"));
    // The slow and the oversized do not hold the others back.
    let ut = s.uptime_tracker.unwrap();
    assert_eq!(
        (ut.status, ut.dmsg_address),
        (Freshness::Ok, Some(fine_addr))
    );
}

#[tokio::test]
async fn answers_come_from_the_cache_and_scrapes_repeat() {
    let fake = Fake::start(ours(addr())).await;
    let svc = service(config(&format!(
        "[services]\nuptime_tracker = \"{}\"\n[scrape]\ninterval = \"200ms\"\ntimeout = \"200ms\"",
        fake.url
    )));
    let app = svc.router();
    for _ in 0..20 {
        assert_eq!(get_config(&app).await.0, StatusCode::OK);
    }
    assert_eq!(fake.hits(), 0, "requests never scrape");

    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let svc = svc.clone();
        let cancel = cancel.clone();
        async move { svc.refresh(cancel).await }
    });
    let deadline = tokio::time::Instant::now() + T;
    while fake.hits() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "scrapes did not repeat"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
    let (_, json) = get_config(&app).await;
    assert_eq!(json["services"]["uptime_tracker"]["status"], "ok");
}

#[tokio::test]
async fn refusals_and_the_rate_limit() {
    let clock = FakeRelativeClock::default();
    let svc = service(BootstrapConfig::default()).with_rate_limit(KeyedRateLimit::with_clock(
        1,
        2,
        clock.clone(),
    ));
    let app = svc.router();
    let call = |method: &str, path: &str, ip: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let peer: std::net::SocketAddr = format!("{ip}:1").parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (
                status,
                json["error"]["code"].as_str().unwrap_or("").to_owned(),
                headers,
            )
        }
    };
    assert_eq!(call("GET", "/nope", "192.0.2.1").await.1, "not_found");
    let (status, code, _) = call("POST", "/config", "192.0.2.2").await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_eq!(call("GET", "/config", "192.0.2.3").await.0, StatusCode::OK);
    assert_eq!(call("GET", "/config", "192.0.2.3").await.0, StatusCode::OK);
    let (status, code, headers) = call("GET", "/config", "192.0.2.3").await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(call("GET", "/config", "192.0.2.4").await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_eq!(call("GET", "/config", "192.0.2.3").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_client_reports_an_unreachable_bootstrapper_as_retryable() {
    let err = BootstrapClient::new(&closed_url())
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(BootstrapClient::new("ftp://x").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_answers_the_same_and_nodes_reach_services_over_dmsg() {
    let net = TestNetwork::start(1).await;
    let dual = |key: SecretKey| SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        key: Some(key),
        discovery: Some(Arc::new(net.discovery().clone())),
        mode: Mode::Dual,
        client: test_client_config(),
        grace: Duration::from_secs(2),
        ..SvcConfig::default()
    };
    // An uptime tracker in dual mode: its /health says its DMSG address.
    let tracker = UptimeTracker::bind(
        dual(SecretKey::generate().unwrap()),
        TrackerConfig::default(),
    )
    .await
    .unwrap();
    let tracker_http = format!("http://{}", tracker.http_addr().unwrap());
    let tracker_dmsg = tracker.dmsg_addr().unwrap();
    net.wait_published(tracker.svc().dmsg_client().unwrap())
        .await;
    let (stop_tracker, tracker_stopped) = tokio::sync::oneshot::channel::<()>();
    let tracker_task = tokio::spawn(tracker.serve(async {
        let _ = tracker_stopped.await;
    }));

    let cfg = config(&format!("[services]\nuptime_tracker = \"{tracker_http}\""));
    let boot = Bootstrapper::bind(dual(SecretKey::generate().unwrap()), cfg)
        .await
        .unwrap();
    let boot_http = format!("http://{}", boot.http_addr().unwrap());
    let boot_dmsg = format!("dmsg://{}", boot.dmsg_addr().unwrap());
    net.wait_published(boot.svc().dmsg_client().unwrap()).await;
    let (stop_boot, boot_stopped) = tokio::sync::oneshot::channel::<()>();
    let boot_task = tokio::spawn(boot.serve(async {
        let _ = boot_stopped.await;
    }));

    // A new node knows only the bootstrapper; its first scrape runs at start-up.
    let over_http = BootstrapClient::new(&boot_http).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    let network = loop {
        let n = over_http.fetch().await.unwrap();
        if n.services.uptime_tracker.as_ref().unwrap().status == Freshness::Ok {
            break n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scrape at start-up: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ut = network.services.uptime_tracker.clone().unwrap();
    assert_eq!(ut.dmsg_address, Some(tracker_dmsg));

    // The same answer over DMSG, byte for byte.
    let node = Arc::new(net.client().await);
    let connector = Connector::with_dmsg(node.clone()).connect_timeout(Duration::from_secs(10));
    let over_dmsg = BootstrapClient::with_connector(&boot_dmsg, connector.clone()).unwrap();
    let (hs, hb) = over_http
        .http()
        .send(http::Method::GET, "/config", None)
        .await
        .unwrap();
    let (ds, db) = over_dmsg
        .http()
        .send(http::Method::GET, "/config", None)
        .await
        .unwrap();
    assert_eq!((hs, &hb), (ds, &db));
    for path in ["/nope", "/config?x"] {
        let h = over_http
            .http()
            .send(http::Method::POST, path, None)
            .await
            .unwrap_err();
        let d = over_dmsg
            .http()
            .send(http::Method::POST, path, None)
            .await
            .unwrap_err();
        assert_eq!(h.to_string(), d.to_string(), "{path}");
    }
    assert_eq!(over_dmsg.fetch().await.unwrap(), network);

    // The node heartbeats to the tracker over DMSG, at the address it was given.
    let key = Arc::new(SecretKey::generate().unwrap());
    let ut_client = UptimeClient::with_connector(&ut.dmsg_url().unwrap(), connector)
        .unwrap()
        .with_key(key.clone());
    assert!(ut_client.heartbeat("0.1.0").await.unwrap().first);
    assert!(ut_client.uptime(&key.public_key()).await.unwrap().online);

    drop((over_dmsg, ut_client));
    stop_boot.send(()).unwrap();
    tokio::time::timeout(T, boot_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    stop_tracker.send(()).unwrap();
    tokio::time::timeout(T, tracker_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    if let Ok(c) = Arc::try_unwrap(node) {
        c.close().await;
    }
}
