//! Helpers shared by the compute tests: a rogue peer speaking the real
//! protocol over tg-net, and the small waits every test needs.

#![allow(clippy::unwrap_used, dead_code)] // test helpers panic on failed setup; each test binary uses some

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tg_compute::{Msg, NodeConfig, Stage};
use tg_net::Event;

pub struct Rogue {
    pub key: SigningKey,
    pub client: tg_net::Client,
    pub events: tokio::sync::mpsc::Receiver<Event>,
}

pub async fn rogue(seed: u8) -> Rogue {
    let secret = [seed; 32];
    let cfg = tg_net::Config::new(
        tg_net::Role::Compute,
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    let (client, events, ev) = tg_net::new(secret, cfg).unwrap();
    tokio::spawn(ev.run());
    Rogue {
        key: SigningKey::from_bytes(&secret),
        client,
        events,
    }
}

impl Rogue {
    /// The next compute message from anyone, within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<(tg_net::PeerId, Msg)> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some(Event::Frame { peer, frame })) => {
                    if let Ok(m) = Msg::decode(&frame) {
                        return Some((peer, m));
                    }
                }
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

pub async fn addr_of(h: &tg_compute::Handle) -> String {
    for _ in 0..100 {
        if let Some(a) = h.status().await.unwrap().listen.first() {
            return format!("{a}/p2p/{}", h.peer_id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no listen address")
}

/// Waits until every task in `want` is done; panics on a failure or after `limit`.
pub async fn all_done(
    progress: &mut tokio::sync::broadcast::Receiver<tg_compute::Progress>,
    want: &std::collections::HashSet<String>,
    limit: Duration,
) {
    let mut done = std::collections::HashSet::new();
    let end = tokio::time::Instant::now() + limit;
    while done.len() < want.len() {
        let p = tokio::time::timeout_at(end, progress.recv())
            .await
            .expect("tasks did not finish")
            .unwrap();
        if want.contains(&p.task) {
            match p.stage {
                Stage::Done => {
                    done.insert(p.task);
                }
                Stage::Failed { reason } => panic!("{reason}"),
                _ => {}
            }
        }
    }
}

/// A capability record as a worker sends it, claiming an idle CPU.
pub fn able(protocol: u32, over_caps: bool) -> tg_compute::Capability {
    tg_compute::Capability {
        protocol,
        kinds: vec!["embed".into(), "classify".into()],
        models: Vec::new(),
        cpu_cap_pct: 50,
        cpu_used_pct: 0,
        queue: 0,
        over_caps,
        reason: over_caps.then(|| "memory cap".to_string()),
    }
}

pub fn worker_cfg(models: PathBuf, dir: &tempfile::TempDir) -> NodeConfig {
    let mut cfg = NodeConfig::new(models, dir.path().join("wallet"));
    cfg.worker.cpu_cap_pct = 800;
    cfg
}

/// A rogue that joins through `addr` and advertises itself as an embed provider.
pub async fn rogue_provider(seed: u8, addr: &str) -> Rogue {
    let r = rogue(seed).await;
    r.client.dial(addr.parse().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = r.client.bootstrap().await;
    r.client
        .start_providing(b"/tensorguard/compute/kind/embed")
        .await
        .unwrap();
    r
}

/// A submitter's config: no serving, a task store in `dir`, joining through `addr`.
pub fn submitter_cfg(models: PathBuf, dir: &tempfile::TempDir, addr: &str) -> NodeConfig {
    let mut sc = NodeConfig::new(models, dir.path().join("wallet"));
    sc.serve = false;
    sc.store = Some(dir.path().join("tasks.sqlite"));
    sc.bootstrap = vec![addr.parse().unwrap()];
    sc
}

/// Submits `n` one-sentence embed tasks (redundancy 1); their ids.
pub async fn submit_embeds(
    sub: &tg_compute::Handle,
    n: usize,
    what: &str,
) -> std::collections::HashSet<String> {
    let mut want = std::collections::HashSet::new();
    for i in 0..n {
        let input = tg_tasks::TaskInput {
            kind: "embed".into(),
            texts: vec![format!("{what} {i}")],
        };
        want.insert(tg_compute::task_hex(
            &sub.submit(input, tg_compute::Redundancy::Fixed(1))
                .await
                .unwrap(),
        ));
    }
    want
}
