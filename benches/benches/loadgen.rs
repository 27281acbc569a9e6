//! The load generator's closed-loop maximum rate against `wrk` and `oha`, in one run:
//! the same minimal hyper server on 127.0.0.1 (this process, 2 workers), the same 32
//! connections, each generator a process of its own for `SECONDS`, in turn, three
//! rounds. Our generator is this binary run again with `--generator` (the library's
//! `LoadTester`, closed model, 32 users). Each generator's CPU time comes from
//! `getrusage(RUSAGE_CHILDREN)` around its run.
//!
//! Run: `cargo bench -p resilience-benches --bench loadgen` (needs `wrk`, Debian's
//! package, and `oha`: `cargo install oha`; a missing one is skipped and said so).

use std::process::Command;
use std::time::Duration;

#[path = "support/hello.rs"]
mod hello;

const SECONDS: u64 = 5;
const CONNECTIONS: usize = 32;

/// CPU seconds (user + system) of the children waited for so far.
fn children_cpu() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the struct it is given; RUSAGE_CHILDREN is valid.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// Runs `command`; its stdout and the CPU seconds it used, or `None` if it is missing.
fn measured(command: &mut Command) -> Option<(String, f64)> {
    let before = children_cpu();
    let output = command.output().ok()?;
    let cpu = children_cpu() - before;
    if !output.status.success() && output.stdout.is_empty() {
        eprintln!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    Some((String::from_utf8_lossy(&output.stdout).into_owned(), cpu))
}

fn wrk(url: &str) -> Option<(f64, f64)> {
    let (out, cpu) =
        measured(Command::new("wrk").args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{SECONDS}s"), url]))?;
    let total: f64 = out.lines().find_map(|l| {
        l.trim().split(" requests in").next().filter(|_| l.contains(" requests in"))?.trim().parse().ok()
    })?;
    Some((total, cpu))
}

fn oha(url: &str) -> Option<(f64, f64)> {
    let (out, cpu) = measured(Command::new("oha").args([
        "--no-tui",
        "--output-format",
        "json",
        "-c",
        &CONNECTIONS.to_string(),
        "-z",
        &format!("{SECONDS}s"),
        url,
    ]))?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    let total = json["summary"]["requestsPerSec"].as_f64()? * json["summary"]["total"].as_f64()?;
    Some((total, cpu))
}

fn ours(url: &str) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let (out, cpu) = measured(Command::new(exe).args(["--generator", url]))?;
    Some((out.trim().parse().ok()?, cpu))
}

/// The child: runs the closed model for `SECONDS` and prints the requests it made.
fn generator(url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let scenario = resilience::LoadTestScenario {
        max_users: CONNECTIONS,
        duration: Duration::from_secs(SECONDS),
        target_url: url.to_owned(),
        ..Default::default()
    };
    let results = runtime.block_on(resilience::LoadTester::new(scenario).run()).expect("the run");
    println!("{}", results.total_requests);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--generator") {
        return generator(&args[i + 1]);
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let addr = runtime.block_on(hello::start());
    let url = format!("http://{addr}/");
    type Generator = fn(&str) -> Option<(f64, f64)>;
    let generators: [(&str, Generator); 3] = [("resilience LoadTester", ours), ("wrk", wrk), ("oha", oha)];
    let mut best: Vec<Option<(f64, f64)>> = vec![None; generators.len()];
    for _round in 0..3 {
        for (i, (name, run)) in generators.iter().enumerate() {
            match run(&url) {
                Some((total, cpu)) => {
                    eprintln!(
                        "{name}: {:.0} requests/s, {:.2} CPU s per 100k requests",
                        total / SECONDS as f64,
                        cpu / total * 1e5
                    );
                    if best[i].is_none_or(|(t, _)| total > t) {
                        best[i] = Some((total, cpu));
                    }
                }
                None => eprintln!("{name}: not run (not installed?)"),
            }
        }
    }
    println!("| generator | requests/s (best of 3) | CPU s per 100k requests |");
    println!("|---|---|---|");
    for ((name, _), b) in generators.iter().zip(&best) {
        match b {
            Some((total, cpu)) => println!("| {name} | {:.0} | {:.2} |", total / SECONDS as f64, cpu / total * 1e5),
            None => println!("| {name} | not run | |"),
        }
    }
    let rate = |i: usize| best[i].map(|(t, _)| t);
    if let (Some(o), Some(w)) = (rate(0), rate(1)) {
        println!("\nLoadTester / wrk: {:.3} (target >= 0.9)", o / w);
    }
    if let (Some(o), Some(h)) = (rate(0), rate(2)) {
        println!("LoadTester / oha: {:.3} (target >= 1.0)", o / h);
    }
}
