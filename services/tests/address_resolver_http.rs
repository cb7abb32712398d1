//! The address resolver's HTTP API over real loopback connections: status codes and error
//! codes of every refusal, signatures (missing, wrong key, wrong path, replayed, expired),
//! resolve with punch notices, TTL expiry (paused time on the embedded store, a real short TTL
//! on Redis), and `--mode dual` answering the same over HTTP and DMSG.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use skytower_services::address_resolver::{
    AddressResolver, AddressResolverClient, BindRequest, Bindings, Config, Mode, Options,
    SudphClient, SudphConfig, SudphEvent, Transport,
};
use skytower_services::api::ErrorBody;
use skytower_services::auth::{self, ClientError};
use skytower_services::ttl_store::{MemoryTtlStore, StoreSpec};
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::identity::{PublicKey, SecretKey};
use skytower_transports::testing::{TestNetwork, test_client_config};
use tokio::net::UdpSocket;

struct Running {
    url: String,
    udp: SocketAddr,
    bindings: Bindings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), skytower_services::address_resolver::RunError>>,
    /// The DMSG client of the DMSG side (modes dmsg and dual).
    dmsg: Option<std::sync::Weak<skytower_transports::dmsg::Client>>,
}

impl Running {
    async fn start(config: Config) -> Running {
        Self::start_with(config, Options::default()).await
    }

    async fn start_with(config: Config, options: Options) -> Running {
        let resolver = AddressResolver::bind_with(&config, options).await.unwrap();
        let url = format!("http://{}", resolver.http_addr().unwrap());
        let udp = resolver.udp_addr();
        let bindings = resolver.bindings().clone();
        let dmsg = resolver.svc().dmsg_client_weak();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(resolver.serve(async {
            let _ = stopped.await;
        }));
        Running {
            url,
            udp,
            bindings,
            stop: Some(stop),
            task,
            dmsg,
        }
    }

    fn client(&self, key: &Arc<SecretKey>) -> AddressResolverClient {
        AddressResolverClient::new(&self.url, key.clone()).unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_loopback: true,
        grace: Duration::from_secs(1),
        ..Config::default()
    }
}

fn key() -> Arc<SecretKey> {
    Arc::new(SecretKey::generate().unwrap())
}

/// The status and error code of a failed call.
fn refusal(e: ClientError) -> (StatusCode, String) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

/// A raw request with exactly these headers.
async fn raw(
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: &[u8],
) -> (StatusCode, Option<ErrorBody>, Bytes) {
    let client: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    req.headers_mut().extend(headers);
    let res = client.request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, ErrorBody::parse(&body), body)
}

