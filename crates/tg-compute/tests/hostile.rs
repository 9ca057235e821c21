//! A hostile peer speaking the real compute protocol over tg-net: garbage
//! bytes, oversize and malformed inputs, unknown kinds, forged receipts,
//! results signed by the wrong key, and replays. Each is refused with its
//! code and counted; the honest nodes keep running and the task still
//! completes. Needs MiniLM in target/models; skips with a message when absent.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failed setup

use std::sync::atomic::Ordering;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tg_compute::{Msg, NodeConfig, Receipt, Redundancy, SignedResult, TaskId, start};
use tg_tasks::{TaskInput, TaskOutput};

use tg_tasks::testing::models_dir;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_hostile_assignments_and_forged_receipts_and_keeps_serving() {
    let Some(models) = models_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = start([41; 32], worker_cfg(models, &dir)).await.unwrap();
    let addr = addr_of(&w).await;
    let mut r = rogue(9).await;
    r.client.dial(addr.parse().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to = w.peer_id;
    // Anyone may ask what a node can do now: its capability record.
    r.client.send(to, Msg::Probe.encode()).await.unwrap();
    match r.next(Duration::from_secs(10)).await {
        Some((_, Msg::Capability(c))) => {
            assert_eq!(c.protocol, tg_compute::COMPUTE_PROTOCOL);
            assert!(c.kinds.iter().any(|k| k == "embed"), "{c:?}");
            assert_eq!(c.cpu_cap_pct, 800);
            assert!(!c.over_caps, "{c:?}");
        }
        other => panic!("expected a capability record, got {other:?}"),
    }
    let id: TaskId = [1; 16];
    // Garbage and truncated bytes.
    r.client
        .send(to, b"not a compute message".to_vec())
        .await
        .unwrap();
    let mut truncated = Msg::Assign {
        task: id,
        input: TaskInput {
            kind: "embed".into(),
            texts: vec!["hello".into()],
        },
    }
    .encode();
    truncated.truncate(truncated.len() - 3);
    r.client.send(to, truncated).await.unwrap();
    // Oversize, malformed and unknown-kind assignments: each declined with its code.
    let cases = [
        (
            TaskInput {
                kind: "embed".into(),
                texts: vec!["x".repeat(tg_tasks::MAX_TEXT_BYTES + 1)],
            },
            "E122",
        ),
        (
            TaskInput {
                kind: "embed".into(),
                texts: vec![],
            },
            "E121",
        ),
        (
            TaskInput {
                kind: "embed".into(),
                texts: vec!["a\0b".into()],
            },
            "E121",
        ),
        (
            TaskInput {
                kind: "mine-bitcoin".into(),
                texts: vec!["x".into()],
            },
            "E123",
        ),
        (
            TaskInput {
                kind: "chunk".into(),
                texts: vec!["a".into(), "b".into()],
            },
            "E121",
        ),
    ];
    for (i, (input, code)) in cases.into_iter().enumerate() {
        let task = [i as u8 + 10; 16];
        r.client
            .send(to, Msg::Assign { task, input }.encode())
            .await
            .unwrap();
        let (_, m) = r.next(Duration::from_secs(10)).await.expect("no answer");
        match m {
            Msg::Decline {
                task: t, code: c, ..
            } => {
                assert_eq!(t, task);
                assert_eq!(c, code);
            }
            other => panic!("expected a decline with {code}, got {other:?}"),
        }
    }
    // A receipt signed by someone other than the sending peer, and one paying another worker.
    let other = SigningKey::from_bytes(&[77; 32]);
    let forged = Receipt::issue(
        &other,
        id,
        w.status().await.unwrap().node_key(),
        [0; 32],
        1_000,
        1,
    );
    r.client
        .send(to, Msg::Receipt(forged).encode())
        .await
        .unwrap();
    let not_theirs = Receipt::issue(&r.key, id, [5; 32], [0; 32], 1_000, 1);
    r.client
        .send(to, Msg::Receipt(not_theirs).encode())
        .await
        .unwrap();
    let mut tampered = Receipt::issue(
        &r.key,
        id,
        w.status().await.unwrap().node_key(),
        [0; 32],
        1,
        1,
    );
    tampered.points = 1_000_000;
    r.client
        .send(to, Msg::Receipt(tampered).encode())
        .await
        .unwrap();
    // Honestly signed by the sending peer, but for work the worker never did for it: minted points.
    let minted = Receipt::issue(
        &r.key,
        [42; 16],
        w.status().await.unwrap().node_key(),
        [0; 32],
        1_000,
        1,
    );
    r.client
        .send(to, Msg::Receipt(minted).encode())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        w.stats.refused.load(Ordering::Relaxed) >= 2 + 5 + 4,
        "refused {}",
        w.stats.refused.load(Ordering::Relaxed)
    );
    assert_eq!(w.wallet().await.unwrap().points, 0);
    // A chunk assignment (it fans out at the submitter) would run uncapped on the worker: refused.
    r.client
        .send(
            to,
            Msg::Assign {
                task: [98; 16],
                input: TaskInput {
                    kind: "chunk".into(),
                    texts: vec!["a long text. ".repeat(100)],
                },
            }
            .encode(),
        )
        .await
        .unwrap();
    let (_, m) = r.next(Duration::from_secs(10)).await.expect("no answer");
    assert!(matches!(m, Msg::Decline { code, .. } if code == "E121"));
    // It still serves a good task, and a receipt for it (more points than it was worth: refused; exact: stored).
    r.client
        .send(
            to,
            Msg::Assign {
                task: [99; 16],
                input: TaskInput {
                    kind: "embed".into(),
                    texts: vec!["still alive".into()],
                },
            }
            .encode(),
        )
        .await
        .unwrap();
    let res = loop {
        let (_, m) = r.next(Duration::from_secs(60)).await.expect("no result");
        if let Msg::Result(res) = m {
            assert_eq!(res.task, [99; 16]);
            res.verify(
                &TaskInput {
                    kind: "embed".into(),
                    texts: vec!["still alive".into()],
                },
                &res.worker,
            )
            .unwrap();
            break res;
        }
    };
    let greedy = Receipt::issue(&r.key, [99; 16], res.worker, res.output_digest, 2, 1);
    r.client
        .send(to, Msg::Receipt(greedy).encode())
        .await
        .unwrap();
    let fair = Receipt::issue(&r.key, [99; 16], res.worker, res.output_digest, 1, 1);
    r.client
        .send(to, Msg::Receipt(fair.clone()).encode())
        .await
        .unwrap();
    r.client
        .send(to, Msg::Receipt(fair).encode())
        .await
        .unwrap(); // a replay
    tokio::time::sleep(Duration::from_millis(500)).await;
    let export = w.wallet().await.unwrap();
    assert_eq!(export.points, 1, "{export:?}");
    assert_eq!(export.verify().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_refuses_results_signed_by_the_wrong_key_and_replays() {
    let Some(models) = models_dir() else { return };
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (w1, _) = start([51; 32], worker_cfg(models.clone(), &d1))
        .await
        .unwrap();
    let addr = addr_of(&w1).await;
    let mut c2 = worker_cfg(models.clone(), &d2);
    c2.bootstrap = vec![addr.parse().unwrap()];
    let (_w2, _) = start([52; 32], c2).await.unwrap();
    // The rogue advertises itself as an embed worker, then answers with forgeries.
    let mut r = rogue_provider(13, &addr).await;
    let mut sc = submitter_cfg(models, &d3, &addr);
    sc.per_worker = 64;
    let (sub, _) = start([53; 32], sc).await.unwrap();
    let mut progress = sub.progress();
    let input = |i: usize| TaskInput {
        kind: "embed".into(),
        texts: vec![format!("pick the cup {i}")],
    };
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(sub.submit(input(i), Redundancy::Fixed(2)).await.unwrap());
    }
    // Answer every assignment the rogue gets with a forgery.
    let other = SigningKey::from_bytes(&[66; 32]);
    let mut forged = 0;
    let mut kept: Option<(tg_net::PeerId, SignedResult)> = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < end && forged < 3 {
        let Some((peer, m)) = r.next(Duration::from_secs(5)).await else {
            continue;
        };
        if m == Msg::Probe {
            // It says what an honest worker says, so it is sampled for work.
            let c = able(tg_compute::COMPUTE_PROTOCOL, false);
            let _ = r.client.send(peer, Msg::Capability(c).encode()).await;
            continue;
        }
        if let Msg::Assign { task, input } = m {
            let unit = (1.0f32 / 384f32).sqrt();
            let out = TaskOutput::Embeddings(vec![vec![unit; 384]]); // well formed: only the binding is wrong
            let res = match forged % 3 {
                0 => SignedResult::sign(&other, task, &input, out, 0, 1), // another key than the peer's
                1 => SignedResult::sign(
                    &r.key,
                    task,
                    &TaskInput {
                        kind: "embed".into(),
                        texts: vec!["other".into()],
                    },
                    out,
                    0,
                    1,
                ), // another input
                _ => {
                    let mut s = SignedResult::sign(&r.key, task, &input, out, 0, 1);
                    let mut other = vec![0.0; 384];
                    other[0] = 1.0;
                    s.output = TaskOutput::Embeddings(vec![other]); // output changed after signing
                    s
                }
            };
            kept.get_or_insert((peer, res.clone()));
            r.client
                .send(peer, Msg::Result(res).encode())
                .await
                .unwrap();
            forged += 1;
        }
    }
    // Every task still completes, from the honest workers.
    let want: std::collections::HashSet<String> = ids.iter().map(hex::encode).collect();
    all_done(&mut progress, &want, Duration::from_secs(120)).await;
    assert!(forged >= 1, "the rogue was never assigned a task");
    assert!(
        sub.stats.refused.load(Ordering::Relaxed) >= forged as u64,
        "forgeries not refused"
    );
    // A replay of a result for a finished task is dropped, not counted as work.
    if let Some((peer, res)) = kept {
        let before = sub.stats.done.load(Ordering::Relaxed);
        r.client
            .send(peer, Msg::Result(res).encode())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sub.stats.done.load(Ordering::Relaxed), before);
    }
    if forged >= 2 {
        let peers = sub.peers().await.unwrap();
        let rogue_row = peers
            .iter()
            .find(|p| p.peer == r.client.local_peer_id().to_string())
            .expect("the rogue is connected");
        assert!(rogue_row.excluded, "{peers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_serving_bytes_that_do_not_match_the_pin_is_refused_and_banned() {
    let Some(_) = models_dir() else { return };
    // The rogue provides the model's key and answers every fetch with zeros of the right sizes.
    let mut r = rogue(17).await;
    let raddr = loop {
        if let Some(a) = r.client.listeners().await.unwrap().first() {
            break format!("{a}/p2p/{}", r.client.local_peer_id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("models");
    let mut cfg = NodeConfig::new(empty.clone(), dir.path().join("wallet"));
    cfg.bootstrap = vec![raddr.parse().unwrap()];
    let (b, _) = start([61; 32], cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.client
        .start_providing(&tg_compute::node::model_key(&tg_tasks::MINILM.id()))
        .await
        .unwrap();
    let mut served = 0;
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < end && b.stats.refused.load(Ordering::Relaxed) == 0 {
        let Some((peer, m)) = r.next(Duration::from_secs(2)).await else {
            continue;
        };
        if let Msg::Fetch { id, offset } = m {
            let file = tg_tasks::MINILM
                .file_by_id(&tg_tasks::ArtifactId(id))
                .expect("a pinned file");
            let len = (u64::from(tg_compute::ARTIFACT_PART_BYTES)).min(file.size - offset) as usize;
            r.client
                .send(
                    peer,
                    Msg::Part {
                        id,
                        offset,
                        total: file.size,
                        data: vec![0; len],
                    }
                    .encode(),
                )
                .await
                .unwrap();
            served += 1;
        }
    }
    assert!(served >= 1, "the node never asked the rogue provider");
    assert!(
        b.stats.refused.load(Ordering::Relaxed) >= 1,
        "the bad file was not refused"
    );
    for f in tg_tasks::MINILM.files {
        assert!(
            !empty.join(tg_tasks::MINILM.dir).join(f.name).exists(),
            "{} was kept",
            f.name
        );
    }
    // Banned: it is not asked again, and the node keeps running.
    let again = r.next(Duration::from_secs(5)).await;
    assert!(
        !matches!(again, Some((_, Msg::Fetch { .. }))),
        "asked the banned provider again"
    );
    assert!(b.status().await.is_ok());
}
