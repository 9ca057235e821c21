//! Operators' tools against a real coordinator: job submission through the
//! REST API, schemathesis over the OpenAPI document, TLS, and the dashboard
//! in a real browser (also over the demo's store). The external tools
//! (schemathesis, node + playwright-core + chromium, openssl, curl) are
//! installed by `.ci/run`; where one is missing the test says so and skips,
//! unless TENSORGUARD_REQUIRE_OPERATOR_TOOLS=1 (set by `.ci/run`) makes it
//! fail.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::served::{enrollment, job_file, repo, serve, tg_ok, token, tool};
use crate::common::{free_port, http_get, http_request, tg_command, wait_for};

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
        // A file path on the coordinator's host: never read for an API caller.
        (
            "[job]\n[model]\ninitial = \"/etc/passwd\"\n",
            "never reads files",
        ),
        // A combination the demo refuses, refused with the demo's words and code.
        (
            "[job]\nstrategy = \"scaffold\"\nclients = 4\n[secure_aggregation]\n",
            "E020]: job file",
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
        tg_ok(
            dir,
            &[
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
            ],
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
        .env("TENSORGUARD_BIN", crate::common::bin())
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

#[test]
fn the_demo_can_be_watched_in_the_dashboard_with_a_printed_viewer_token() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "demo",
            "--rounds",
            "2",
            "--clients",
            "3",
            "--no-baseline",
            "--dashboard",
            &addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut token = None;
    let mut over = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(i) = line.find("tgapi_") {
            token = Some(line[i..].trim().to_owned());
        }
        if line.contains("the dashboard stays up") {
            over = true;
            break;
        }
    }
    let token = token.expect("no viewer token printed");
    assert!(over, "the demo did not finish");
    let (status, jobs) = http_get(&addr, "/api/v1/jobs", Some(&token));
    let (page, _) = http_get(&addr, "/", None);
    // Read-only: a viewer cannot change anything, and nothing can be queued.
    let (put, _) = http_request(
        &addr,
        "PUT",
        "/api/v1/settings/job_defaults",
        Some(&token),
        "{}",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{jobs}");
    assert!(
        jobs.contains("\"kind\":\"demo\"") && jobs.contains("completed"),
        "{jobs}"
    );
    assert_eq!(page, 200);
    assert_eq!(put, 403);
}

#[test]
fn a_serving_coordinator_runs_submitted_jobs_one_after_another() {
    let s = serve(|_| {});
    let port = free_port();
    for rounds in [1, 2] {
        let job = format!(
            "[job]\ndataset = \"digits\"\nclients = 1\nrounds = {rounds}\nmin_clients = 1\n\n\
             [network]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmdns = false\n"
        );
        let (status, text) = http_request(&s.addr, "POST", "/api/v1/jobs", Some(&s.admin), &job);
        assert_eq!(status, 202, "{text}");
        let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["job"]
            .as_str()
            .unwrap()
            .to_owned();
        let addrs = s.dir.path().join("coordinator.addrs");
        // Each job starts its own node on the same port once the last one is gone.
        let addr = wait_for(Duration::from_secs(60), || {
            let log = std::fs::read_to_string(s.dir.path().join("coordinator.log")).ok()?;
            let text = std::fs::read_to_string(&addrs).ok()?;
            log.contains(&format!("job {id} · peer id"))
                .then(|| text.lines().next().map(str::to_owned))
                .flatten()
        })
        .expect("the submitted job did not start");
        let enroll = enrollment(s.dir.path());
        let agent_dir = tempfile::tempdir().unwrap();
        let agent = tg_command()
            .arg("--data-dir")
            .arg(agent_dir.path())
            .args([
                "agent",
                "start",
                "--once",
                "--allow-plaintext",
                "--coordinator",
                &addr,
                "--enroll",
            ])
            .arg(&enroll)
            .output()
            .unwrap();
        assert!(
            agent.status.success(),
            "{}",
            String::from_utf8_lossy(&agent.stderr)
        );
        let done = wait_for(Duration::from_secs(60), || {
            let (_, body) = http_get(&s.addr, &format!("/api/v1/jobs/{id}"), Some(&s.admin));
            body.contains("\"status\":\"completed\"").then_some(body)
        });
        assert!(done.is_some_and(|b| b.contains(&format!("\"rounds_committed\":{rounds}"))));
    }
}

#[test]
fn plain_http_off_loopback_is_refused_and_metrics_can_require_a_token() {
    // The API on an address other hosts reach, without TLS: refused.
    let dir = tempfile::tempdir().unwrap();
    let open = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["coordinator", "start", "--serve", "--api"])
        .arg(format!("0.0.0.0:{}", free_port()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&open.stderr);
    assert!(!open.status.success() && err.contains("E020"), "{err}");
    assert!(err.contains("--insecure-http"), "{err}");

    // /metrics behind a bearer token.
    let secret = dir.path().join("metrics.token");
    std::fs::write(&secret, "m3tr1cs-s3cr3t-t0k3n-0123456789\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let mut child = tg_command()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["coordinator", "start", "--serve", "--api", &addr])
        .arg("--metrics-token-file")
        .arg(&secret)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(60), || {
        (http_get(&addr, "/api/v1/openapi.json", None).0 == 200).then_some(())
    });
    let without = http_get(&addr, "/metrics", None);
    let wrong = http_get(&addr, "/metrics", Some("m3tr1cs-s3cr3t-t0k3n-0123456780"));
    let with = http_get(&addr, "/metrics", Some("m3tr1cs-s3cr3t-t0k3n-0123456789"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "the coordinator did not come up");
    assert_eq!(without.0, 401, "{}", without.1);
    assert_eq!(wrong.0, 401);
    assert_eq!(with.0, 200);
    assert!(with.1.contains("# EOF"), "{}", with.1);
}
