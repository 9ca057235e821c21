//! `tensorguard bench api`: what the operators' API costs and how soon the
//! dashboard sees a round.
//!
//! A store with one job of `rounds` committed rounds is served by the real
//! router on 127.0.0.1 (plain HTTP); requests go over TCP one at a time,
//! with a bearer token, as a dashboard's would. "Live delay" is the time
//! from a round being recorded in the store to its `round` event arriving
//! on an open `/api/v1/events` stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use tg_store::{ApiRole, NewJob, Store};
use tg_types::JobId;
use tg_types::record::{RoundRecord, RoundStatus};

use crate::{BenchError, Result};

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Api(format!(
        "{what}: {e} (check that 127.0.0.1 accepts local connections)"
    ))
}

fn stored(e: tg_store::StoreError) -> BenchError {
    BenchError::Api(format!("the benchmark's store: {e}"))
}

fn round(n: u32) -> RoundRecord {
    RoundRecord {
        round: n,
        status: RoundStatus::Committed,
        accuracy: Some(0.9),
        loss: Some(0.3),
        selected: 50,
        participants: 48,
        upload_bytes: 1 << 20,
        download_bytes: 1 << 21,
        duration_ms: 1500,
        reason: None,
        model_sha256: None,
        parent_sha256: None,
        participants_detail: Vec::new(),
        epsilon: None,
        federated: None,
        gate: None,
        experts: Vec::new(),
        screened: Vec::new(),
        reputation: Vec::new(),
    }
}

/// One GET over a fresh connection; the response's size.
fn get(addr: &str, path: &str, token: &str) -> Result<usize> {
    let mut s = TcpStream::connect(addr).map_err(|e| failed("connect", e))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .map_err(|e| failed("send", e))?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).map_err(|e| failed("read", e))?;
    if !body.starts_with(b"HTTP/1.0 200") && !body.starts_with(b"HTTP/1.1 200") {
        return Err(failed(
            path,
            String::from_utf8_lossy(&body[..body.len().min(200)]),
        ));
    }
    Ok(body.len())
}

fn percentiles(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    json!({"p50_ms": at(0.5), "p99_ms": at(0.99), "requests_per_s": 1000.0 * ms.len() as f64 / ms.iter().sum::<f64>()})
}

/// Serves a store of `rounds` committed rounds and times `requests` GETs of
/// each route, then the live delay of five more rounds; the report as JSON.
pub fn run(rounds: u32, requests: usize) -> Result<serde_json::Value> {
    if requests == 0 {
        return Err(BenchError::Args("--requests must be at least 1".into()));
    }
    let dir = tempfile::tempdir().map_err(|e| failed("temp dir", e))?;
    let mut store = Store::open(dir.path()).map_err(stored)?;
    let job = JobId::from_bytes([0x42; 16]);
    let spec = json!({"rounds": rounds + 10, "strategy": {"kind": "fed-avg"}});
    store
        .create_job(&NewJob {
            id: job,
            kind: "bench",
            spec: &spec,
        })
        .map_err(stored)?;
    for n in 1..=rounds {
        store
            .record_round(job, &mut round(n), None)
            .map_err(stored)?;
    }
    let (token, _) = tg_coordinator::api::auth::issue_token(&store, ApiRole::Viewer, "bench", None)
        .map_err(|e| failed("token", e))?;
    let state = tg_coordinator::api::ApiState::new(Store::open(dir.path()).map_err(stored)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failed("async runtime", e))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| failed("bind", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| failed("bind", e))?
        .to_string();
    let app = tg_coordinator::api::router(state);
    {
        let _in_runtime = rt.enter();
        tg_coordinator::http::spawn(listener, app, None);
    }

    let measure = |path: &str| -> Result<serde_json::Value> {
        let mut ms = Vec::with_capacity(requests);
        let mut bytes = 0;
        for _ in 0..requests {
            let t = Instant::now();
            bytes = get(&addr, path, &token)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut v = percentiles(ms);
        v["response_bytes"] = json!(bytes);
        Ok(v)
    };
    let rounds_list = measure(&format!("/api/v1/jobs/{job}/rounds"))?;
    let agents = measure("/api/v1/agents")?;

    // Live delay: record a round, time its event on an open stream.
    let mut stream = TcpStream::connect(&addr).map_err(|e| failed("connect", e))?;
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        token.as_str()
    )
    .map_err(|e| failed("send", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| failed("timeout", e))?;
    let mut reader = BufReader::new(stream);
    let mut wait_for = |needle: &str| -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| failed("events", e))?;
            if n == 0 {
                return Err(failed("events", "stream closed"));
            }
            if line.starts_with(needle) {
                return Ok(());
            }
        }
    };
    wait_for("event: hello")?;
    let mut delays = Vec::new();
    for n in rounds + 1..=rounds + 5 {
        let t = Instant::now();
        store
            .record_round(job, &mut round(n), None)
            .map_err(stored)?;
        wait_for("event: round")?;
        delays.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = delays.iter().sum::<f64>() / delays.len() as f64;
    let max = delays.iter().copied().fold(0.0, f64::max);
    Ok(json!({
        "bench": "api",
        "rounds_in_store": rounds,
        "requests_per_route": requests,
        "get_rounds": rounds_list,
        "get_agents": agents,
        "live_round_event_ms": {"mean": mean, "max": max, "samples": delays.len(), "poll_interval_ms": 1000},
        "cores": std::thread::available_parallelism().map_or(1, usize::from),
    }))
}
