//! What the `skytower` binary's integration tests share: running the binary to completion,
//! its `--help` and refusals, plain HTTP GETs, and a service process that is stopped with
//! SIGTERM (or killed if the test fails first). Every wait is bounded.
//!
//! Each test file uses a part of it (`mod common;`).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_skytower");
/// Bound on any one command run to completion.
pub const COMMAND: Duration = Duration::from_secs(30);
/// Bound on a service starting to answer, and on its exit after SIGTERM.
pub const START_STOP: Duration = Duration::from_secs(20);

/// Starts `skytower args…` with stdin closed, stdout and stderr piped, and `RUST_LOG` unset
/// (the default log filter).
pub fn spawn_piped<S: AsRef<OsStr>>(args: &[S]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `skytower args…` to completion ([`spawn_piped`]), killed after [`COMMAND`].
pub fn skytower(args: &[&str]) -> Output {
    let mut child = spawn_piped(args);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait(&mut child, COMMAND).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("skytower {args:?} did not finish within {COMMAND:?}");
    });
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `skytower <command> --help`: asserts it succeeds and names every flag of `flags` (as a whole
/// flag: `--store` is not found in `--store-x`); returns the help text.
pub fn help_with_flags(command: &str, flags: &[&str]) -> String {
    let out = skytower(&[command, "--help"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for flag in flags {
        let whole = help.match_indices(flag).any(|(at, _)| {
            help[at + flag.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'))
        });
        assert!(whole, "{flag} missing from:\n{help}");
    }
    help
}

/// The shared service-mode flags every service command has (`svcmode::SvcArgs`).
pub const SVC_FLAGS: [&str; 7] = [
    "--addr",
    "--key",
    "--discovery",
    "--dmsg-port",
    "--mode",
    "--grace",
    "--metrics",
];

/// [`help_with_flags`] for a service command: the [`SVC_FLAGS`] and its `own` flags.
pub fn service_help(command: &str, own: &[&str]) -> String {
    help_with_flags(command, &[&SVC_FLAGS[..], own].concat())
}

/// Runs `skytower args…`, asserts it fails, and returns its stderr.
pub fn refused(args: &[&str]) -> String {
    let out = skytower(args);
    assert!(!out.status.success(), "skytower {args:?} succeeded");
    text(&out.stderr)
}

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// `GET path` on `127.0.0.1:port` over a fresh connection (`connection: close`, 5 s read
/// timeout): the whole response, or `None` when it cannot be had.
pub fn http_get(port: u16, path: &str) -> Option<String> {
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

/// A `skytower` service process; killed when dropped (a failed test leaves nothing behind).
pub struct Running {
    child: Child,
}

impl Running {
    /// Starts `skytower args…` with its stdin, stdout and stderr closed.
    pub fn spawn(args: &[&str]) -> Running {
        Self::spawn_with_stderr(args, Stdio::null())
    }

    /// Starts `skytower args…` with its stderr piped; returns the process and its stderr.
    pub fn spawn_logging(args: &[&str]) -> (Running, BufReader<ChildStderr>) {
        let mut running = Self::spawn_with_stderr(args, Stdio::piped());
        let stderr = BufReader::new(running.child.stderr.take().unwrap());
        (running, stderr)
    }

    fn spawn_with_stderr(args: &[&str], stderr: Stdio) -> Running {
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Running { child }
    }

    /// Polls `GET path` on `127.0.0.1:port` until it answers (at most [`START_STOP`]); returns
    /// the response. `what` names the service in the failure message.
    pub fn wait_for_get(&self, port: u16, path: &str, what: &str) -> String {
        let deadline = Instant::now() + START_STOP;
        loop {
            if let Some(response) = http_get(port, path) {
                return response;
            }
            assert!(Instant::now() < deadline, "{what} did not answer {path}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit (at most [`START_STOP`], else the process is killed
    /// and the test fails).
    pub fn sigterm(mut self) -> ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        wait(&mut self.child, START_STOP).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("no exit within {START_STOP:?} after SIGTERM");
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // No-op once the process has been waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `stderr` line by line until one contains `needle` (at most [`START_STOP`]); fails if
/// the process closes its stderr (exits) first.
pub fn wait_for_line(stderr: &mut BufReader<ChildStderr>, needle: &str) {
    let deadline = Instant::now() + START_STOP;
    let mut line = String::new();
    while !line.contains(needle) {
        line.clear();
        assert!(Instant::now() < deadline, "no line with {needle:?}");
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early");
    }
}
