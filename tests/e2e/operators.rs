//! Operators' tools against a real coordinator: job submission through the
//! REST API, schemathesis over the OpenAPI document, Prometheus scraping
//! `/metrics` with the shipped alert rules, and the dashboard in a real
//! browser. The external tools (schemathesis, prometheus/promtool, node +
//! playwright-core + chromium) are installed by `.ci/run`; where one is
//! missing the test says so and skips, unless
//! TENSORGUARD_REQUIRE_OPERATOR_TOOLS=1 (set by `.ci/run`) makes it fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, http_get, http_request, tg_command, wait_for};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name`, found by `env` or on PATH or at `fallback`; None (after saying
/// why) when absent and not required.
fn tool(name: &str, env: &str, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|c| c.is_file())
            })
        })
        .or(fallback.filter(|f| f.exists()));
    if found.is_none() {
        let msg =
            format!("{name} not found (set {env}, or run .ci/run, which installs it): skipping");
        assert!(
            std::env::var("TENSORGUARD_REQUIRE_OPERATOR_TOOLS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIP: {msg}");
    }
    found
}

/// A coordinator serving its API (no job yet) with an admin token.
struct Served {
    dir: tempfile::TempDir,
    child: Child,
    addr: String,
    admin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(dir: &Path, role: &str) -> String {
    let out = tg_command()
        .arg("--data-dir")
        .arg(dir)
        .args(["api", "token", "create", "--role", role, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn serve(before: impl FnOnce(&Path)) -> Served {
    let dir = tempfile::tempdir().unwrap();
    before(dir.path());
    let admin = token(dir.path(), "admin");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let child = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["coordinator", "start", "--serve", "--api", &addr])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        (http_get(&addr, "/api/v1/openapi.json", None).0 == 200).then_some(())
    })
    .expect("the coordinator's API did not come up");
    Served {
        dir,
        child,
        addr,
        admin,
    }
}

fn job_file(port: u16) -> String {
    format!(
        "[job]\ndataset = \"digits\"\nclients = 2\nrounds = 3\nmin_clients = 2\n\n\
         [network]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmdns = false\n\n\
         [deadlines]\njoin_secs = 120\n"
    )
}

#[test]
fn jobs_are_submitted_and_stopped_through_the_api_and_bad_job_files_are_400() {
    let s = serve(|_| {});
    let viewer = token(s.dir.path(), "viewer");
    let operator = token(s.dir.path(), "operator");
    let post =
        |tok: Option<&str>, body: &str| http_request(&s.addr, "POST", "/api/v1/jobs", tok, body);
    assert_eq!(post(None, &job_file(1)).0, 401);
    assert_eq!(post(Some(&viewer), &job_file(1)).0, 403);
    for (body, hint) in [
        ("[job]\nrounds = \"many\"\n", "rounds"),
        ("[job]\ndataset = \"digits\"\nbogus_key = 1\n", "bogus_key"),
        ("this is not toml", "invalid"),
        (
            "[job]\ndataset = \"digits\"\n[network]\nlisten = [\"not-a-multiaddr\"]\n",
            "listen",
        ),
    ] {
        let (status, text) = post(Some(&operator), body);
        assert_eq!(status, 400, "{body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("error[E") && msg.contains(hint), "{msg}");
    }
    let good = job_file(free_port());
    let (status, text) = post(Some(&operator), &good);
    assert_eq!(status, 202, "{text}");
    let job = serde_json::from_str::<serde_json::Value>(&text).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same job file again is the same job: a conflict, not a second run.
    let (status, text) = post(Some(&operator), &good);
    assert_eq!(status, 409, "{text}");
    // It waits for agents; an operator stops it.
    let log = s.dir.path().join("coordinator.log");
    wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("waiting for 2 agents")
            .then_some(())
    })
    .expect("the submitted job did not start");
    let stop = format!("/api/v1/jobs/{job}/stop");
    assert_eq!(
        http_request(&s.addr, "POST", &stop, Some(&viewer), "").0,
        403
    );
    let (status, text) = http_request(&s.addr, "POST", &stop, Some(&operator), "");
    assert_eq!(status, 202, "{text}");
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("stopped by an operator")
            .then_some(())
    })
    .expect("the job did not stop");
    let (_, audit) = http_get(
        &s.addr,
        "/api/v1/audit?kind=job.stop_requested",
        Some(&viewer),
    );
    assert!(audit.contains(&job), "{audit}");
    // Stopping it again: it is no longer queued or running here.
    assert_eq!(
        http_request(&s.addr, "POST", &stop, Some(&operator), "").0,
        404
    );
}

