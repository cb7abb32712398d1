//! Records the git commit the `skytower` binary was built from (for `--version` and `/health`).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=SKYTOWER_GIT_COMMIT");
    let commit = std::env::var("SKYTOWER_GIT_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    });
    println!(
        "cargo:rustc-env=SKYTOWER_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
