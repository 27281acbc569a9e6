//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing
//! loaded from elsewhere) with a section per run.

use std::fmt::Write;

use super::probe::closed;
use super::results::LoadTestResults;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round number at or above `v`, for an axis.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&c| c >= v).unwrap_or(10.0 * magnitude)
}

/// The frame of a chart: axes, a few labelled grid lines, the x axis in seconds.
fn frame(out: &mut String, id: &str, title: &str, y_max: f64, y_unit: &str, seconds: usize) {
    let _ = write!(
        out,
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    let plot_h = HEIGHT - BOTTOM - TOP;
    for i in 0..=4 {
        let y = TOP + plot_h * (1.0 - i as f64 / 4.0);
        let value = y_max * i as f64 / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}{}</text>"##,
            WIDTH - 8.0,
            LEFT - 4.0,
            y + 4.0,
            format_value(value),
            y_unit
        );
    }
    let step = (seconds / 10).max(1);
    for s in (0..=seconds).step_by(step) {
        let x = x_of(s as f64, seconds);
        let _ = write!(out, r#"<text x="{x:.1}" y="{}" text-anchor="middle" class="tick">{s}s</text>"#, HEIGHT - 8.0);
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn x_of(second: f64, seconds: usize) -> f64 {
    LEFT + (WIDTH - LEFT - 8.0) * second / (seconds.max(1) as f64)
}

fn y_of(value: f64, y_max: f64) -> f64 {
    TOP + (HEIGHT - BOTTOM - TOP) * (1.0 - (value / y_max).clamp(0.0, 1.0))
}

/// Lines over the seconds of the run.
fn line_chart(out: &mut String, id: &str, title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) {
    let seconds = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let y_max = nice_max(series.iter().flat_map(|s| s.2.iter().copied()).fold(0.0, f64::max));
    frame(out, id, title, y_max, unit, seconds);
    for (name, colour, values) in series {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i as f64 + 0.5, seconds), y_of(*v, y_max)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            esc(name),
            points.join(" ")
        );
    }
    out.push_str("</svg>");
    legend(out, series.iter().map(|(n, c, _)| (*n, *c)));
    out.push_str("</figure>");
}

fn legend<'a>(out: &mut String, entries: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push_str(r#"<p class="legend">"#);
    for (name, colour) in entries {
        let _ = write!(out, r#"<span><i style="background:{colour}"></i>{}</span>"#, esc(name));
    }
    out.push_str("</p>");
}

/// Requests per second as bars (failed ones stacked in red), with the load asked for.
fn throughput_chart(out: &mut String, id: &str, r: &LoadTestResults) {
    let seconds = r.timeline.len();
    let y_max = nice_max(r.timeline.iter().map(|p| p.requests as f64).fold(0.0, f64::max));
    frame(out, id, "Requests per second (failed in red)", y_max, "", seconds);
    let bar = (WIDTH - LEFT - 8.0) / seconds.max(1) as f64;
    for (i, p) in r.timeline.iter().enumerate() {
        let x = x_of(i as f64, seconds) + bar * 0.1;
        let (ok, failed) = ((p.requests - p.failed) as f64, p.failed as f64);
        let y_ok = y_of(ok, y_max);
        let y_all = y_of(ok + failed, y_max);
        let base = y_of(0.0, y_max);
        let _ = write!(
            out,
            r##"<rect class="bar" x="{x:.1}" y="{y_ok:.1}" width="{:.1}" height="{:.1}" fill="#4a90d9"><title>{i}s: {} requests, {} failed</title></rect>"##,
            bar * 0.8,
            base - y_ok,
            p.requests,
            p.failed
        );
        if failed > 0.0 {
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{y_all:.1}" width="{:.1}" height="{:.1}" fill="#d9534f"/>"##,
                bar * 0.8,
                y_ok - y_all
            );
        }
    }
    out.push_str("</svg>");
    let load_max = r.timeline.iter().map(|p| p.load).fold(0.0, f64::max);
    let unit = if r.model == "open" { "requests/s" } else { "users" };
    let _ = write!(out, r#"<p class="legend">Load asked for, up to {load_max:.0} {unit}:</p>"#);
    let loads: Vec<f64> = r.timeline.iter().map(|p| p.load).collect();
    line_chart(out, &format!("{id}-load"), &format!("Load ({unit})"), "", &[(unit, "#7b5ea7", loads)]);
    out.push_str("</figure>");
}

/// Answers by status code (and errors by kind) as horizontal bars.
fn status_chart(out: &mut String, id: &str, r: &LoadTestResults) {
    let mut rows: Vec<(String, u64, &str)> = r
        .status_codes
        .iter()
        .map(|(code, n)| {
            let colour = match code {
                200..=399 => "#5cb85c",
                400..=499 => "#f0ad4e",
                _ => "#d9534f",
            };
            (code.to_string(), *n, colour)
        })
        .collect();
    rows.extend(r.errors.iter().map(|(kind, n)| (kind.clone(), *n, "#6c757d")));
    let height = 24.0 * rows.len().max(1) as f64 + 10.0;
    let most = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let _ = write!(
        out,
        r#"<figure><figcaption>Answers by status code and errors by kind</figcaption><svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="status codes">"#
    );
    for (i, (label, n, colour)) in rows.iter().enumerate() {
        let y = 6.0 + 24.0 * i as f64;
        let w = (WIDTH - 200.0) * (*n as f64 / most);
        let _ = write!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text><rect class="bar" x="{LEFT}" y="{y:.1}" width="{w:.1}" height="18" fill="{colour}"/><text x="{:.1}" y="{:.1}" class="tick">{n}</text>"#,
            LEFT - 6.0,
            y + 13.0,
            esc(label),
            LEFT + w + 6.0,
            y + 13.0
        );
    }
    out.push_str("</svg></figure>");
}

