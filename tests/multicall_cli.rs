//! The `skytower` binary invoked under a service's name (a link, as deployments that keep the Go
//! binary names do) runs that service; under any other name it is `skytower`.

mod common;

use std::process::Command;

use common::{BIN, text};

/// Runs the binary through a link named `name` with `args`.
fn via_link(name: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join(name);
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    Command::new(&link)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn a_link_named_after_a_service_runs_that_service() {
    for (name, own_flag) in [
        ("route-finder", "--refresh"),
        ("transport-discovery", "--entry-ttl"),
        ("dmsg-server", "--max-sessions"),
        ("uptime-tracker", "--mode"),
    ] {
        let out = via_link(name, &["--help"]);
        let help = text(&out.stdout);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(
            help.contains(&format!("Usage: skytower {name}")),
            "{name}: {help}"
        );
        assert!(help.contains(own_flag), "{name} lacks {own_flag}: {help}");
    }
}

#[test]
fn a_linked_service_refuses_bad_flags_like_the_subcommand() {
    let out = via_link("service-discovery", &["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
    assert!(err.contains("skytower service-discovery"), "{err}");
}

#[test]
fn any_other_name_is_plain_skytower() {
    let out = via_link("my-tool", &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    // clap names the program after how it was invoked.
    assert!(help.contains("Usage: my-tool <COMMAND>"), "{help}");
    assert!(help.contains("route-finder"), "the subcommands: {help}");
    // A service name as the first argument is still a subcommand, not doubled.
    let out = via_link("route-finder", &["route-finder"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
