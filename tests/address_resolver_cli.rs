//! `skytower address-resolver`: the flags, the start-up refusals, and a run that answers
//! `/health` (with its `udp` and `store` checks) and SUDPH hellos, then stops on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skytower::services::address_resolver::wire::Datagram;

const BIN: &str = env!("CARGO_BIN_EXE_skytower");

fn skytower(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn address_resolver_help_has_the_shared_and_own_flags() {
    let out = skytower(&["address-resolver", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--addr",
        "--key",
        "--discovery",
        "--mode",
        "--grace",
        "--metrics",
        "--udp-addr",
        "--store",
        "--binding-ttl",
        "--allow-loopback",
        "--handshake-concurrency",
        "--handshake-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("127.0.0.1:9093"), "{help}");
}

#[test]
fn address_resolver_refuses_bad_flags_with_the_reason() {
    let out = skytower(&[
        "address-resolver",
        "--addr",
        "127.0.0.1:0",
        "--binding-ttl",
        "0s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--binding-ttl must be positive"), "{err}");

    let out = skytower(&[
        "address-resolver",
        "--addr",
        "127.0.0.1:0",
        "--mode",
        "dmsg",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--mode dmsg needs a DMSG key"), "{err}");
}

fn free_port() -> u16 {
    // A port free for both TCP and UDP.
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
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["address-resolver", "--addr", &addr, "--grace", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while !line.contains("address-resolver listening") {
        line.clear();
        assert!(Instant::now() < deadline, "did not start");
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early");
    }

    let mut tcp = TcpStream::connect(&addr).unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
