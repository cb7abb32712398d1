//! service-discovery API tests. The `shared` suite runs against both stores (`memory::*` and
//! `redis::*`; the Redis ones start a private `redis-server` and skip loudly when it is not
//! installed); the rest are store-specific (TTL with paused time on the embedded store, real
//! short TTLs and an outage on Redis).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::{Answer, RedisServer, get, send};
use http::{Method, Request, StatusCode};
use skytower_services::auth;
use skytower_services::dmsg_discovery::{FakeRelativeClock, KeyedRateLimit};
use skytower_services::service_discovery::{
    Config, Geo, REDIS_NAMESPACE, Registration, ServiceDiscovery, ServiceDiscoveryClient,
    ServiceDiscoveryServer, ServiceEntry, ServiceQuery,
};
use skytower_services::svcmode::SvcConfig;
use skytower_services::ttl_store::{self, MemoryTtlStore, RedisConfig, StoreSpec, TtlStore};
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::identity::{PublicKey, SecretKey};

/// Which store a shared test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Redis,
}

/// Runs each listed suite function against the embedded store and against Redis.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Redis).await
                }
            )*
        }
    };
}

both_stores!(
    every_status_code_of_the_api,
    signatures_missing_wrong_key_wrong_path_replayed_expired,
    queries_filter_and_sample,
    concurrent_upserts_from_many_keys,
    per_key_limit_holds_under_concurrent_registrations,
    the_store_bound_refuses_new_addresses,
    health_reports_the_store,
);

/// Generous limits for tests (writes are not rate-limited unless a test says so).
fn config() -> Config {
    Config {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        ..Config::default()
    }
}

/// A store (and, for Redis, the server behind it).
struct Backend {
    store: Arc<dyn TtlStore>,
    redis: Option<RedisServer>,
}

impl Backend {
    async fn new(kind: Kind, config: &Config) -> Option<Backend> {
        match kind {
            Kind::Memory => Some(Backend {
                store: Arc::new(MemoryTtlStore::new(config.max_entries)),
                redis: None,
            }),
            Kind::Redis => {
                let redis = RedisServer::start()?;
                let mut rc = RedisConfig::new(redis.url());
                // Generous: 1000 concurrent scripts on a loaded 2-core machine can take >500 ms.
                rc.response_timeout = Duration::from_secs(3);
                rc.connection_timeout = Duration::from_secs(3);
                let store = ttl_store::open(&StoreSpec::Redis(rc), REDIS_NAMESPACE, 0)
                    .await
                    .expect("connect to the test redis");
                Some(Backend {
                    store,
                    redis: Some(redis),
                })
            }
        }
    }

    fn service(&self, config: &Config) -> ServiceDiscovery {
        ServiceDiscovery::new(config, self.store.clone())
    }

    /// A second connection to the same Redis namespace: what another instance would use.
    async fn another_instance(&self) -> Arc<dyn TtlStore> {
        let url = self.redis.as_ref().expect("a Redis backend").url();
        ttl_store::open(&StoreSpec::Redis(RedisConfig::new(url)), REDIS_NAMESPACE, 0)
            .await
            .unwrap()
    }
}

fn key() -> SecretKey {
    SecretKey::generate().unwrap()
}

/// A request signed by `key` now, with a fresh nonce.
fn signed(key: &SecretKey, method: Method, path: &str, body: &[u8]) -> Request<Body> {
    let headers = auth::sign_now(key, &method, path, body).unwrap();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

fn reg_json(pk: PublicKey, port: u16, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&Registration::new(pk, port, kind, "1.0.0")).unwrap()
}

fn register_req(key: &SecretKey, port: u16, kind: &str) -> Request<Body> {
    signed(
        key,
        Method::POST,
        "/api/services",
        &reg_json(key.public_key(), port, kind),
    )
}

#[track_caller]
fn assert_error(a: &Answer, status: StatusCode, code: &str, message_has: &str) {
    assert_error_in("", a, status, code, message_has);
}

