//! `skytower service-discovery`: the flags, the start-up refusals, and a real run answering
//! `/health` and a query, then exiting 0 on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_skytower");

fn skytower(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn help_has_the_shared_service_flags_and_its_own() {
    let out = skytower(&["service-discovery", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--addr",
        "--key",
        "--discovery",
        "--dmsg-port",
        "--mode",
        "--grace",
        "--metrics",
        "--store",
        "--ttl",
        "--max-per-key",
        "--max-list",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("127.0.0.1:9098"), "{help}");
    assert!(help.contains("[default: 5m]"), "{help}");
}

#[test]
fn bad_flags_are_refused_before_starting() {
    let out = skytower(&[
        "service-discovery",
        "--addr",
        "127.0.0.1:0",
        "--mode",
        "dmsg",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--mode dmsg needs a DMSG key"), "{err}");

    let out = skytower(&["service-discovery", "--addr", "127.0.0.1:0", "--ttl", "0s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ttl must be positive"), "{err}");
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn runs_answers_and_exits_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["service-discovery", "--addr", &addr, "--grace", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(r) = http_get(port, "/health") {
            break r;
        }
        assert!(Instant::now() < deadline, "service-discovery did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains(r#""service":"service-discovery""#),
        "{health}"
    );
    let list = http_get(port, "/api/services?type=vpn").unwrap();
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(list.ends_with("[]"), "{list}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("service-discovery did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