#[tokio::test]
async fn stcpr_bind_resolve_unbind_and_every_refusal() {
    let ar = Running::start(config()).await;
    let (a, b) = (key(), key());
    let (ca, cb) = (ar.client(&a), ar.client(&b));
    let lan: Vec<IpAddr> = vec!["192.168.1.20".parse().unwrap()];

    let bound = ca.bind_stcpr(40_000, lan.clone()).await.unwrap();
    assert_eq!(bound.result, "bound");
    assert_eq!(bound.remote_addr, "127.0.0.1:40000".parse().unwrap());
    assert_eq!(bound.ttl_secs, 300);

    // Same public IP (loopback): local, with the LAN addresses.
    let r = cb.resolve(Transport::Stcpr, &a.public_key()).await.unwrap();
    assert_eq!(r.pk, a.public_key());
    assert_eq!(r.remote_addr, "127.0.0.1:40000".parse().unwrap());
    assert_eq!((r.port, r.is_local, &r.addresses), (40_000, true, &lan));
    assert!(!r.punched);

    let list = cb.transports().await.unwrap();
    assert_eq!(list.stcpr, vec![a.public_key()]);
    assert!(list.sudph.is_empty());

    // Refusals, with their codes.
    let cases: Vec<(Result<(), ClientError>, StatusCode, &str)> = vec![
        (
            cb.resolve(Transport::Stcpr, &b.public_key())
                .await
                .map(|_| ()),
            StatusCode::NOT_FOUND,
            "no_binding",
        ),
        (
            cb.resolve(Transport::Sudph, &a.public_key())
                .await
                .map(|_| ()),
            StatusCode::NOT_FOUND,
            "no_binding",
        ),
        (
            cb.http()
                .get_json::<serde_json::Value>("/resolve/stcpr/not-a-key")
                .await
                .map(|_| ()),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            cb.http()
                .get_json::<serde_json::Value>(&format!("/resolve/tcp/{}", a.public_key()))
                .await
                .map(|_| ()),
            StatusCode::BAD_REQUEST,
            "bad_transport",
        ),
        (
            cb.bind_stcpr(0, vec![]).await.map(|_| ()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_port",
        ),
        (
            cb.bind_stcpr(1, vec!["10.0.0.1".parse().unwrap(); 17])
                .await
                .map(|_| ()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_addresses",
        ),
        (
            cb.http()
                .post_json::<_, serde_json::Value>(
                    "/bind/stcpr",
                    &serde_json::json!({"port": 1, "extra": 2}),
                )
                .await
                .map(|_| ()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_request",
        ),
        (
            cb.http()
                .send(Method::POST, "/bind/stcpr", Some(b"{not json".to_vec()))
                .await
                .map(|_| ()),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            cb.http()
                .send(Method::POST, "/bind/stcpr", Some(vec![b' '; 20_000]))
                .await
                .map(|_| ()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (cb.unbind_stcpr().await, StatusCode::NOT_FOUND, "no_binding"),
        (
            cb.http()
                .get_json::<serde_json::Value>("/nope")
                .await
                .map(|_| ()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            cb.http()
                .send(Method::PUT, "/transports", None)
                .await
                .map(|_| ()),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (i, (result, status, code)) in cases.into_iter().enumerate() {
        let (s, c) = refusal(result.unwrap_err());
        assert_eq!((s, c.as_str()), (status, code), "case {i}");
    }

    ca.unbind_stcpr().await.unwrap();
    let (s, c) = refusal(
        cb.resolve(Transport::Stcpr, &a.public_key())
            .await
            .unwrap_err(),
    );
    assert_eq!((s, c.as_str()), (StatusCode::NOT_FOUND, "no_binding"));
    ar.stop().await;
}

#[tokio::test]
async fn non_public_addresses_are_refused_without_allow_loopback() {
    let ar = Running::start(Config {
        allow_loopback: false,
        ..config()
    })
    .await;
    let a = key();
    let err = ar.client(&a).bind_stcpr(40_000, vec![]).await.unwrap_err();
    let message = err.to_string();
    assert_eq!(
        refusal(err),
        (StatusCode::UNPROCESSABLE_ENTITY, "address_refused".into())
    );
    assert!(
        message.contains("127.0.0.1 is not a public address"),
        "{message}"
    );
    ar.stop().await;
}

#[tokio::test]
async fn signatures_are_required_and_checked() {
    let ar = Running::start(config()).await;
    let a = key();
    let mallory = key();
    let path = "/bind/stcpr";
    let url = format!("{}{path}", ar.url);
    let body = br#"{"port":40000}"#;
    let code = |r: (StatusCode, Option<ErrorBody>, Bytes)| (r.0, r.1.map(|e| e.code));

    // Missing.
    let r = raw(Method::POST, &url, HeaderMap::new(), body).await;
    assert_eq!(
        code(r),
        (StatusCode::UNAUTHORIZED, Some("missing_signature".into()))
    );
    // Wrong key: signed by mallory, claiming a's key.
    let mut h = auth::sign_now(&mallory, &Method::POST, path, body).unwrap();
    h.insert(auth::PUBLIC, a.public_key().to_string().parse().unwrap());
    assert_eq!(
        code(raw(Method::POST, &url, h, body).await),
        (StatusCode::UNAUTHORIZED, Some("bad_signature".into()))
    );
    // Wrong path: a signature for /resolve sent to /bind.
    let h = auth::sign_now(&a, &Method::POST, "/transports", body).unwrap();
    assert_eq!(
        code(raw(Method::POST, &url, h, body).await),
        (StatusCode::UNAUTHORIZED, Some("bad_signature".into()))
    );
    // Wrong body.
    let h = auth::sign_now(&a, &Method::POST, path, b"{}").unwrap();
    assert_eq!(
        code(raw(Method::POST, &url, h, body).await),
        (StatusCode::UNAUTHORIZED, Some("bad_signature".into()))
    );
    // Expired (older than the 30 s window).
    let h = auth::sign(
        &a,
        &Method::POST,
        path,
        body,
        unix_ms_now() - 60_000,
        [1; 16],
    );
    assert_eq!(
        code(raw(Method::POST, &url, h, body).await),
        (StatusCode::UNAUTHORIZED, Some("stale_timestamp".into()))
    );
    // Malformed header.
    let mut h = auth::sign_now(&a, &Method::POST, path, body).unwrap();
    h.insert(auth::SIG, "zz".parse().unwrap());
    assert_eq!(
        code(raw(Method::POST, &url, h, body).await),
        (
            StatusCode::UNAUTHORIZED,
            Some("bad_signature_header".into())
        )
    );
    // Good, then replayed.
    let h = auth::sign_now(&a, &Method::POST, path, body).unwrap();
    let (status, _, answer) = raw(Method::POST, &url, h.clone(), body).await;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        code(raw(Method::POST, &url, h, body).await),
        (StatusCode::UNAUTHORIZED, Some("replayed_request".into()))
    );
    // Resolve and unbind are signed too; /transports is not.
    let pk = a.public_key();
    let r = raw(
        Method::GET,
        &format!("{}/resolve/stcpr/{pk}", ar.url),
        HeaderMap::new(),
        b"",
    )
    .await;
    assert_eq!(
        code(r),
        (StatusCode::UNAUTHORIZED, Some("missing_signature".into()))
    );
    let r = raw(Method::DELETE, &url, HeaderMap::new(), b"").await;
    assert_eq!(
        code(r),
        (StatusCode::UNAUTHORIZED, Some("missing_signature".into()))
    );
    let (status, _, body) = raw(
        Method::GET,
        &format!("{}/transports", ar.url),
        HeaderMap::new(),
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["stcpr"][0], pk.to_string());
    ar.stop().await;
}

#[tokio::test]
async fn resolving_sudph_tells_the_target_to_punch_towards_the_caller() {
    let ar = Running::start(config()).await;
    let (a, b) = (key(), key());
    let a_udp = SudphClient::connect(
        a.clone(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        SudphConfig::new(ar.udp),
    )
    .await
    .unwrap();
    let mut b_udp = SudphClient::connect(
        b.clone(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        SudphConfig::new(ar.udp),
    )
    .await
    .unwrap();
    let r = ar
        .client(&a)
        .resolve(Transport::Sudph, &b.public_key())
        .await
        .unwrap();
    assert_eq!(r.remote_addr, b_udp.binding().observed);
    assert_eq!(r.transport, Transport::Sudph);
    assert!(r.punched);
    let ev = tokio::time::timeout(Duration::from_secs(5), b_udp.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        SudphEvent::PunchRequested {
            peer: a.public_key().to_bytes(),
            addr: a_udp.binding().observed
        }
    );
    // A caller without a SUDPH binding gets the address, but nobody is told.
    let c = key();
    let r = ar
        .client(&c)
        .resolve(Transport::Sudph, &b.public_key())
        .await
        .unwrap();
    assert!(!r.punched);
    let list = ar.client(&c).transports().await.unwrap();
    let mut both = vec![a.public_key(), b.public_key()];
    both.sort();
    assert_eq!(list.sudph, both);
    a_udp.close().await;
    b_udp.close().await;
    ar.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bindings_expire_after_the_ttl_unless_refreshed_embedded_store() {
    let bindings = Bindings::new(Arc::new(MemoryTtlStore::new(100)), Duration::from_secs(300));
    let pk = SecretKey::generate().unwrap().public_key();
    let session = skytower_services::address_resolver::wire::SessionId([4; 16]);
    let from: SocketAddr = "198.51.100.9:5000".parse().unwrap();
    let b = skytower_services::address_resolver::Binding {
        pk,
        transport: Transport::Sudph,
        remote: from,
        port: 5000,
        addresses: vec![],
        session: Some(session.to_hex()),
    };
    bindings.put(&b).await.unwrap();
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(bindings.get(Transport::Sudph, &pk).await.unwrap().is_some());
    // A heartbeat refreshes the TTL...
    use skytower_services::address_resolver::bindings::Refresh;
    assert_eq!(
        bindings
            .refresh(pk.as_bytes(), &session, from)
            .await
            .unwrap(),
        Refresh::Refreshed
    );
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(bindings.get(Transport::Sudph, &pk).await.unwrap().is_some());
    // ...and without one the binding is gone after 5 min.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(bindings.get(Transport::Sudph, &pk).await.unwrap().is_none());
    assert!(
        bindings
            .list(Transport::Sudph, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        bindings
            .refresh(pk.as_bytes(), &session, from)
            .await
            .unwrap(),
        Refresh::Unknown
    );
}

#[tokio::test]
async fn bindings_expire_on_redis_with_its_native_ttl() {
    let Some(redis) = common::RedisServer::start() else {
        return;
    };
    let ar = Running::start(Config {
        store: format!("{}/0", redis.url()).parse::<StoreSpec>().unwrap(),
        binding_ttl: Duration::from_secs(1),
        ..config()
    })
    .await;
    let (a, b) = (key(), key());
    ar.client(&a).bind_stcpr(40_000, vec![]).await.unwrap();
    let r = ar
        .client(&b)
        .resolve(Transport::Stcpr, &a.public_key())
        .await
        .unwrap();
    assert_eq!(r.remote_addr.port(), 40_000);
    assert_eq!(
        ar.client(&b).transports().await.unwrap().stcpr,
        vec![a.public_key()]
    );
    // A real short TTL: Redis expires the key by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, c) = refusal(
        ar.client(&b)
            .resolve(Transport::Stcpr, &a.public_key())
            .await
            .unwrap_err(),
    );
    assert_eq!((s, c.as_str()), (StatusCode::NOT_FOUND, "no_binding"));
    assert!(ar.client(&b).transports().await.unwrap().stcpr.is_empty());
    assert!(
        ar.bindings
            .get(Transport::Stcpr, &a.public_key())
            .await
            .unwrap()
            .is_none()
    );
    ar.stop().await;
}

async fn dual(allow_loopback: bool) -> (TestNetwork, Running, PublicKey) {
    let net = TestNetwork::start(1).await;
    let ar_key = SecretKey::generate().unwrap();
    let ar_pk = ar_key.public_key();
    let ar = Running::start_with(
        Config {
            mode: Mode::Dual,
            allow_loopback,
            ..config()
        },
        Options {
            key: Some(ar_key),
            discovery: Some(Arc::new(net.discovery().clone())),
            client: test_client_config(),
            ..Options::default()
        },
    )
    .await;
    // Dial the DMSG side only once it is published and held by its server: an earlier dial
    // fails on the path, and the caller's negative cache would keep refusing it for seconds.
    let client = ar.dmsg.as_ref().and_then(std::sync::Weak::upgrade).unwrap();
    net.wait_published(&client).await;
    (net, ar, ar_pk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_answers_the_same_over_http_and_dmsg() {
    let (net, ar, ar_pk) = dual(false).await;
    let (a, b) = (key(), key());
    // A public binding (this resolver refuses loopback ones), written directly.
    ar.bindings
        .put(&skytower_services::address_resolver::Binding {
            pk: a.public_key(),
            transport: Transport::Stcpr,
            remote: "203.0.113.7:40000".parse().unwrap(),
            port: 40_000,
            addresses: vec!["192.168.1.2".parse().unwrap()],
            session: None,
        })
        .await
        .unwrap();

    let dmsg = Arc::new(net.client().await);
    let over_dmsg = AddressResolverClient::with_connector(
        &format!("dmsg://{ar_pk}:80"),
        Connector::with_dmsg(dmsg.clone()),
        b.clone(),
    )
    .unwrap();
    let over_http = ar.client(&b);
    // The resolver's DMSG side may take a moment to publish its entry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let list = loop {
        match over_dmsg.transports().await {
            Ok(l) => break l,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "DMSG side: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(list, over_http.transports().await.unwrap());
    let via_dmsg = over_dmsg
        .resolve(Transport::Stcpr, &a.public_key())
        .await
        .unwrap();
    let via_http = over_http
        .resolve(Transport::Stcpr, &a.public_key())
        .await
        .unwrap();
    assert_eq!(via_dmsg, via_http);
    assert_eq!(via_http.remote_addr, "203.0.113.7:40000".parse().unwrap());
    assert!(!via_http.is_local && via_http.addresses.is_empty());
    // Errors are the same too.
    let missing = key().public_key();
    assert_eq!(
        refusal(
            over_dmsg
                .resolve(Transport::Stcpr, &missing)
                .await
                .unwrap_err()
        ),
        refusal(
            over_http
                .resolve(Transport::Stcpr, &missing)
                .await
                .unwrap_err()
        ),
    );
    // Binding over DMSG: no observable IP, refused with the reason.
    let err = over_dmsg
        .bind_stcpr_with(&BindRequest {
            port: 1,
            addresses: vec![],
            public_ip: Some("203.0.113.5".parse().unwrap()),
        })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert_eq!(
        refusal(err),
        (StatusCode::BAD_REQUEST, "no_observed_ip".into())
    );
    assert!(message.contains("bind STCPR over HTTP"), "{message}");
    ar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_dmsg_a_declared_ip_is_accepted_on_a_trusted_network() {
    let (net, ar, ar_pk) = dual(true).await;
    let a = key();
    let dmsg = Arc::new(net.client().await);
    let over_dmsg = AddressResolverClient::with_connector(
        &format!("dmsg://{ar_pk}:80"),
        Connector::with_dmsg(dmsg),
        a.clone(),
    )
    .unwrap();
    let req = BindRequest {
        port: 7000,
        addresses: vec![],
        public_ip: Some("203.0.113.5".parse().unwrap()),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let bound = loop {
        match over_dmsg.bind_stcpr_with(&req).await {
            Ok(b) => break b,
            Err(e) => {
                assert!(e.status().is_none(), "{e}");
                assert!(tokio::time::Instant::now() < deadline, "DMSG side: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(bound.remote_addr, "203.0.113.5:7000".parse().unwrap());
    // Without the declared IP it is refused.
    let err = over_dmsg.bind_stcpr(7000, vec![]).await.unwrap_err();
    assert_eq!(
        refusal(err),
        (StatusCode::BAD_REQUEST, "no_observed_ip".into())
    );
    ar.stop().await;
}
