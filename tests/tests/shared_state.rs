//! Shared breaker and rate-limit state across OS processes, against a real `redis-server`
//! on 127.0.0.1 (`resilience::shared_state`).
//!
//! A binary of its own, without the test harness: the parent runs the scenarios and
//! starts this same binary again as workers (environment `SHARED_WORKER`), each a
//! service instance with its own registry and shared-state task, driven by commands on
//! its standard input. A first argument that is not a flag runs only the scenarios
//! whose names contain it.

#[path = "servers.rs"]
mod servers;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use resilience::{CircuitState, ResilienceError, Settings};

fn main() {
    if let Ok(settings) = std::env::var("SHARED_WORKER") {
        worker(&settings);
        return;
    }
    // Nothing here may hang CI: the whole binary has ten minutes.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(600));
        eprintln!("shared_state tests: still running after 10 minutes; aborting");
        std::process::exit(101);
    });
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: [(&str, fn()); 5] = [
        ("failures_spread_across_four_processes_open_the_shared_breaker_for_all", failures_spread_open_all),
        ("one_failing_process_alone_does_not_open_it", one_failing_process_alone_does_not),
        ("redis_down_every_process_serves_locally_and_redis_back_heals", redis_down_and_back),
        ("four_processes_share_one_rate_limit_within_two_percent", four_processes_share_a_limit),
        ("a_restarted_process_comes_back_with_the_breaker_open", restarted_process_resumes_open),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        match std::panic::catch_unwind(scenario) {
            Ok(()) => {
                passed += 1;
                println!("test shared_state::{name} ... ok ({:.1}s)", started.elapsed().as_secs_f64());
            }
            Err(_) => {
                failed += 1;
                println!("test shared_state::{name} ... FAILED");
            }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed");
    if failed > 0 {
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------------------------------
// The worker: one service instance.

#[derive(Debug)]
enum WorkError {
    Down,
    /// Rejected by a policy (the breaker, the limit) without running.
    Rejected,
}

impl From<ResilienceError> for WorkError {
    fn from(_: ResilienceError) -> Self {
        Self::Rejected
    }
}

fn worker(settings: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let settings = Settings::from_yaml_str(settings).expect("worker settings");
        resilience::init(&settings).expect("init");
        let config =
            resilience::shared_state::SharedStateConfig::from_settings(&settings).expect("a shared_state section");
        resilience::shared_state::install(config).await.expect("install");
        let dependency = std::env::var("SHARED_DEPENDENCY").expect("SHARED_DEPENDENCY");
        let mut lines = BufReader::new(std::io::stdin()).lines();
        println!("ready");
        while let Some(Ok(line)) = tokio::task::block_in_place(|| lines.next()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let answer = match words.as_slice() {
                ["state"] => state(&dependency),
                ["state", other] => state(other),
                ["fail", n] => calls(&dependency, n.parse().expect("a count"), true).await,
                ["succeed", n] => calls(&dependency, n.parse().expect("a count"), false).await,
                ["burst", other, n] => burst(other, n.parse().expect("a count")),
                ["load", seconds, start] => load(&dependency, seconds.parse().unwrap(), start.parse().unwrap()).await,
                ["quit"] => return,
                _ => format!("unknown command `{line}`"),
            };
            println!("{answer}");
        }
    });
}

fn state(dependency: &str) -> String {
    let d = resilience::registry().get(dependency).expect("the dependency is registered");
    let state = d.pipeline().circuit_breaker().map_or(CircuitState::Disabled, |b| b.state());
    // As `health()` (and so `/health` and `/resilience`) reports it.
    let shared = match resilience::health().shared_state {
        Some(resilience::shared_state::SharedStateHealth::Healthy) => "healthy",
        Some(resilience::shared_state::SharedStateHealth::Degraded) => "degraded",
        None => "none",
    };
    format!("{state} {shared}")
}

/// `n` calls one after the other, each taking a millisecond: answers how many ran, how
/// many were rejected, and the longest in microseconds.
async fn calls(dependency: &str, n: u32, failing: bool) -> String {
    let d = resilience::registry().get(dependency).expect("the dependency is registered");
    let (mut ran, mut rejected, mut longest) = (0, 0, Duration::ZERO);
    for _ in 0..n {
        let started = Instant::now();
        let result = d
            .pipeline()
            .call(|| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if failing {
                    Err(WorkError::Down)
                } else {
                    Ok(())
                }
            })
            .await;
        longest = longest.max(started.elapsed());
        match result {
            Err(WorkError::Rejected) => rejected += 1,
            _ => ran += 1,
        }
    }
    format!("{ran} {rejected} {}", longest.as_micros())
}

