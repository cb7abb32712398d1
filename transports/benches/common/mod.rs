//! Helpers shared by the transports benches (included with `#[path]`; not a bench target).

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of the whole process.
pub fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The `p` quantile (0–1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Whether `SKYTOWER_BENCH_QUICK` asks for a quick run.
pub fn quick() -> bool {
    std::env::var("SKYTOWER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A numeric setting from the environment, or `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints a Markdown table with columns as wide as their widest cell.
pub fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |c: &[String]| {
        let cells: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<width$}", width = w[i]))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(&head.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and the clients' runtime.

/// The settings every bench reads: `SKYTOWER_BENCH_QUICK`, `SKYTOWER_BENCH_CLIENT_THREADS`
/// (the clients' runtime workers, default 1) and `SKYTOWER_BENCH_ONLY` (one phase; all when
/// unset).
pub struct BenchEnv {
    pub quick: bool,
    pub client_threads: usize,
    only: Option<String>,
}

impl BenchEnv {
    pub fn from_env() -> BenchEnv {
        BenchEnv {
            quick: quick(),
            client_threads: env_num("SKYTOWER_BENCH_CLIENT_THREADS", 1usize).max(1),
            only: std::env::var("SKYTOWER_BENCH_ONLY").ok(),
        }
    }

    /// The number in environment variable `name`, or the default for this mode.
    pub fn num<T: std::str::FromStr>(&self, name: &str, quick: T, full: T) -> T {
        env_num(name, if self.quick { quick } else { full })
    }

    /// Whether `phase` runs.
    pub fn runs(&self, phase: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == phase)
    }

    /// "quick" or "full", for the header line.
    pub fn mode(&self) -> &'static str {
        if self.quick { "quick" } else { "full" }
    }
}

/// CPUs available to this process (0 if unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Runs `bench` as a task on a multi-thread runtime of `workers` threads (the clients' side).
pub fn run_on_clients<F>(workers: usize, bench: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move { tokio::spawn(bench).await.unwrap() });
}

// ---------------------------------------------------------------------------------------------
// Report.

/// One row of a report: a measurement and its value, optionally compared with a baseline, the
/// Go figure and a target (met or not).
pub struct Row {
    what: String,
    value: String,
    vs: String,
    go: String,
    target: String,
    met: String,
}

pub fn row(what: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
        vs: String::new(),
        go: String::new(),
        target: String::new(),
        met: String::new(),
    }
}

impl Row {
    pub fn vs(mut self, s: impl Into<String>) -> Row {
        self.vs = s.into();
        self
    }

    pub fn go(mut self, s: impl Into<String>) -> Row {
        self.go = s.into();
        self
    }

    pub fn target(mut self, s: impl Into<String>, met: bool) -> Row {
        self.target = s.into();
        self.met = if met { "yes" } else { "NO" }.into();
        self
    }
}

/// Prints `rows` as a table; `vs` heads the comparison column, which `None` leaves out.
pub fn print_report(rows: &[Row], vs: Option<&str>) {
    let mut head = vec!["measurement", "value"];
    head.extend(vs);
    head.extend(["Go", "target", "met"]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.what.clone(), r.value.clone()];
            if vs.is_some() {
                c.push(r.vs.clone());
            }
            c.extend([r.go.clone(), r.target.clone(), r.met.clone()]);
            c
        })
        .collect();
    print_table(&head, &cells);
}

/// The report after a blank line, then the bench's total time.
pub fn print_report_and_total(rows: &[Row], vs: Option<&str>, start: Instant) {
    println!();
    print_report(rows, vs);
    println!();
    println!("total bench time: {:.1} s", start.elapsed().as_secs_f64());
}