#[test]
fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let venv = repo().join("target/ci-tools/venv/bin/schemathesis");
    let Some(st) = tool("schemathesis", "SCHEMATHESIS", Some(venv)) else {
        return;
    };
    // A real job in the store, so the job routes answer with data.
    let s = serve(|dir| {
        let out = tg_command()
            .arg("--data-dir")
            .arg(dir)
            .args([
                "demo",
                "--rounds",
                "2",
                "--clients",
                "4",
                "--no-baseline",
                "--dp",
                "central",
                "--clip",
                "1.0",
                "--target-epsilon",
                "8",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let (_, jobs) = http_get(&s.addr, "/api/v1/jobs", Some(&s.admin));
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    let job = jobs["jobs"][0]["id"].as_str().unwrap().to_owned();
    let (_, models) = http_get(
        &s.addr,
        &format!("/api/v1/jobs/{job}/models"),
        Some(&s.admin),
    );
    let models: serde_json::Value = serde_json::from_str(&models).unwrap();
    let model = models["models"][0]["sha256"].as_str().unwrap().to_owned();
    let out = Command::new(st)
        .arg("--config-file")
        .arg(repo().join("tests/api/schemathesis.toml"))
        .args(["run", &format!("http://{}/api/v1/openapi.json", s.addr)])
        .args(["-H", &format!("Authorization: Bearer {}", s.admin)])
        // An event stream never ends: it is tested by the API tests and the browser.
        .args([
            "--exclude-path",
            "/api/v1/events",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--no-color",
        ])
        .env("TG_JOB", &job)
        .env("TG_MODEL", &model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "schemathesis failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("5xx") || !text.contains("Server error"),
        "{text}"
    );
}

#[test]
fn prometheus_scrapes_the_coordinator_and_loads_the_alert_rules() {
    let Some(promtool) = tool("promtool", "PROMTOOL", None) else {
        return;
    };
    let Some(prometheus) = tool("prometheus", "PROMETHEUS", None) else {
        return;
    };
    let rules = repo().join("deploy/prometheus/alerts.yml");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promtool: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("SUCCESS: 13 rules found"), "{text}");

    let s = serve(|_| {});
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("prometheus.yml");
    // The shipped scrape config, pointed at this coordinator and scraping fast.
    let shipped = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    let ours = shipped
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("127.0.0.1:9100", &s.addr)
        .replace("- alerts.yml", &format!("- {}", rules.display()));
    std::fs::write(&config, ours).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(90), || {
        let (status, body) = http_get(
            &web,
            "/api/v1/query?query=tensorguard_coordinator_data_dir_size_bytes",
            None,
        );
        (status == 200 && body.contains("\"tensorguard_coordinator_data_dir_size_bytes\""))
            .then_some(body)
    });
    let (_, targets) = http_get(&web, "/api/v1/targets", None);
    let (_, loaded) = http_get(&web, "/api/v1/rules", None);
    let _ = prom.kill();
    let _ = prom.wait();
    let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        up.is_some(),
        "Prometheus did not scrape the coordinator:\n{targets}\n{log}"
    );
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
    assert_eq!(
        loaded.matches("\"type\":\"alerting\"").count(),
        13,
        "{loaded}"
    );
    assert!(!loaded.contains("\"health\":\"err\""), "{loaded}");
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let Some(node) = tool("node", "NODE", None) else {
        return;
    };
    let browser = repo().join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        let msg = "tests/browser/node_modules is missing (run `npm ci --prefix tests/browser`, as .ci/run does): skipping";
        assert!(
            std::env::var("TENSORGUARD_REQUIRE_OPERATOR_TOOLS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIP: {msg}");
        return;
    }
    let Some(chromium) = tool("chromium", "CHROMIUM", None) else {
        return;
    };
    let artifacts = repo().join("target/browser-artifacts");
    let out = Command::new(node)
        .args(["--test", "dashboard.test.mjs"])
        .current_dir(&browser)
        .env("TENSORGUARD_BIN", common::bin())
        .env("CHROMIUM", chromium)
        .env("ARTIFACTS", &artifacts)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "02-overview-live",
        "03-training",
        "05-privacy",
        "07-audit",
        "09-settings-persisted",
    ] {
        assert!(
            artifacts.join(format!("{page}.png")).is_file(),
            "no screenshot {page}"
        );
    }
}

/// A one-endpoint OTLP/HTTP sink: records each request's path and body.
fn otlp_sink() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    // Bounded: the exporter sends one batch per flush; a few are plenty.
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.try_send((path, body));
        }
    });
    (addr, rx)
}

#[test]
fn spans_are_exported_over_otlp_when_an_endpoint_is_set_and_services_say_when_not() {
    let (sink, received) = otlp_sink();
    let dir = tempfile::tempdir().unwrap();
    let out = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["demo", "--rounds", "2", "--clients", "3", "--no-baseline"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{sink}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("traces: exported over OTLP/HTTP"),
        "{stderr}"
    );
    let (path, body) = received
        .recv_timeout(Duration::from_secs(30))
        .expect("no OTLP request reached the collector");
    assert_eq!(path, "/v1/traces");
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"tensorguard-demo") && has(b"round"),
        "{} bytes",
        body.len()
    );

    // A service with no endpoint says so at start-up.
    let s = serve(|_| {});
    let log = std::fs::read_to_string(s.dir.path().join("coordinator.log")).unwrap();
    assert!(
        log.contains("traces: not exported (no OTLP endpoint"),
        "{log}"
    );
}

#[test]
fn the_api_is_served_over_tls_when_a_certificate_is_configured() {
    let Some(openssl) = tool("openssl", "OPENSSL", None) else {
        return;
    };
    let Some(curl) = tool("curl", "CURL", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let admin = token(dir.path(), "admin");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let mut child = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "coordinator",
            "start",
            "--serve",
            "--api",
            &addr,
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let get = |path: &str, auth: bool| {
        let mut c = Command::new(&curl);
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            .arg(format!("https://{addr}{path}"));
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {admin}")]);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let up = wait_for(Duration::from_secs(60), || {
        (get("/api/v1/openapi.json", false) == "200").then_some(())
    });
    let plain = http_get(&addr, "/api/v1/jobs", Some(&admin)).0;
    let (jobs, anon) = (get("/api/v1/jobs", true), get("/api/v1/jobs", false));
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    assert!(up.is_some(), "no TLS answer:\n{log}");
    assert!(log.contains("https://"), "{log}");
    assert_eq!(jobs, "200");
    assert_eq!(anon, "401");
    assert_ne!(plain, 200, "plain HTTP must not be served on a TLS port");
}
