//! `skytower uptime-tracker`: the flags, the start-up refusals, and a run answering `/health`
//! until SIGTERM.

mod common;

use common::{Running, free_port, refused, service_help};

#[test]
fn help_has_the_shared_and_own_flags() {
    let help = service_help(
        "uptime-tracker",
        &[
            "--store",
            "--retention",
            "--online-threshold",
            "--heartbeat-interval",
            "--rate-limit",
        ],
    );
    assert!(help.contains("127.0.0.1:9096"), "{help}");
}

#[test]
fn bad_settings_are_refused_before_starting() {
    let err = refused(&["uptime-tracker", "--addr", "127.0.0.1:0", "--mode", "dual"]);
    assert!(err.contains("--mode dual needs a DMSG key"), "{err}");

    let err = refused(&["uptime-tracker", "--heartbeat-interval", "10m"]);
    assert!(
        err.contains("--heartbeat-interval must be shorter than --online-threshold"),
        "{err}"
    );
}

#[test]
fn runs_until_sigterm() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let service = Running::spawn(&["uptime-tracker", "--addr", &addr, "--grace", "1s"]);
    let answer = service.wait_for_get(port, "/health", "the tracker");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""service":"uptime-tracker""#), "{answer}");
    let status = service.sigterm();
    assert!(status.success(), "{status}");
}
