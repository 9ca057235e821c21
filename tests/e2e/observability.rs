//! Observability against a real coordinator: Prometheus (the shipped
//! scrape config and alert rules, `promtool`, a real scrape) and OTLP trace
//! export. Prometheus and promtool are installed by `.ci/run`; where one is
//! missing the test says so and skips, unless
//! TENSORGUARD_REQUIRE_OPERATOR_TOOLS=1 makes it fail.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::served::{repo, serve, tool};
use crate::common::{free_port, http_get, tg_command, wait_for};

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