/// [`assert_error`] naming the case (`what`) when it fails.
#[track_caller]
fn assert_error_in(what: &str, a: &Answer, status: StatusCode, code: &str, message_has: &str) {
    assert_eq!(a.status, status, "{what}: {:?}", a.json);
    assert_eq!(a.code(), code, "{what}: {:?}", a.json);
    let message = a.json["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(message_has),
        "{what}: {message:?} lacks {message_has:?}"
    );
}

fn addresses(json: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = json
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {json:?}"))
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

async fn every_status_code_of_the_api(kind: Kind) {
    let cfg = Config {
        max_per_key: 3,
        max_body: 2048,
        ..config()
    };
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = backend.service(&cfg).router();
    let alice = key();
    let pk = alice.public_key();

    // 201 on creation, with the TTL's timestamps; 200 on refresh.
    let a = send(&app, register_req(&alice, 44, "vpn")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json);
    let entry: ServiceEntry = serde_json::from_value(a.json.clone()).unwrap();
    assert_eq!(entry.address.to_string(), format!("{pk}:44"));
    assert_eq!(
        (entry.kind.as_str(), entry.version.as_str()),
        ("vpn", "1.0.0")
    );
    assert_eq!(entry.expires_at - entry.updated_at, 300_000);
    assert!(entry.updated_at.abs_diff(unix_ms_now()) < 60_000);
    let a = send(&app, register_req(&alice, 44, "vpn")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);

    // Bodies.
    let post = |body: &[u8]| signed(&alice, Method::POST, "/api/services", body);
    assert_error(
        &send(&app, post(b"{")).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "malformed JSON",
    );
    assert_error(
        &send(&app, post(b"")).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "malformed JSON",
    );
    let mut extra: serde_json::Value = serde_json::from_slice(&reg_json(pk, 1, "vpn")).unwrap();
    extra["owner"] = "me".into();
    assert_error(
        &send(&app, post(&serde_json::to_vec(&extra).unwrap())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_service",
        "unknown field `owner`",
    );
    for bad_addr in [
        format!("{pk}"),
        format!("{pk}:0"),
        format!("{pk}:65536"),
        "nope:1".into(),
    ] {
        let body = serde_json::json!({"address": bad_addr, "type": "vpn", "version": "1"});
        assert_error(
            &send(&app, post(&serde_json::to_vec(&body).unwrap())).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_service",
            "address",
        );
    }
    let no_version = serde_json::json!({"address": format!("{pk}:1"), "type": "vpn"});
    assert_error(
        &send(&app, post(&serde_json::to_vec(&no_version).unwrap())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_service",
        "missing field `version`",
    );

    // Someone else's address.
    let bob = key();
    assert_error(
        &send(&app, post(&reg_json(bob.public_key(), 44, "vpn"))).await,
        StatusCode::FORBIDDEN,
        "forbidden_key",
        "can only register and delete its own entries",
    );

    // Validation limits.
    let with = |f: &dyn Fn(&mut Registration)| {
        let mut r = Registration::new(pk, 45, "vpn", "1.0.0");
        f(&mut r);
        serde_json::to_vec(&r).unwrap()
    };
    let cases: [(Vec<u8>, &str, &str); 5] = [
        (with(&|r| r.kind = "a b".into()), "invalid_type", "a-z"),
        (with(&|r| r.kind = "x".repeat(33)), "invalid_type", "1–32"),
        (
            with(&|r| r.version = "1/2".into()),
            "invalid_version",
            "1/2",
        ),
        (
            with(&|r| r.geo = Some(Geo::country("Germany"))),
            "invalid_geo",
            "alpha-2",
        ),
        (
            with(&|r| {
                let mut info = serde_json::Map::new();
                info.insert("x".into(), "y".repeat(1100).into());
                r.info = Some(info);
            }),
            "info_too_large",
            "more than 1024",
        ),
    ];
    for (body, code, has) in cases {
        assert_error(
            &send(&app, post(&body)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            has,
        );
    }
    // Body over --max-body, streamed (found while reading) or announced by content-length.
    assert_error(
        &send(&app, post(&vec![b' '; 4096])).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "larger than 2048 bytes",
    );
    let mut announced = post(&vec![b' '; 4096]);
    announced
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, 4096.into());
    assert_error(
        &send(&app, announced).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "too large",
    );
    // None of the refusals stored anything.
    assert_eq!(backend.store.len().await.unwrap(), 1);

    // The per-key maximum: two more addresses, then 409.
    for port in [45, 46] {
        assert_eq!(
            send(&app, register_req(&alice, port, "proxy")).await.status,
            StatusCode::CREATED
        );
    }
    assert_error(
        &send(&app, register_req(&alice, 47, "proxy")).await,
        StatusCode::CONFLICT,
        "too_many_entries",
        "already has 3 live service entries",
    );
    // A refresh of an existing address still works at the maximum.
    assert_eq!(
        send(&app, register_req(&alice, 46, "visor")).await.status,
        StatusCode::OK
    );

    // GET one.
    let a = send(&app, get(&format!("/api/services/{pk}:46"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["type"], "visor");
    assert_error(
        &send(&app, get(&format!("/api/services/{pk}:99"))).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no service at",
    );
    for bad in ["nope", &format!("{pk}:0"), &format!("{pk}")] {
        assert_error(
            &send(&app, get(&format!("/api/services/{bad}"))).await,
            StatusCode::BAD_REQUEST,
            "bad_address",
            "expected <64 hex public key>:<port 1-65535>",
        );
    }

    // DELETE.
    let delete = |key: &SecretKey, target: &str| {
        signed(key, Method::DELETE, &format!("/api/services/{target}"), b"")
    };
    assert_error(
        &send(&app, delete(&bob, &format!("{pk}:46"))).await,
        StatusCode::FORBIDDEN,
        "forbidden_key",
        "own entries",
    );
    assert_error(
        &send(
            &app,
            Request::delete(format!("/api/services/{pk}:46"))
                .body(Body::empty())
                .unwrap(),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "missing_signature",
        "sw-public",
    );
    assert_error(
        &send(&app, delete(&alice, "nope")).await,
        StatusCode::BAD_REQUEST,
        "bad_address",
        "address",
    );
    let a = send(&app, delete(&alice, &format!("{pk}:46"))).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json, serde_json::json!({"result": "deleted"}));
    assert_error(
        &send(&app, delete(&alice, &format!("{pk}:46"))).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no service at",
    );
    assert_eq!(
        send(&app, get(&format!("/api/services/{pk}:46")))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The freed slot can be used again.
    assert_eq!(
        send(&app, register_req(&alice, 47, "proxy")).await.status,
        StatusCode::CREATED
    );

    // Queries (more in `queries_filter_and_sample`).
    assert_error(
        &send(&app, get("/api/services")).await,
        StatusCode::BAD_REQUEST,
        "missing_type",
        "needs a type",
    );
    assert_error(
        &send(&app, get("/api/services?type=vpn&quantity=none")).await,
        StatusCode::BAD_REQUEST,
        "bad_query",
        "positive integer",
    );

    // Routes and methods.
    assert_error(
        &send(
            &app,
            Request::put("/api/services").body(Body::empty()).unwrap(),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    );
    assert_error(
        &send(&app, get("/api/nope")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    );
}

async fn signatures_missing_wrong_key_wrong_path_replayed_expired(kind: Kind) {
    let cfg = config();
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = backend.service(&cfg).router();
    let alice = key();
    let mallory = key();
    let body = reg_json(alice.public_key(), 44, "vpn");
    let request = |headers: http::HeaderMap, path: &str, body: &[u8]| {
        let mut req = Request::post(path).body(Body::from(body.to_vec())).unwrap();
        req.headers_mut().extend(headers);
        req
    };
    let now = unix_ms_now();

    let sign = |key: &SecretKey, method: &Method, target: &str, body: &[u8]| {
        auth::sign_now(key, method, target, body).unwrap()
    };
    let post = &Method::POST;
    let mut no_sig = sign(&alice, post, "/api/services", &body);
    no_sig.remove(auth::SIG);
    let mut bad_nonce = sign(&alice, post, "/api/services", &body);
    bad_nonce.insert(auth::NONCE, "xyz".parse().unwrap());
    // Signed by mallory, claiming alice's key.
    let mut forged = sign(&mallory, post, "/api/services", &body);
    forged.insert(
        auth::PUBLIC,
        alice.public_key().to_string().parse().unwrap(),
    );
    let stale = |ts: u64| auth::sign(&alice, post, "/api/services", &body, ts, [1; 16]);
    let cases = [
        (
            "no headers",
            http::HeaderMap::new(),
            "missing_signature",
            "sw-public header missing",
        ),
        (
            "no sw-sig",
            no_sig,
            "missing_signature",
            "sw-sig header missing",
        ),
        (
            "malformed sw-nonce",
            bad_nonce,
            "bad_signature_header",
            "sw-nonce",
        ),
        ("wrong key", forged, "bad_signature", "does not verify"),
        (
            "signed for another target",
            sign(&alice, post, "/api/services?x=1", &body),
            "bad_signature",
            "does not verify",
        ),
        (
            "a DELETE's signature on a POST",
            sign(&alice, &Method::DELETE, "/api/services", &body),
            "bad_signature",
            "does not verify",
        ),
        (
            "another body",
            sign(&alice, post, "/api/services", b"{}"),
            "bad_signature",
            "does not verify",
        ),
        // The window is 30 s.
        (
            "expired",
            stale(now - 31_000),
            "stale_timestamp",
            "more than 30000 ms",
        ),
        (
            "in the future",
            stale(now + 31_000),
            "stale_timestamp",
            "more than 30000 ms",
        ),
    ];
    for (what, headers, code, message_has) in cases {
        let a = send(&app, request(headers, "/api/services", &body)).await;
        assert_error_in(what, &a, StatusCode::UNAUTHORIZED, code, message_has);
    }
    assert_eq!(
        backend.store.len().await.unwrap(),
        0,
        "nothing refused was stored"
    );

    // Replayed: the same signed request twice.
    let h = auth::sign(&alice, &Method::POST, "/api/services", &body, now, [2; 16]);
    let first = send(&app, request(h.clone(), "/api/services", &body)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.json);
    assert_error(
        &send(&app, request(h, "/api/services", &body)).await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
        "nonce already used",
    );
    // A replayed DELETE too.
    let path = format!("/api/services/{}:44", alice.public_key());
    let h = auth::sign(&alice, &Method::DELETE, &path, b"", now, [3; 16]);
    let del = |h: http::HeaderMap| {
        let mut req = Request::delete(path.as_str()).body(Body::empty()).unwrap();
        req.headers_mut().extend(h);
        req
    };
    assert_eq!(send(&app, del(h.clone())).await.status, StatusCode::OK);
    assert_error(
        &send(&app, del(h)).await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
        "nonce already used",
    );
    // Reads need no signature.
    assert_eq!(
        send(&app, get("/api/services?type=vpn")).await.status,
        StatusCode::OK
    );
}

async fn queries_filter_and_sample(kind: Kind) {
    let cfg = Config {
        max_list: 5,
        ..config()
    };
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = backend.service(&cfg).router();
    let mut vpn_de_1 = Vec::new();
    let mut all_vpn = Vec::new();
    for i in 0..8u16 {
        let k = key();
        let (version, country) = match i % 4 {
            0 => ("1.0.0", "DE"),
            1 => ("1.0.0", "fr"),
            2 => ("2.0.0", "DE"),
            _ => ("2.0.0", "US"),
        };
        let reg = Registration {
            geo: Some(Geo {
                lat: Some(50.0),
                lon: Some(8.0),
                ..Geo::country(country)
            }),
            ..Registration::new(k.public_key(), 44, "VPN", version)
        };
        let a = send(
            &app,
            signed(
                &k,
                Method::POST,
                "/api/services",
                &serde_json::to_vec(&reg).unwrap(),
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json);
        let addr = format!("{}:44", k.public_key());
        if i % 4 == 0 {
            vpn_de_1.push(addr.clone());
        }
        all_vpn.push(addr);
        // The same node also runs a proxy, registered under Skywire's name.
        let a = send(&app, register_req(&k, 3, "skysocks")).await;
        assert_eq!(a.json["type"], "proxy");
    }
    vpn_de_1.sort();
    all_vpn.sort();

    // Filters.
    let q = |query: &str| {
        let app = app.clone();
        let path = format!("/api/services?{query}");
        async move {
            let a = send(&app, get(&path)).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {:?}", a.json);
            a.json
        }
    };
    assert_eq!(
        addresses(&q("type=vpn&version=1.0.0&country=de").await),
        vpn_de_1
    );
    assert_eq!(addresses(&q("type=vpn&version=2.0.0").await).len(), 4);
    assert_eq!(addresses(&q("type=vpn&country=DE").await).len(), 4);
    assert_eq!(addresses(&q("type=vpn&country=FR").await).len(), 2);
    for query in ["type=proxy", "type=skysocks&version=1.0.0"] {
        let got = q(query).await;
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), 5, "{query}: 8 match, --max-list is 5");
        assert!(got.iter().all(|e| e["type"] == "proxy"), "{query}");
    }
    assert_eq!(q("type=vpn&country=JP").await, serde_json::json!([]));
    assert_eq!(q("type=tor").await, serde_json::json!([]));
    let one = &q("type=vpn&country=US&version=2.0.0&quantity=1").await[0];
    assert_eq!(one["geo"]["country"], "US");
    assert_eq!(one["geo"]["lat"], 50.0);

    // Without quantity: up to --max-list (5 of the 8); quantity above it is clamped.
    for query in ["type=vpn", "type=vpn&quantity=100"] {
        let got = addresses(&q(query).await);
        assert_eq!(got.len(), 5, "{query}");
        assert!(got.iter().all(|a| all_vpn.contains(a)));
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 5, "distinct");
    }
    // A random sample: every entry turns up over enough queries.
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let got = addresses(&q("type=vpn&quantity=2").await);
        assert_eq!(got.len(), 2);
        seen.extend(got);
    }
    assert_eq!(seen.len(), 8, "{seen:?}");

    // Refusals.
    for (query, code, has) in [
        ("", "missing_type", "needs a type"),
        ("country=DE", "missing_type", "needs a type"),
        ("type=v%20pn", "bad_query", "invalid service type"),
        ("type=vpn&quantity=0", "bad_query", "positive integer"),
        ("type=vpn&country=DEU", "bad_query", "alpha-2"),
        ("type=vpn&version=%2F", "bad_query", "invalid version"),
        ("type=vpn&type=proxy", "bad_query", "given twice"),
        ("type=vpn&sort=asc", "bad_query", "unknown query parameter"),
    ] {
        assert_error(
            &send(&app, get(&format!("/api/services?{query}"))).await,
            StatusCode::BAD_REQUEST,
            code,
            has,
        );
    }
}

/// A real server (HTTP) over `backend` with `cfg`; stopped when the sender is dropped.
async fn serve(
    backend: &Backend,
    cfg: &Config,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let svc = SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_secs(2),
        ..SvcConfig::default()
    };
    let server = ServiceDiscoveryServer::start_with(svc, backend.service(cfg))
        .await
        .unwrap();
    let url = format!("http://{}", server.http_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop, task)
}

async fn concurrent_upserts_from_many_keys(kind: Kind) {
    let cfg = config();
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let (url, stop, task) = serve(&backend, &cfg).await;
    const KEYS: usize = 40;
    let kinds = ["vpn", "proxy", "visor"];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..KEYS {
        let url = url.clone();
        tasks.spawn(async move {
            let key = Arc::new(key());
            let client = ServiceDiscoveryClient::new(&url)
                .unwrap()
                .with_key(key.clone());
            // Create three entries at once, then refresh them at once.
            let regs: Vec<Registration> = kinds
                .iter()
                .zip(1u16..)
                .map(|(k, port)| Registration::new(key.public_key(), port, k, "1"))
                .collect();
            for round in 0..2 {
                let outcomes =
                    futures_util::future::join_all(regs.iter().map(|r| client.register(r))).await;
                for o in outcomes {
                    let o = o.unwrap();
                    assert_eq!(o.created, round == 0);
                }
            }
            key.public_key()
        });
    }
    let mut keys = HashSet::new();
    while let Some(pk) = tasks.join_next().await {
        keys.insert(pk.unwrap());
    }
    assert_eq!(keys.len(), KEYS);
    let reader = ServiceDiscoveryClient::new(&url).unwrap();
    for k in kinds {
        let found = reader.query(&ServiceQuery::of_type(k)).await.unwrap();
        assert_eq!(found.len(), KEYS, "{k}");
        let owners: HashSet<PublicKey> = found.iter().map(|e| e.address.pk).collect();
        assert_eq!(owners, keys, "{k}");
    }
    assert_eq!(backend.store.len().await.unwrap(), KEYS * kinds.len());
    drop(stop);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

async fn per_key_limit_holds_under_concurrent_registrations(kind: Kind) {
    let cfg = Config {
        max_per_key: 16,
        ..config()
    };
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let (url, stop, task) = serve(&backend, &cfg).await;
    let key = Arc::new(key());
    let client = ServiceDiscoveryClient::new(&url)
        .unwrap()
        .with_key(key.clone());
    let regs: Vec<Registration> = (1..=40u16)
        .map(|port| Registration::new(key.public_key(), port, "visor", "1"))
        .collect();
    let outcomes = futures_util::future::join_all(regs.iter().map(|r| client.register(r))).await;
    let mut created = 0;
    for o in outcomes {
        match o {
            Ok(o) => {
                assert!(o.created);
                created += 1;
            }
            Err(e) => assert_eq!(e.api_code(), Some("too_many_entries"), "{e}"),
        }
    }
    assert_eq!(created, 16);
    let found = client.query(&ServiceQuery::of_type("visor")).await.unwrap();
    assert_eq!(found.len(), 16);
    drop(stop);
    task.await.unwrap();
}

async fn the_store_bound_refuses_new_addresses(kind: Kind) {
    let cfg = Config {
        max_entries: 2,
        ..config()
    };
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = backend.service(&cfg).router();
    let (a, b) = (key(), key());
    assert_eq!(
        send(&app, register_req(&a, 1, "vpn")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, register_req(&b, 1, "vpn")).await.status,
        StatusCode::CREATED
    );
    let full = send(&app, register_req(&b, 2, "vpn")).await;
    assert_error(
        &full,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_full",
        "store full: 2 records",
    );
    assert_eq!(full.headers["retry-after"], "10");
    // Refreshes still work.
    assert_eq!(
        send(&app, register_req(&b, 1, "vpn")).await.status,
        StatusCode::OK
    );
}

async fn health_reports_the_store(kind: Kind) {
    let cfg = config();
    let Some(backend) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = backend.service(&cfg).router();
    send(&app, register_req(&key(), 1, "vpn")).await;
    let a = send(&app, get("/health")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["service"], "service-discovery");
    let store = &a.json["checks"]["store"];
    assert_eq!(store["status"], "ok");
    assert_eq!(
        store["details"]["kind"],
        if kind == Kind::Memory {
            "memory"
        } else {
            "redis"
        }
    );
    assert_eq!(store["details"]["entries"], 1);
}

#[tokio::test(start_paused = true)]
async fn memory_ttl_expiry_with_paused_time() {
    let cfg = config();
    let backend = Backend::new(Kind::Memory, &cfg).await.unwrap();
    let service = backend.service(&cfg);
    let app = service.router();
    let (a, b) = (key(), key());
    let get_a = format!("/api/services/{}:1", a.public_key());
    let get_b = format!("/api/services/{}:1", b.public_key());
    assert_eq!(
        send(&app, register_req(&a, 1, "vpn")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, register_req(&b, 1, "vpn")).await.status,
        StatusCode::CREATED
    );
    tokio::time::advance(Duration::from_secs(240)).await;
    // A refresh renews a's TTL.
    assert_eq!(
        send(&app, register_req(&a, 1, "vpn")).await.status,
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_secs(61)).await;
    // b is 5 min 1 s old: gone everywhere; a is 1 min 1 s past its refresh.
    assert_eq!(send(&app, get(&get_b)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, get(&get_a)).await.status, StatusCode::OK);
    assert_eq!(
        addresses(&send(&app, get("/api/services?type=vpn")).await.json),
        vec![format!("{}:1", a.public_key())]
    );
    // b's key can register a new address again (its old one no longer counts).
    assert_eq!(
        send(&app, register_req(&b, 1, "vpn")).await.status,
        StatusCode::CREATED,
        "an expired entry is re-created, not refreshed"
    );
    tokio::time::advance(Duration::from_secs(240)).await;
    assert_eq!(send(&app, get(&get_a)).await.status, StatusCode::NOT_FOUND);
    let b_only = addresses(&send(&app, get("/api/services?type=vpn")).await.json);
    assert_eq!(b_only, vec![format!("{}:1", b.public_key())]);
    // Maintenance frees the expired record.
    service.maintain_once().await;
    assert_eq!(backend.store.len().await.unwrap(), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    service.maintain_once().await;
    assert_eq!(backend.store.len().await.unwrap(), 0);
    assert_eq!(
        send(&app, get("/api/services?type=vpn")).await.json,
        serde_json::json!([])
    );
}

#[tokio::test]
async fn redis_real_short_ttl_expiry() {
    let cfg = Config {
        ttl: Duration::from_millis(1500),
        ..config()
    };
    let Some(backend) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let service = backend.service(&cfg);
    let app = service.router();
    let (a, b) = (key(), key());
    let get_a = format!("/api/services/{}:1", a.public_key());
    let get_b = format!("/api/services/{}:1", b.public_key());
    let created = send(&app, register_req(&a, 1, "vpn")).await;
    assert_eq!(
        created.json["expires_at"].as_u64().unwrap() - created.json["updated_at"].as_u64().unwrap(),
        1500
    );
    send(&app, register_req(&b, 1, "vpn")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        send(&app, register_req(&a, 1, "vpn")).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(send(&app, get(&get_b)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, get(&get_a)).await.status, StatusCode::OK);
    assert_eq!(
        addresses(&send(&app, get("/api/services?type=vpn")).await.json),
        vec![format!("{}:1", a.public_key())]
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(send(&app, get(&get_a)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&app, get("/api/services?type=vpn")).await.json,
        serde_json::json!([])
    );
    service.maintain_once().await;
    assert_eq!(backend.store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn redis_outage_is_503_store_unavailable_and_health_down() {
    let cfg = config();
    let Some(mut backend) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let app = backend.service(&cfg).router();
    let alice = key();
    assert_eq!(
        send(&app, register_req(&alice, 1, "vpn")).await.status,
        StatusCode::CREATED
    );
    if let Some(redis) = backend.redis.as_mut() {
        redis.stop();
    }
    for a in [
        send(&app, get("/api/services?type=vpn")).await,
        send(
            &app,
            get(&format!("/api/services/{}:1", alice.public_key())),
        )
        .await,
    ] {
        assert_error(
            &a,
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "store unavailable",
        );
        assert_eq!(a.headers["retry-after"], "1");
    }
    // A signed write cannot even be checked for replays (the nonces are in the same Redis).
    let write = send(&app, register_req(&alice, 1, "vpn")).await;
    assert_error(
        &write,
        StatusCode::SERVICE_UNAVAILABLE,
        "replay_store_unavailable",
        "cannot check the request for replays",
    );
    assert_eq!(write.headers["retry-after"], "1");
    let health = send(&app, get("/health")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json["checks"]["store"]["status"], "down");
}

#[tokio::test]
async fn writes_are_rate_limited_per_key() {
    let cfg = config();
    let backend = Backend::new(Kind::Memory, &cfg).await.unwrap();
    let clock = FakeRelativeClock::default();
    let app = backend
        .service(&cfg)
        .with_rate_limit(KeyedRateLimit::with_clock(1, 2, clock.clone()))
        .router();
    let (alice, bob) = (key(), key());
    for _ in 0..2 {
        assert!(
            send(&app, register_req(&alice, 1, "vpn"))
                .await
                .status
                .is_success()
        );
    }
    let limited = send(&app, register_req(&alice, 1, "vpn")).await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests",
    );
    assert_eq!(limited.headers["retry-after"], "1");
    // Deletes count too; other keys and reads are not affected.
    let del = signed(
        &alice,
        Method::DELETE,
        &format!("/api/services/{}:1", alice.public_key()),
        b"",
    );
    assert_eq!(send(&app, del).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&app, register_req(&bob, 1, "vpn")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, get("/api/services?type=vpn")).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        send(&app, register_req(&alice, 1, "vpn")).await.status,
        StatusCode::OK
    );
}

/// Two instances on one Redis share the signed-request nonces: a request accepted by one is a
/// replay at the other (each instance's own seen-set has never seen it). The nonce key is in
/// the service's namespace and expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_redis_refuse_each_others_replays() {
    let cfg = config();
    let Some(backend) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let url = backend.redis.as_ref().unwrap().url();
    let second_store = backend.another_instance().await;
    let a = backend.service(&cfg).router();
    let b = ServiceDiscovery::new(&cfg, second_store).router();
    let alice = key();
    let body = reg_json(alice.public_key(), 45, "vpn");
    let headers = auth::sign_now(&alice, &Method::POST, "/api/services", &body).unwrap();
    let request = || {
        let mut req = Request::post("/api/services")
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        req.headers_mut().extend(headers.clone());
        req
    };
    let first = send(&a, request()).await;
    assert!(first.status.is_success(), "{first:?}");
    assert_error(
        &send(&b, request()).await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
        "nonce already used",
    );

    // The nonce lives in the service's namespace, with a TTL (2 × 30 s window + 1 s).
    let mut conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{REDIS_NAMESPACE}nonce:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].contains(&alice.public_key().to_string()));
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((50_000..=61_000).contains(&pttl), "{pttl}");
}

/// The per-key and store bounds hold across instances on one Redis: the check and the write
/// are one script, so concurrent registrations through two instances cannot overshoot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limit_holds_across_instances_on_one_redis() {
    let cfg = config();
    let Some(backend) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let second = backend.another_instance().await;
    let ttl = Duration::from_secs(60);
    let dirs = [
        skytower_services::service_discovery::Directory::new(backend.store.clone(), ttl, 3, 1000),
        skytower_services::service_discovery::Directory::new(second, ttl, 3, 1000),
    ];
    let alice = key();
    let results = futures_util::future::join_all((0..20u16).map(|port| {
        let dir = &dirs[usize::from(port % 2)];
        dir.register(Registration::new(
            alice.public_key(),
            100 + port,
            "vpn",
            "1.0.0",
        ))
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                r,
                skytower_services::service_discovery::DirectoryError::TooManyEntries { max: 3, .. }
            ),
            "{r}"
        );
    }
    assert_eq!(backend.store.len().await.unwrap(), 3);
}
