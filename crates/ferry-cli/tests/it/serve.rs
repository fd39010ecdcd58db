//! `ferry serve` and the dashboard, as real processes: the binary's API answers what
//! `ferry status --json` prints, tokens never reach its logs, and the dashboard rendered by
//! headless Chromium during a running demo shows the API's numbers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_testkit::{TempDir, TestDb};

use crate::{ferry, ok};

/// One HTTP/1.1 exchange; returns the status code and the body.
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        },
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A child's stdout lines, collected by a thread as they come.
fn collect_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

#[allow(
    clippy::disallowed_methods,
    reason = "polls lines a reader thread collects; only a test waits here"
)]
fn wait_for_line(lines: &Mutex<Vec<String>>, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        assert!(
            start.elapsed() < limit,
            "no line with {needle:?} within {limit:?}; got {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_api_answers_what_the_cli_prints_and_logs_no_tokens() {
    let db = TestDb::new().await;
    let url = db.url().to_owned();
    ok(ferry(&url).args(["migration", "create", "served", "--kind", "tenant-move"]));
    ok(ferry(&url).args(["tenant", "add", "served", "a=10", "b=20", "c=30"]));
    let created: serde_json::Value = serde_json::from_str(&ok(
        ferry(&url).args(["token", "create", "oncall", "--scope", "operator", "--json"])
    ))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let read: serde_json::Value = serde_json::from_str(&ok(
        ferry(&url).args(["token", "create", "grafana", "--scope", "read", "--json"])
    ))
    .unwrap();
    let read = read["token"].as_str().unwrap().to_owned();
    let listed = ok(ferry(&url).args(["token", "list"]));
    assert!(
        listed.contains("oncall") && !listed.contains(&token),
        "{listed}"
    );

    let dir = TempDir::new("serve-log");
    let log = dir.path().join("serve.log");
    let mut server = KillOnDrop(
        ferry(&url)
            .args(["serve", "--listen", "127.0.0.1:0", "-v"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let lines = collect_lines(&mut server.0);
    let first = wait_for_line(&lines, "on http://", Duration::from_secs(30));
    let addr = first.rsplit("http://").next().unwrap().trim().to_owned();

    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/migrations/served/tenants/b/advance",
        Some(&token),
        r#"{"reason":"through the served API"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let guess = "ferry_0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(http(&addr, "GET", "/api/v1/status", Some(guess), "").0, 401);
    assert_eq!(http(&addr, "GET", "/api/v1/status", None, "").0, 401);
    let advance_a = "/api/v1/migrations/served/tenants/a/advance";
    assert_eq!(http(&addr, "POST", advance_a, Some(&read), "{}").0, 403);
    assert_eq!(
        http(&addr, "POST", advance_a, Some(&token), "{\"nope\": 1}").0,
        400
    );

    let (status, api) = http(&addr, "GET", "/api/v1/status", Some(&token), "");
    assert_eq!(status, 200, "{api}");
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let cli: serde_json::Value =
        serde_json::from_str(&ok(ferry(&url).args(["status", "--json"]))).unwrap();
    assert_eq!(
        api, cli,
        "`ferry status --json` and GET /api/v1/status agree"
    );
    assert_eq!(api["migrations"][0]["phases"][1]["tenants"], 1);

    let (status, metrics) = http(&addr, "GET", "/metrics", Some(&token), "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"ferry_tenants{migration="served",phase="dual_write"} 1"#),
        "{metrics}"
    );

    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("refused: unknown token"),
        "the refusal is logged: {logged}"
    );
    assert!(
        logged.contains("scope too narrow"),
        "the 403 is logged: {logged}"
    );
    assert!(!logged.contains(&token), "a token reached the log");
    assert!(!logged.contains(&read), "a token reached the log");
    assert!(!logged.contains(guess), "a presented token reached the log");
    let history = ok(ferry(&url).args(["tenant", "history", "served", "b"]));
    assert!(history.contains("token:oncall"), "{history}");
}

/// Headless Chromium, which the test installs nowhere: `.ci/run` and the README install
/// Debian's `chromium`.
fn chromium() -> String {
    let path = std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "the dashboard test needs headless Chromium at {path}: `apt-get install chromium` (as .ci/run does), or set FERRY_CHROMIUM"
    );
    path
}

fn chromium_run(profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The text of the element with `attrs` (as the DOM serialises them), if present.
fn dom_value(dom: &str, attrs: &str) -> Option<String> {
    let start = dom.find(attrs)? + attrs.len();
    let rest = &dom[start..];
    let text = &rest[rest.find('>')? + 1..];
    Some(text[..text.find('<')?].to_owned())
}

fn number(text: &str) -> u64 {
    text.replace(',', "")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number on screen: {text:?}"))
}

/// What the page shows for the demo's migration.
fn on_screen(dom: &str) -> BTreeMap<String, u64> {
    let mut shown = BTreeMap::new();
    let version = dom_value(dom, r#"data-testid="change-version" id="change-version""#)
        .unwrap_or_else(|| panic!("no change version in the page: {dom}"));
    shown.insert("change_version".into(), number(&version));
    for phase in [
        "legacy",
        "dual_write",
        "shadow",
        "target_primary",
        "target_only",
        "complete",
    ] {
        let attrs = format!(
            r#"data-testid="phase-count" data-migration="orders_move" data-phase="{phase}""#
        );
        let v = dom_value(dom, &attrs).unwrap_or_else(|| panic!("no count for {phase}: {dom}"));
        shown.insert(format!("phase.{phase}"), number(&v));
    }
    for tile in [
        "tenants",
        "paused",
        "buffer-pending",
        "buffer-dead",
        "mismatches-open",
        "routed",
        "fallbacks",
        "copies-running",
    ] {
        let attrs = format!(r#"data-testid="{tile}" data-migration="orders_move""#);
        let v = dom_value(dom, &attrs).unwrap_or_else(|| panic!("no {tile} tile: {dom}"));
        shown.insert(tile.into(), number(&v));
    }
    shown
}

/// The same figures from an API status.
fn from_api(status: &serde_json::Value) -> BTreeMap<String, u64> {
    let m = &status["migrations"][0];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let mut want = BTreeMap::new();
    want.insert("change_version".into(), n(&status["change_version"]));
    for p in m["phases"].as_array().unwrap() {
        want.insert(
            format!("phase.{}", p["phase"].as_str().unwrap()),
            n(&p["tenants"]),
        );
    }
    want.insert("tenants".into(), n(&m["tenants"]));
    want.insert("paused".into(), n(&m["paused"]));
    want.insert("buffer-pending".into(), n(&m["buffer"]["pending"]));
    want.insert("buffer-dead".into(), n(&m["buffer"]["dead"]));
    want.insert("mismatches-open".into(), n(&m["mismatches"]["open"]));
    let routed: u64 = m["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| n(&r["count"]))
        .sum();
    want.insert("routed".into(), routed);
    want.insert("fallbacks".into(), n(&m["fallbacks"]));
    want.insert("copies-running".into(), n(&m["copies"]["running"]));
    want
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "a plain thread polls the API while Chromium renders"
)]
fn the_dashboard_in_headless_chromium_shows_the_apis_numbers() {
    chromium();
    let mut demo = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "demo",
                "--simulate",
                "--tenants",
                "120",
                "--serve",
                "127.0.0.1:0",
                "--step-delay-ms",
                "700",
                "--linger",
                "60",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = collect_lines(&mut demo.0);
    let line = wait_for_line(&lines, "dashboard: http://", Duration::from_secs(60));
    let url = line.trim_start_matches("dashboard: ").trim().to_owned();
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let token = url.rsplit("#token=").next().unwrap().to_owned();
    let status = || -> serde_json::Value {
        let (code, body) = http(&addr, "GET", "/api/v1/status", Some(&token), "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let profile = TempDir::new("chromium");

    // During the run: every change version the API answered is remembered, so the page's
    // numbers can be checked against the API's for the version the page shows.
    let mut compared_during_run = false;
    for _ in 0..10 {
        let mut seen: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
        let before = status();
        seen.insert(before["change_version"].as_u64().unwrap(), before);
        let poller = {
            let (addr, token) = (addr.clone(), token.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    let (_, body) = http(&addr, "GET", "/api/v1/status", Some(&token), "");
                    out.push(body);
                    std::thread::sleep(Duration::from_millis(100));
                }
                out
            })
        };
        let dom =
            String::from_utf8(chromium_run(profile.path(), &["--dump-dom", &url]).stdout).unwrap();
        for body in poller.join().unwrap() {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            seen.insert(v["change_version"].as_u64().unwrap(), v);
        }
        let shown = on_screen(&dom);
        let finished = lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("still serving"));
        if let Some(api) = seen.get(&shown["change_version"]) {
            let want = from_api(api);
            for key in want.keys().filter(|k| {
                k.starts_with("phase.")
                    || [
                        "tenants",
                        "paused",
                        "buffer-pending",
                        "buffer-dead",
                        "mismatches-open",
                    ]
                    .contains(&k.as_str())
            }) {
                assert_eq!(
                    shown[key], want[key],
                    "{key} on screen at change {}",
                    shown["change_version"]
                );
            }
            if !finished && shown["change_version"] > 0 {
                compared_during_run = true;
                break;
            }
        }
        assert!(
            !finished,
            "the demo ended before the page could be compared during the run"
        );
    }
    assert!(
        compared_during_run,
        "never caught the page and the API at the same change version"
    );

    // After the story, while it lingers: every figure on screen, routing included, equals the API's.
    wait_for_line(&lines, "still serving", Duration::from_secs(240));
    let dom =
        String::from_utf8(chromium_run(profile.path(), &["--dump-dom", &url]).stdout).unwrap();
    assert_eq!(on_screen(&dom), from_api(&status()));
    assert!(
        from_api(&status())["routed"] > 0,
        "the demo's routers routed requests"
    );

    // A screenshot for people, kept as a test artifact.
    let dir = std::env::var("FERRY_TEST_ARTIFACTS")
        .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let shot = std::path::Path::new(&dir).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium_run(
        profile.path(),
        &[
            "--window-size=1400,1600",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}
