//! `skytower dmsg-discovery`: the shared service-mode flags, and the start-up refusals.

mod common;

use common::{refused, service_help};

#[test]
fn dmsg_discovery_help_has_the_shared_service_flags() {
    let help = service_help("dmsg-discovery", &["--store", "--allow-loopback"]);
    assert!(help.contains("127.0.0.1:9090"), "{help}");
}

#[test]
fn dmsg_discovery_refuses_dmsg_mode_and_keyless_dual_mode() {
    let err = refused(&["dmsg-discovery", "--addr", "127.0.0.1:0", "--mode", "dmsg"]);
    assert!(err.contains("bootstrap dependency"), "{err}");
    assert!(err.contains("reachable over plain HTTP"), "{err}");

    let err = refused(&["dmsg-discovery", "--addr", "127.0.0.1:0", "--mode", "dual"]);
    assert!(err.contains("--mode dual needs a DMSG key"), "{err}");
}
