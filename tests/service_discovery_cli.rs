//! `skytower service-discovery`: the flags, the start-up refusals, and a real run answering
//! `/health` and a query, then exiting 0 on SIGTERM.

mod common;

use common::{Running, free_port, http_get, refused, service_help};

#[test]
fn help_has_the_shared_service_flags_and_its_own() {
    let help = service_help(
        "service-discovery",
        &["--store", "--ttl", "--max-per-key", "--max-list"],
    );
    assert!(help.contains("127.0.0.1:9098"), "{help}");
    assert!(help.contains("[default: 5m]"), "{help}");
}

#[test]
fn bad_flags_are_refused_before_starting() {
    let err = refused(&[
        "service-discovery",
        "--addr",
        "127.0.0.1:0",
        "--mode",
        "dmsg",
    ]);
    assert!(err.contains("--mode dmsg needs a DMSG key"), "{err}");

    let err = refused(&["service-discovery", "--addr", "127.0.0.1:0", "--ttl", "0s"]);
    assert!(err.contains("--ttl must be positive"), "{err}");
}

#[test]
fn runs_answers_and_exits_cleanly_on_sigterm() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let service = Running::spawn(&["service-discovery", "--addr", &addr, "--grace", "1s"]);
    let health = service.wait_for_get(port, "/health", "service-discovery");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains(r#""service":"service-discovery""#),
        "{health}"
    );
    let list = http_get(port, "/api/services?type=vpn").unwrap();
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(list.ends_with("[]"), "{list}");

    let status = service.sigterm();
    assert!(status.success(), "{status:?}");
}
