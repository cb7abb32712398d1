//! `skytower dmsg-discovery`: the shared service-mode flags, and the start-up refusals.

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_skytower");

fn skytower(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn dmsg_discovery_help_has_the_shared_service_flags() {
    let out = skytower(&["dmsg-discovery", "--help"]);
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
        "--allow-loopback",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("127.0.0.1:9090"), "{help}");
}

#[test]
fn dmsg_discovery_refuses_dmsg_mode_and_keyless_dual_mode() {
    let out = skytower(&["dmsg-discovery", "--addr", "127.0.0.1:0", "--mode", "dmsg"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bootstrap dependency"), "{err}");
    assert!(err.contains("reachable over plain HTTP"), "{err}");

    let out = skytower(&["dmsg-discovery", "--addr", "127.0.0.1:0", "--mode", "dual"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--mode dual needs a DMSG key"), "{err}");
}