/// Each breaker's state over time, as coloured bands.
fn breaker_chart(out: &mut String, id: &str, r: &LoadTestResults) {
    let mut names: Vec<&str> = Vec::new();
    for s in &r.breaker_timeline {
        for (n, _) in &s.breakers {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let end = r.breaker_timeline.iter().map(|s| s.at).fold(r.duration.as_secs_f64(), f64::max).max(1.0);
    let height = 26.0 * names.len().max(1) as f64 + 30.0;
    let left = 160.0;
    let x = |at: f64| left + (WIDTH - left - 8.0) * (at.max(0.0) / end);
    let _ = write!(
        out,
        r#"<figure><figcaption>Circuit breakers of the target over time (green closed, red open, amber half-open)</figcaption><svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="breaker states">"#
    );
    for (row, name) in names.iter().enumerate() {
        let y = 6.0 + 26.0 * row as f64;
        let _ = write!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            left - 6.0,
            y + 14.0,
            esc(name)
        );
        let states: Vec<(f64, &str)> = r
            .breaker_timeline
            .iter()
            .filter_map(|s| s.breakers.iter().find(|(n, _)| n == name).map(|(_, st)| (s.at, st.as_str())))
            .collect();
        for (i, (at, state)) in states.iter().enumerate() {
            let next = states.get(i + 1).map_or(end, |(t, _)| *t);
            let colour = match *state {
                s if closed(s) => "#5cb85c",
                "half_open" => "#f0ad4e",
                _ => "#d9534f",
            };
            let _ = write!(
                out,
                r#"<rect class="state" data-state="{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="20" fill="{colour}"><title>{}: {} at {at:.1}s</title></rect>"#,
                esc(state),
                x(*at),
                (x(next) - x(*at)).max(1.0),
                esc(name),
                esc(state)
            );
        }
    }
    let run_end = x(r.duration.as_secs_f64());
    let _ = write!(
        out,
        r##"<line x1="{run_end:.1}" x2="{run_end:.1}" y1="0" y2="{:.1}" stroke="#333" stroke-dasharray="4 3"/><text x="{run_end:.1}" y="{:.1}" text-anchor="end" class="tick">end of the load ({:.0}s); recovery after</text>"##,
        height - 20.0,
        height - 6.0,
        r.duration.as_secs_f64()
    );
    out.push_str("</svg></figure>");
}

fn section(out: &mut String, i: usize, r: &LoadTestResults) {
    let verdict =
        if r.passed() { r#"<span class="pass">passed</span>"# } else { r#"<span class="fail">failed</span>"# };
    let _ = write!(
        out,
        r#"<section id="run-{i}"><h2>{} <small>{} · {} model</small> {verdict}</h2>"#,
        esc(&r.scenario),
        r.test_type,
        r.model
    );
    let rows = r.summary_rows();
    out.push_str("<table class=\"summary\"><tr>");
    for (label, _) in &rows {
        let _ = write!(out, "<th>{label}</th>");
    }
    out.push_str("</tr><tr>");
    for (_, value) in &rows {
        let _ = write!(out, "<td>{}</td>", esc(value));
    }
    out.push_str("</tr></table>");
    out.push_str("<ul class=\"validations\">");
    for v in &r.validations {
        let class = if v.passed { "pass" } else { "fail" };
        let _ = write!(out, r#"<li class="{class}"><b>{}</b>: {}</li>"#, esc(&v.name), esc(&v.detail));
    }
    out.push_str("</ul>");
    let series = |f: fn(&super::TimelinePoint) -> std::time::Duration| -> Vec<f64> {
        r.timeline.iter().map(|p| f(p).as_secs_f64() * 1e3).collect()
    };
    line_chart(
        out,
        &format!("latency-{i}"),
        "Latency percentiles per second (ms)",
        "",
        &[
            ("p50", "#4a90d9", series(|p| p.p50)),
            ("p90", "#f0ad4e", series(|p| p.p90)),
            ("p99", "#d9534f", series(|p| p.p99)),
        ],
    );
    throughput_chart(out, &format!("throughput-{i}"), r);
    status_chart(out, &format!("status-{i}"), r);
    if !r.breaker_timeline.is_empty() {
        breaker_chart(out, &format!("breakers-{i}"), r);
    }
    out.push_str("</section>");
}

/// The page for `runs`.
pub(crate) fn html(runs: &[LoadTestResults]) -> String {
    let mut out = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Load test report</title><style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:820px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}small{color:#666;font-weight:normal}
table.summary{border-collapse:collapse;margin:8px 0}table.summary td,table.summary th{border:1px solid #ccc;padding:3px 7px;text-align:right}
.pass{color:#2e7d32}.fail{color:#c62828}ul.validations{padding-left:18px}
figure{margin:14px 0}figcaption{font-weight:600;margin-bottom:4px}.tick{font-size:11px;fill:#555}
.legend span{margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
</style></head><body><h1>Load test report</h1>"#,
    );
    let passed = runs.iter().filter(|r| r.passed()).count();
    let _ = write!(out, "<p id=\"overview\">{passed} of {} runs passed every validation.</p>", runs.len());
    for (i, r) in runs.iter().enumerate() {
        section(&mut out, i, r);
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes the report of several runs (a suite) to `path`.
pub fn write_html_report(runs: &[LoadTestResults], path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    std::fs::write(path, html(runs))
}
