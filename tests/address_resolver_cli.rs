//! `skytower address-resolver`: the flags, the start-up refusals, and a run that answers
//! `/health` (with its `udp` and `store` checks) and SUDPH hellos, then stops on SIGTERM.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Running, http_get, refused, service_help, wait_for_line};
use skytower::services::address_resolver::wire::Datagram;

#[test]
fn address_resolver_help_has_the_shared_and_own_flags() {
    let help = service_help(
        "address-resolver",
        &[
            "--udp-addr",
            "--store",
            "--binding-ttl",
            "--allow-loopback",
            "--handshake-concurrency",
            "--handshake-timeout",
        ],
    );
    assert!(help.contains("127.0.0.1:9093"), "{help}");
}

#[test]
fn address_resolver_refuses_bad_flags_with_the_reason() {
    let err = refused(&[
        "address-resolver",
        "--addr",
        "127.0.0.1:0",
        "--binding-ttl",
        "0s",
    ]);
    assert!(err.contains("--binding-ttl must be positive"), "{err}");

    let err = refused(&[
        "address-resolver",
        "--addr",
        "127.0.0.1:0",
        "--mode",
        "dmsg",
    ]);
    assert!(err.contains("--mode dmsg needs a DMSG key"), "{err}");
}

/// A port free for both TCP and UDP.
fn free_tcp_and_udp_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn address_resolver_serves_http_and_udp_on_one_port_and_stops_on_sigterm() {
    let port = free_tcp_and_udp_port();
    let addr = format!("127.0.0.1:{port}");
    let (service, mut stderr) =
        Running::spawn_logging(&["address-resolver", "--addr", &addr, "--grace", "1s"]);
    wait_for_line(&mut stderr, "address-resolver listening");

    let response = http_get(port, "/health").expect("GET /health");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    for part in [
        r#""service":"address-resolver""#,
        r#""udp""#,
        r#""store""#,
        r#""peak_in_flight""#,
    ] {
        assert!(response.contains(part), "{part} missing from {response}");
    }

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&Datagram::Hello { pk: [1; 32] }.encode(), &addr)
        .unwrap();
    let mut buf = [0u8; 64];
    let n = udp.recv(&mut buf).unwrap();
    assert!(matches!(
        Datagram::decode(&buf[..n]),
        Ok(Datagram::Challenge { .. })
    ));

    let status = service.sigterm();
    assert!(status.success(), "{status}");
}
