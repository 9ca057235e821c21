//! Compute nodes on loopback, in one process: tasks are found, assigned,
//! verified by redundancy and paid; a lying worker is caught and excluded;
//! a node without the model fetches it from a provider and checks its hash.
//! Needs MiniLM in target/models (scripts/compute/fetch_models.sh); skips
//! with a message when it is absent.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failed setup

use std::path::PathBuf;
use std::time::Duration;

use tg_compute::{Handle, NodeConfig, Redundancy, Stage, start};
use tg_tasks::{Models, TaskInput, kind_by_name};

use tg_tasks::testing::models_dir;

struct Mesh {
    nodes: Vec<Handle>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn node(
    i: u8,
    models: PathBuf,
    bootstrap: Option<String>,
    lying: bool,
    submitter: bool,
) -> (Handle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(models, dir.path().join("wallet"));
    cfg.worker.cpu_cap_pct = 800; // several workers share this test process's CPU clock
    cfg.worker.simulate_lying = lying;
    cfg.bootstrap = bootstrap.into_iter().map(|a| a.parse().unwrap()).collect();
    cfg.assign_timeout = Duration::from_secs(30);
    if submitter {
        cfg.store = Some(dir.path().join("tasks.sqlite"));
        cfg.serve = false;
    }
    let mut secret = [0u8; 32];
    secret[0] = i;
    secret[1] = 0x5a;
    let (h, _) = start(secret, cfg).await.unwrap();
    (h, dir)
}

async fn mesh(models: PathBuf, workers: u8, liars: &[u8]) -> Mesh {
    let (first, d0) = node(1, models.clone(), None, liars.contains(&1), false).await;
    let mut addr = String::new();
    for _ in 0..50 {
        if let Some(a) = first.status().await.unwrap().listen.first() {
            addr = format!("{a}/p2p/{}", first.peer_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut nodes = vec![first];
    let mut dirs = vec![d0];
    for i in 2..=workers {
        let (h, d) = node(
            i,
            models.clone(),
            Some(addr.clone()),
            liars.contains(&i),
            false,
        )
        .await;
        nodes.push(h);
        dirs.push(d);
    }
    let (sub, d) = node(200, models, Some(addr), false, true).await;
    nodes.push(sub);
    dirs.push(d);
    Mesh { nodes, _dirs: dirs }
}

/// Every stored output equals a local run of its input, to the kind's tolerance.
fn check_against_local(store: &std::path::Path, models: &std::path::Path) -> usize {
    let local = Models::new(models);
    let store = tg_compute::store::TaskStore::open(store).unwrap();
    let mut n = 0;
    for rec in store
        .all()
        .unwrap()
        .into_iter()
        .filter(|r| r.parent.is_none())
    {
        let k = kind_by_name(&rec.input.kind).unwrap();
        let mine = k.run(&local, &rec.input).unwrap();
        assert!(
            k.agree(rec.output.as_ref().unwrap(), &mine),
            "task {} differs from a local run",
            rec.id
        );
        n += 1;
    }
    n
}

async fn wait_all(h: &Handle, ids: &[[u8; 16]], limit: Duration) -> Vec<(String, Stage)> {
    let mut rx = h.progress();
    let want: std::collections::HashSet<String> = ids.iter().map(hex::encode).collect();
    let mut ends = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while ends.len() < want.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(p))
                if want.contains(&p.task)
                    && matches!(p.stage, Stage::Done | Stage::Failed { .. }) =>
            {
                ends.push((p.task, p.stage))
            }
            Ok(_) => {}
            Err(_) => panic!(
                "only {} of {} tasks ended in {limit:?}",
                ends.len(),
                want.len()
            ),
        }
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_verified_by_redundancy_and_paid() {
    let Some(models) = models_dir() else { return };
    let m = mesh(models.clone(), 3, &[]).await;
    let sub = m.nodes.last().unwrap().clone();
    let texts: Vec<String> = (0..12)
        .map(|i| format!("Robot {i} stacked the red block on the blue one."))
        .collect();
    let mut ids = Vec::new();
    for t in &texts {
        ids.push(
            sub.submit(
                TaskInput {
                    kind: "embed".into(),
                    texts: vec![t.clone()],
                },
                Redundancy::Fixed(2),
            )
            .await
            .unwrap(),
        );
    }
    let ends = wait_all(&sub, &ids, Duration::from_secs(120)).await;
    assert!(ends.iter().all(|(_, s)| *s == Stage::Done), "{ends:?}");
    let st = sub.status().await.unwrap();
    assert_eq!(st.tasks, (0, 12, 0));
    assert_eq!(
        check_against_local(
            &m._dirs.last().unwrap().path().join("tasks.sqlite"),
            &models
        ),
        12
    );
    // Every verified result earned receipts: 12 tasks × 2 workers × 1 text.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut points = 0;
    for w in &m.nodes[..3] {
        let export = w.wallet().await.unwrap();
        assert_eq!(export.verify().unwrap(), export.points);
        points += export.points;
    }
    assert_eq!(points, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_worker_is_caught_excluded_and_unpaid() {
    let Some(models) = models_dir() else { return };
    let m = mesh(models, 4, &[2]).await;
    let sub = m.nodes.last().unwrap().clone();
    let mut ids = Vec::new();
    for i in 0..32 {
        ids.push(
            sub.submit(
                TaskInput {
                    kind: "embed".into(),
                    texts: vec![format!("sentence {i} about grasping")],
                },
                Redundancy::Fixed(2),
            )
            .await
            .unwrap(),
        );
    }
    let ends = wait_all(&sub, &ids, Duration::from_secs(180)).await;
    assert!(ends.iter().all(|(_, s)| *s == Stage::Done), "{ends:?}");
    let liar = m.nodes[1].wallet().await.unwrap();
    assert_eq!(liar.points, 0, "the liar was paid");
    let peers = sub.peers().await.unwrap();
    let liar_row = peers
        .iter()
        .find(|p| p.peer == m.nodes[1].peer_id.to_string())
        .unwrap();
    assert!(liar_row.excluded, "{peers:?}");
    assert!(
        sub.stats
            .disagreements
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_fans_out_over_the_network_and_comes_back_in_order() {
    let Some(models) = models_dir() else { return };
    let m = mesh(models.clone(), 3, &[]).await;
    let sub = m.nodes.last().unwrap().clone();
    let text = (0..300)
        .map(|i| format!("Step {i}: the arm moves."))
        .collect::<Vec<_>>()
        .join(" ");
    let input = TaskInput {
        kind: "chunk".into(),
        texts: vec![text],
    };
    let id = sub
        .submit(input.clone(), Redundancy::Fixed(2))
        .await
        .unwrap();
    let ends = wait_all(&sub, &[id], Duration::from_secs(120)).await;
    assert_eq!(ends[0].1, Stage::Done);
    // In order, and equal to a local run (spans and every chunk's embedding).
    assert_eq!(
        check_against_local(
            &m._dirs.last().unwrap().path().join("tasks.sqlite"),
            &models
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colluding_fresh_liars_cannot_get_honest_workers_excluded() {
    let Some(models) = models_dir() else { return };
    // Nodes 4 and 5 lie the same way (they agree with each other): Sybils.
    let m = mesh(models, 5, &[4, 5]).await;
    let sub = m.nodes.last().unwrap().clone();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            sub.submit(
                TaskInput {
                    kind: "embed".into(),
                    texts: vec![format!("collusion probe {i}")],
                },
                Redundancy::Fixed(2),
            )
            .await
            .unwrap(),
        );
    }
    let _ = wait_all(&sub, &ids, Duration::from_secs(240)).await;
    let peers = sub.peers().await.unwrap();
    for honest in &m.nodes[..3] {
        let row = peers
            .iter()
            .find(|p| p.peer == honest.peer_id.to_string())
            .unwrap();
        assert!(!row.excluded, "an honest worker was framed: {peers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_workers_and_a_liar_a_two_to_one_majority_verifies() {
    let Some(models) = models_dir() else { return };
    let m = mesh(models, 3, &[3]).await;
    let sub = m.nodes.last().unwrap().clone();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            sub.submit(
                TaskInput {
                    kind: "embed".into(),
                    texts: vec![format!("two against one {i}")],
                },
                Redundancy::Fixed(2),
            )
            .await
            .unwrap(),
        );
    }
    // Every capable peer answers; a 2-1 majority is taken (the liar unstruck but unpaid), none fails.
    let ends = wait_all(&sub, &ids, Duration::from_secs(120)).await;
    assert!(ends.iter().all(|(_, s)| *s == Stage::Done), "{ends:?}");
    assert_eq!(
        m.nodes[2].wallet().await.unwrap().points,
        0,
        "the liar was paid"
    );
}

/// Two submitters on one task store would share a peer id and resume the
/// same tasks, and two nodes on one wallet share an identity: the second is
/// refused (E127) until the first stops.
#[tokio::test]
async fn a_second_node_on_one_task_store_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = NodeConfig::new(dir.path().join("models"), dir.path().join("wallet"));
        c.serve = false;
        c.store = Some(dir.path().join("tasks.sqlite"));
        c
    };
    let (first, task) = start([7; 32], cfg()).await.unwrap();
    let refused = start([7; 32], cfg()).await.err().unwrap();
    assert_eq!(refused.code(), "E127", "{refused}");
    assert!(refused.to_string().contains("tasks.lock"), "{refused}");
    // Nor can a second node use its wallet (its identity), store or not.
    let mut same_wallet = cfg();
    same_wallet.store = None;
    let refused = start([7; 32], same_wallet).await.err().unwrap();
    assert_eq!(refused.code(), "E127", "{refused}");
    assert!(refused.to_string().contains("node.lock"), "{refused}");
    // A node with its own wallet and no store (a worker) is not held back.
    let mut worker = cfg();
    worker.store = None;
    worker.wallet_dir = dir.path().join("worker-wallet");
    assert!(start([8; 32], worker).await.is_ok());
    // The lock file is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tasks.lock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    drop(first);
    task.abort();
    let _ = task.await;
    assert!(start([7; 32], cfg()).await.is_ok());
}
