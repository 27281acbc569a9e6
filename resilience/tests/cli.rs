//! The `resilience-load` binary: its exit status, `--json` and `--report`, against a
//! plain HTTP/1.1 server on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Serves `answer` (status line and body) to every request, keep-alive, on threads.
fn server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resilience-load")).args(args).output().expect("the binary runs")
}

#[test]
fn a_passing_run_exits_0_with_only_json_on_stdout_and_writes_its_report() {
    let url = server("200 OK", "hello");
    let report = std::env::temp_dir().join(format!("resilience-load-{}.html", std::process::id()));
    let report_arg = report.to_string_lossy().into_owned();
    let out = load(&["--url", &url, "--users", "2", "--duration", "1s", "--json", "--report", &report_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON and nothing else");
    assert!(json["total_requests"].as_u64().unwrap_or(0) > 0, "{json}");
    assert_eq!(json["passed"], true);
    let html = std::fs::read_to_string(&report).expect("the report was written");
    assert!(html.contains(r#"<svg id="latency-0""#) && html.contains(r#"<svg id="throughput-0""#), "charts");
    let _ = std::fs::remove_file(report);
}

#[test]
fn a_failed_validation_exits_1_and_the_summary_says_which() {
    let url = server("500 Internal Server Error", "broken");
    let out = load(&["--url", &url, "--users", "2", "--requests", "200", "--duration", "5s"]);
    assert_eq!(out.status.code(), Some(1));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("[FAIL] error_rate"), "{summary}");
    assert!(summary.contains("500: "), "{summary}");
}

#[test]
fn bad_arguments_and_an_unreachable_target_exit_2() {
    for (args, says) in [
        (vec!["--url", "http://127.0.0.1:1", "--scenario", "soak"], "soak"),
        (vec!["--url", "http://127.0.0.1:1", "--duration", "5 parsecs"], "parsecs"),
        (vec!["--url", "http://127.0.0.1:1", "--header", "no colon"], "Name: value"),
        (vec!["--url", "http://127.0.0.1:1", "--users", "0"], "max_users"),
        (vec!["--url", "not a url"], "not a URL"),
    ] {
        let out = load(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let out = load(&["--url", &url, "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"), "{}", String::from_utf8_lossy(&out.stderr));
}
