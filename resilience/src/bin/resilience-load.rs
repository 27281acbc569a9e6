//! `resilience-load`: load-test an HTTP service from the command line.
//!
//! ```text
//! resilience-load --url http://127.0.0.1:8080 --scenario spike --users 200 --duration 30s \
//!     --path /api/users --report report.html
//! ```
//!
//! Exit status: 0 when every validation passed, 1 when one failed, 2 on bad arguments or
//! an unreachable target. With `--json` the results are the only thing on stdout;
//! progress always goes to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use resilience::{LoadTestResults, LoadTestScenario, LoadTestType, LoadTester, Progress};

/// Load-test an HTTP service and check that its resilience holds.
#[derive(Debug, Parser)]
#[command(name = "resilience-load", version)]
struct Args {
    /// The target, e.g. http://127.0.0.1:8080 (plain http).
    #[arg(long)]
    url: String,
    /// The traffic shape: spike, ramp-up, sustained, stress, volume or endurance.
    #[arg(long, default_value = "sustained")]
    scenario: LoadTestType,
    /// Virtual users at the peak (closed model).
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// Requests per second at the peak: the open model instead of virtual users.
    #[arg(long)]
    rate: Option<f64>,
    /// How long the run lasts: 30s, 2m, 500ms, 1h.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// A path to request (repeat for several, taken in turn).
    #[arg(long = "path")]
    paths: Vec<String>,
    /// The method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// A header, 'Name: value' (repeat for several).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A body for every request; @file reads it from a file.
    #[arg(long)]
    body: Option<String>,
    /// What each virtual user waits between answer and next request.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    think_time: Duration,
    /// A request without an answer after this long fails as a timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Stress tests: the number of load steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Read the target's /resilience and check its breakers opened under failure and
    /// closed after recovery.
    #[arg(long)]
    validate_breakers: bool,
    /// Read the target's /resilience and check its pools stayed within their limits.
    #[arg(long)]
    validate_pools: bool,
    /// The results as JSON on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
    /// Write an HTML report (one self-contained page) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The name the results carry.
    #[arg(long)]
    name: Option<String>,
}

/// `30s`, `500ms`, `2m`, `1h`, `1.5s`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("`{other}` is not a unit of time (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// `Name: value`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("`{text}` is not a header (use 'Name: value')"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

fn scenario(args: &Args) -> Result<LoadTestScenario, String> {
    let method = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", args.method))?;
    let headers = args.headers.iter().map(|h| parse_header(h)).collect::<Result<Vec<_>, _>>()?;
    let body = match &args.body {
        None => None,
        Some(b) => match b.strip_prefix('@') {
            Some(file) => Some(std::fs::read(file).map_err(|e| format!("--body @{file}: {e}"))?),
            None => Some(b.clone().into_bytes()),
        },
    };
    Ok(LoadTestScenario {
        name: args.name.clone().unwrap_or_else(|| format!("{} {}", args.scenario, args.url)),
        test_type: args.scenario,
        max_users: args.users,
        arrival_rate: args.rate,
        duration: args.duration,
        max_requests: args.requests,
        target_url: args.url.clone(),
        request_paths: if args.paths.is_empty() { vec![String::from("/")] } else { args.paths.clone() },
        method,
        headers,
        body,
        think_time: args.think_time,
        request_timeout: args.timeout,
        validate_circuit_breakers: args.validate_breakers,
        validate_connection_pools: args.validate_pools,
        steps: args.steps,
        ..Default::default()
    })
}

/// The live display: a bar on a terminal, a line a second otherwise (both on stderr).
fn progress_display(scenario: &LoadTestScenario) -> impl Fn(&Progress) + Send + Sync + 'static {
    let unit = if scenario.arrival_rate.is_some() { "req/s asked" } else { "users" };
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(scenario.duration.as_millis() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let style = indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        let unit = unit.to_owned();
        Box::new(move |p: &Progress| {
            bar.set_position(p.elapsed.as_millis() as u64);
            bar.set_message(format!(
                "{:>8.0} req/s  p99 {:>9.2} ms  {} requests, {} failed  load {:.0} {unit}",
                p.rate,
                p.p99.as_secs_f64() * 1e3,
                p.requests,
                p.failed,
                p.load
            ));
            if p.elapsed >= p.planned {
                bar.finish_and_clear();
            }
        }) as Box<dyn Fn(&Progress) + Send + Sync>
    } else {
        let last = std::sync::Mutex::new(0u64);
        Box::new(move |p: &Progress| {
            let second = p.elapsed.as_secs();
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if second > *last {
                *last = second;
                eprintln!(
                    "{second:>4}s  {:.0} req/s  p99 {:.2} ms  {} requests, {} failed  load {:.0} {unit}",
                    p.rate,
                    p.p99.as_secs_f64() * 1e3,
                    p.requests,
                    p.failed,
                    p.load
                );
            }
        })
    }
}

fn summary(r: &LoadTestResults) -> String {
    let mut out = format!("{} ({}, {} model, {:.1} s)\n\n", r.scenario, r.test_type, r.model, r.duration.as_secs_f64());
    for (label, value) in r.summary_rows() {
        out.push_str(&format!("  {label:<12} {value:>12}\n"));
    }
    if !r.status_codes.is_empty() {
        let codes: Vec<String> = r.status_codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        out.push_str(&format!("\n  status codes  {}\n", codes.join(", ")));
    }
    if !r.errors.is_empty() {
        let errors: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        out.push_str(&format!("  errors        {}\n", errors.join(", ")));
    }
    out.push_str("\n  validations\n");
    for v in &r.validations {
        out.push_str(&format!("    [{}] {}: {}\n", if v.passed { "pass" } else { "FAIL" }, v.name, v.detail));
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = match scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("resilience-load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("resilience-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let tester = LoadTester::new(scenario.clone()).on_progress(progress_display(&scenario));
    let results = match runtime.block_on(tester.run()) {
        Ok(r) => r,
        // A bad scenario or an unreachable target: nothing ran.
        Err(e) => {
            eprintln!("resilience-load: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", results.to_json());
    } else {
        print!("{}", summary(&results));
    }
    if let Some(path) = &args.report {
        if let Err(e) = results.write_html(path) {
            eprintln!("resilience-load: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("report written to {}", path.display());
    }
    if results.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