/// `n` rate-limit checks of `dependency` at once: answers how many were admitted.
fn burst(dependency: &str, n: u32) -> String {
    let d = resilience::registry().get(dependency).expect("the dependency is registered");
    let limiter = d.pipeline().rate_limiter().cloned().expect("a rate limit");
    (0..n).filter(|_| limiter.check().is_ok()).count().to_string()
}

/// From `start` (Unix ms) for `seconds`, four tasks each call as fast as every 3 ms:
/// answers the calls admitted.
async fn load(dependency: &str, seconds: u64, start: u64) -> String {
    let now = unix_ms();
    tokio::time::sleep(Duration::from_millis(start.saturating_sub(now))).await;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let dependency = dependency.to_owned();
        tasks.push(tokio::spawn(async move {
            let d = resilience::registry().get(&dependency).expect("the dependency is registered");
            let mut admitted = 0u64;
            while Instant::now() < end {
                let result = d.pipeline().call(|| async { Ok::<(), WorkError>(()) }).await;
                if result.is_ok() {
                    admitted += 1;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("a load task");
    }
    admitted.to_string()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------
// The parent's side.

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(settings: &str, dependency: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .env("SHARED_WORKER", settings)
            .env("SHARED_DEPENDENCY", dependency)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a worker process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut worker = Self { child, stdin, stdout };
        assert_eq!(worker.read(), "ready");
        worker
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("a worker's answer");
        assert!(!line.is_empty(), "the worker exited");
        line.trim().to_owned()
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("a worker's stdin");
        self.read()
    }

    /// The state word of `state`'s answer, and the shared-state health.
    fn state(&mut self) -> (String, String) {
        let answer = self.ask("state");
        let mut words = answer.split_whitespace().map(str::to_owned);
        (words.next().unwrap_or_default(), words.next().unwrap_or_default())
    }

    /// `(ran, rejected, longest µs)` of `fail n` / `succeed n`.
    fn calls(&mut self, command: &str) -> (u64, u64, u64) {
        let answer = self.ask(command);
        let n: Vec<u64> = answer.split_whitespace().map(|w| w.parse().expect("numbers")).collect();
        (n[0], n[1], n[2])
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings of one instance: `dependency` with a shared breaker (and `extra` keys), the
/// shared state on `redis_url`.
fn settings(redis_url: &str, dependency: &str, breaker: &str, extra: &str, shared: &str) -> String {
    format!(
        "resilience:\n  shared_state: {{ redis_url: \"{redis_url}\", sync_interval: 100ms, {shared} }}\n\
         external_dependencies:\n  {dependency}: {{ type: external_api, max_concurrent: 100, timeout: 500ms, \
         retry: {{ enabled: false }}, circuit_breaker: {{ {breaker} }}{extra} }}\n"
    )
}

/// The scenarios' common instance: `dependency` with a shared breaker that eight
/// failures in the fleet's window open, from two instances at least.
fn fleet_settings(redis: &servers::Server, dependency: &str) -> String {
    let breaker = "shared: true, failure_threshold: 8, recovery_timeout: 60s";
    settings(&redis_url(redis), dependency, breaker, "", "min_instances_to_open: 2")
}

fn redis_url(server: &servers::Server) -> String {
    format!("redis://127.0.0.1:{}/0", server.port)
}

/// Polls every worker's state until `check` holds for all, or fails after `limit`.
fn all_eventually(workers: &mut [Worker], limit: Duration, what: &str, check: impl Fn(&(String, String)) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let states: Vec<(String, String)> = workers.iter_mut().map(Worker::state).collect();
        if states.iter().all(&check) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: after {limit:?} the workers say {states:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failures_spread_open_all() {
    let redis = servers::Server::standalone();
    let yaml = fleet_settings(&redis, "spread");
    // A second shared breaker in every process, exchanged in the same round trips.
    let yaml = format!(
        "{yaml}  spread_other: {{ type: external_api, timeout: 500ms, retry: {{ enabled: false }}, \
         circuit_breaker: {{ shared: true, failure_threshold: 8 }} }}\n"
    );
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::start(&yaml, "spread")).collect();
    for w in &mut workers {
        assert_eq!(w.state(), ("closed".to_owned(), "healthy".to_owned()));
    }
    // Three failures each: twelve in the fleet's window, none enough alone.
    for w in &mut workers {
        let (ran, rejected, _) = w.calls("fail 3");
        assert_eq!((ran, rejected), (3, 0), "the breaker was open before the fleet had eight failures");
    }
    let opened = Instant::now();
    all_eventually(&mut workers, Duration::from_secs(3), "the shared breaker opens everywhere", |s| s.0 == "open");
    println!("    every process saw the shared breaker open within {:?} of the last failure", opened.elapsed());
    // Open means rejected without running, in every process; the other breaker, its
    // verdicts matched to it, stays closed.
    for w in &mut workers {
        assert_eq!(w.calls("succeed 2").1, 2, "an open shared breaker lets calls through");
        assert_eq!(w.ask("state spread_other"), "closed healthy");
    }
}

fn one_failing_process_alone_does_not() {
    let redis = servers::Server::standalone();
    let yaml = fleet_settings(&redis, "lonely");
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::start(&yaml, "lonely")).collect();
    let (ran, rejected, _) = workers[0].calls("fail 30");
    assert_eq!((ran, rejected), (30, 0), "one sick instance opened its shared breaker by itself");
    for w in &mut workers[1..] {
        assert_eq!(w.calls("succeed 5").1, 0);
    }
    // Ten exchanges later, nobody has opened: one instance alone reported failures.
    std::thread::sleep(Duration::from_millis(1000));
    for w in &mut workers {
        assert_eq!(w.state(), ("closed".to_owned(), "healthy".to_owned()));
    }
    // A second failing instance is enough.
    workers[1].calls("fail 2");
    all_eventually(&mut workers, Duration::from_secs(3), "a second failing instance opens it", |s| s.0 == "open");
}

fn redis_down_and_back() {
    let redis = servers::Server::standalone();
    // With a shared limit of 40/s (burst 8) beside the breaker.
    let yaml = format!(
        "{}  outage_limit: {{ type: external_api, timeout: 500ms, retry: {{ enabled: false }}, \
         circuit_breaker: {{ enabled: false }}, rate_limit: {{ rate: 40, burst: 8, shared: true }} }}\n",
        fleet_settings(&redis, "outage")
    );
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::start(&yaml, "outage")).collect();
    for w in &mut workers {
        assert_eq!(w.state().1, "healthy");
    }
    // A few exchanges, so that every process has seen the other three.
    std::thread::sleep(Duration::from_millis(400));
    redis.stop();
    // Every process keeps serving, no call slower than its 500 ms timeout.
    for w in &mut workers {
        let (ran, rejected, longest) = w.calls("succeed 50");
        assert_eq!((ran, rejected), (50, 0));
        assert!(longest < 500_000, "a call took {longest} µs with Redis down");
    }
    all_eventually(&mut workers, Duration::from_secs(5), "every process reports degraded", |s| s.1 == "degraded");
    // Each of the four enforces its local share of the shared limit: 10/s, a burst of 2.
    for w in &mut workers {
        let admitted: u32 = w.ask("burst outage_limit 20").parse().expect("a count");
        assert!((1..=3).contains(&admitted), "a process admitted {admitted} of 20 at once with Redis down");
    }
    // Degraded, each breaker is local again: one process's failures open its own only.
    let (ran, _, longest) = workers[0].calls("fail 8");
    assert_eq!(ran, 8);
    assert!(longest < 500_000);
    assert_eq!(workers[0].state().0, "open", "the local breaker did not take over");
    for w in &mut workers[1..] {
        assert_eq!(w.state().0, "closed");
    }
    redis.start();
    all_eventually(&mut workers, Duration::from_secs(5), "every process rejoins", |s| s.1 == "healthy");
    // Healed: the fleet never opened, so the first process follows it back to closed...
    all_eventually(&mut workers, Duration::from_secs(3), "the fleet's state replaces local state", |s| s.0 == "closed");
    // ...and failures spread across the fleet open it for all again.
    for w in &mut workers {
        w.calls("fail 3");
    }
    all_eventually(&mut workers, Duration::from_secs(3), "the healed shared breaker opens", |s| s.0 == "open");
}

fn four_processes_share_a_limit() {
    let redis = servers::Server::standalone();
    const RATE: u64 = 400;
    const SECONDS: u64 = 30;
    let yaml = settings(
        &redis_url(&redis),
        "limited",
        "enabled: false",
        &format!(", rate_limit: {{ rate: {RATE}, burst: 20, shared: true }}"),
        "min_instances_to_open: 2",
    );
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::start(&yaml, "limited")).collect();
    let start = unix_ms() + 1000;
    for w in &mut workers {
        writeln!(w.stdin, "load {SECONDS} {start}").expect("stdin");
    }
    let counts: Vec<u64> = workers.iter_mut().map(|w| w.read().parse().expect("a count")).collect();
    let admitted: u64 = counts.iter().sum();
    let expected = RATE * SECONDS;
    let error = (admitted as f64 - expected as f64) / expected as f64;
    println!(
        "    4 processes, one shared limit of {RATE}/s for {SECONDS} s: admitted {admitted} ({counts:?}), {:+.2} % of {expected}",
        error * 100.0
    );
    assert!(error.abs() <= 0.02, "admitted {admitted}, not within 2 % of {expected}");
}

fn restarted_process_resumes_open() {
    // From Redis: the fleet's open breaker.
    let redis = servers::Server::standalone();
    let yaml = settings(
        &redis_url(&redis),
        "restart_redis",
        "shared: true, failure_threshold: 3, recovery_timeout: 60s",
        "",
        "min_instances_to_open: 1",
    );
    let mut first = Worker::start(&yaml, "restart_redis");
    first.calls("fail 3");
    let mut workers = [first];
    all_eventually(&mut workers, Duration::from_secs(3), "the shared breaker opens", |s| s.0 == "open");
    let [first] = workers;
    first.quit();
    let mut again = Worker::start(&yaml, "restart_redis");
    assert_eq!(again.state().0, "open", "the restarted process did not resume the fleet's open breaker");
    assert_eq!(again.calls("succeed 1").1, 1, "its first call was not rejected");
    again.quit();

    // From the state file, without Redis: a breaker of the registry.
    let dir = servers::scratch_dir();
    let file = dir.join("breakers.json");
    let yaml = format!(
        "resilience:\n  shared_state: {{ redis_url: \"\", state_file: \"{}\", sync_interval: 50ms }}\n\
         external_dependencies:\n  restart_file: {{ type: external_api, timeout: 500ms, retry: {{ enabled: false }}, \
         circuit_breaker: {{ failure_threshold: 3, recovery_timeout: 60s }} }}\n",
        file.display()
    );
    let mut first = Worker::start(&yaml, "restart_file");
    first.calls("fail 3");
    assert_eq!(first.state().0, "open");
    std::thread::sleep(Duration::from_millis(300));
    first.quit();
    let text = std::fs::read_to_string(&file).expect("the state file was written");
    assert!(text.contains("restart_file"), "{text}");
    let mut again = Worker::start(&yaml, "restart_file");
    assert_eq!(again.state().0, "open", "the restarted process did not resume the open breaker from its file");
    again.quit();
    let _ = std::fs::remove_dir_all(dir);
}
