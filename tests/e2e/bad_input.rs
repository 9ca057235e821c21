//! Bad input: an unenrolled peer, a bad signature, a replayed message, an
//! oversized or truncated frame — each rejected, counted in the metrics, and
//! the coordinator keeps serving (the real agents then finish the job).

use std::time::Duration;

use crate::common::*;
use ed25519_dalek::SigningKey;
use tg_net::{Event, PeerId};
use tg_proto::signed;
use tg_proto::{JoinRequest, ToAgent, ToCoordinator};
use tg_types::JobId;

/// A hand-driven peer speaking the frame protocol to the coordinator.
struct Intruder {
    rt: tokio::runtime::Runtime,
    client: tg_net::Client,
    events: tokio::sync::mpsc::Receiver<Event>,
    coordinator: PeerId,
    key: SigningKey,
    job: JobId,
}

impl Intruder {
    fn connect(addr: &str, seed: u8) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = SigningKey::from_bytes(&[seed; 32]);
        let addr: tg_net::Multiaddr = addr.parse().unwrap();
        let coordinator = tg_agent_peer(&addr);
        let coord_key = tg_net::ed25519_key_of(&coordinator).unwrap();
        let (client, mut events, event_loop) = {
            let _g = rt.enter();
            let (c, e, l) = tg_net::new(
                key.to_bytes(),
                tg_net::Config::new(tg_net::Role::Agent, vec![]),
            )
            .unwrap();
            (c, e, l)
        };
        rt.spawn(event_loop.run());
        rt.block_on(client.dial(addr)).unwrap();
        let job = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let Some(Event::Frame { peer, frame }) = events.recv().await else {
                        continue;
                    };
                    if peer != coordinator {
                        continue;
                    }
                    if let Ok((_, ToAgent::Offer(o))) = signed::open::<ToAgent>(&frame, &coord_key)
                    {
                        return o.job;
                    }
                }
            })
            .await
            .expect("the coordinator offers its job")
        });
        Self {
            rt,
            client,
            events,
            coordinator,
            key,
            job,
        }
    }

    fn send(&self, frame: Vec<u8>) {
        let _ = self.rt.block_on(self.client.send(self.coordinator, frame));
    }

    fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self
            .rt
            .block_on(self.client.send_raw(self.coordinator, bytes));
    }

    fn join(&self, token: Option<String>) -> ToCoordinator {
        ToCoordinator::Join(JoinRequest {
            job: self.job,
            name: "intruder".into(),
            token,
            evidence: None,
            certificate: None,
        })
    }

    /// Waits for the coordinator's answer to a join.
    fn answer(&mut self) -> Option<ToAgent> {
        let coord_key = tg_net::ed25519_key_of(&self.coordinator).unwrap();
        let events = &mut self.events;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let Some(Event::Frame { frame, .. }) = events.recv().await else {
                        continue;
                    };
                    if let Ok((_, m)) = signed::open::<ToAgent>(&frame, &coord_key)
                        && matches!(m, ToAgent::Welcome { .. } | ToAgent::Refused { .. })
                    {
                        return m;
                    }
                }
            })
            .await
            .ok()
        })
    }
}

fn tg_agent_peer(addr: &tg_net::Multiaddr) -> PeerId {
    addr.iter()
        .find_map(|p| match p {
            tg_net::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .unwrap()
}

/// Starts a coordinator with /metrics, lets `attack` misbehave, checks that
/// `reason` was counted, then lets 3 real agents finish the job.
fn served_after(reasons: &[&str], attack: impl FnOnce(&mut Fleet, &str)) {
    let opts = JobOpts {
        clients: 3,
        rounds: 2,
        min_clients: 2,
        secure: None,
        local_epochs: 1,
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let api = format!("127.0.0.1:{}", free_port());
    fleet.coord_args = vec!["--api".into(), api.clone()];
    let addr = fleet.start_coordinator();
    attack(&mut fleet, &addr);
    for reason in reasons {
        let key = format!("tensorguard_coordinator_rejected_messages_total{{reason=\"{reason}\"}}");
        let counted = wait_for(Duration::from_secs(20), || {
            let m = metric(&scrape(&api), &key);
            (m >= 1.0).then_some(m)
        });
        assert!(
            counted.is_some(),
            "{key} not counted:\n{}\n{}",
            scrape(&api),
            fleet.log("coordinator.err")
        );
    }
    // The REST API on the same address: bearer tokens, roles.
    assert_eq!(http_get(&api, "/api/v1/jobs", None).0, 401);
    let token = crate::common::served::token(&fleet.coord_dir(), "viewer");
    let (status, body) = http_get(&api, "/api/v1/jobs", Some(&token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"jobs\""), "{body}");
    // Without --serve this process ends with its job: it queues nothing.
    let operator = crate::common::served::token(&fleet.coord_dir(), "operator");
    let (status, body) =
        crate::common::http_request(&api, "POST", "/api/v1/jobs", Some(&operator), &opts.toml());
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--serve"), "{body}");
    let tokens = fleet.tokens(3);
    for (i, t) in tokens.iter().enumerate() {
        fleet.start_agent(i, 3, &addr, Some(t));
    }
    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(180));
    assert!(status.success(), "{}", fleet.log("coordinator.err"));
    assert_eq!(
        summary["rounds_committed"], 2,
        "the coordinator kept serving: {summary}"
    );
}

#[test]
fn an_unenrolled_peer_is_refused() {
    served_after(&["unenrolled"], |fleet, addr| {
        // A real agent process without a token: refused with E070, exit 2.
        fleet.start_agent(7, 10, addr, None);
        let c = fleet.agents[7].as_mut().unwrap();
        let status = wait_child(c, Duration::from_secs(30)).expect("the refused agent exits");
        assert_eq!(status.code(), Some(2));
        assert!(
            fleet.log("agent-7.err").contains("E070"),
            "{}",
            fleet.log("agent-7.err")
        );
    });
}

#[test]
fn a_bad_signature_is_refused() {
    served_after(&["bad_signature"], |_, addr| {
        let intruder = Intruder::connect(addr, 9);
        // Signed by another key than the connection's identity.
        let other = SigningKey::from_bytes(&[10; 32]);
        intruder.send(signed::seal(&other, 1, &intruder.join(None)).unwrap());
        // Signed by the right key, then altered.
        let mut frame = signed::seal(&intruder.key, 2, &intruder.join(None)).unwrap();
        let n = frame.len();
        frame[n - 1] ^= 0x40;
        intruder.send(frame);
    });
}

#[test]
fn a_replayed_message_is_refused() {
    served_after(&["replay"], |fleet, addr| {
        let token = fleet.tokens(1).remove(0);
        let mut intruder = Intruder::connect(addr, 11);
        let join = signed::seal(&intruder.key, 5, &intruder.join(Some(token))).unwrap();
        intruder.send(join.clone());
        assert!(
            matches!(intruder.answer(), Some(ToAgent::Welcome { .. })),
            "a real enrollment is admitted"
        );
        // The same bytes again, later: refused as a replay.
        intruder.send(join);
        // And an older nonce with a fresh signature: refused too.
        intruder.send(signed::seal(&intruder.key, 4, &intruder.join(None)).unwrap());
        drop(intruder); // its connection closes; the job waits for the 3 real agents
    });
}

#[test]
fn oversized_and_truncated_frames_are_refused() {
    served_after(&["oversized_frame", "truncated_frame"], |_, addr| {
        let intruder = Intruder::connect(addr, 12);
        let mut oversized = (u32::MAX - 1).to_be_bytes().to_vec();
        oversized.extend([0u8; 64]);
        intruder.send_raw(oversized);
        let mut truncated = 1000u32.to_be_bytes().to_vec();
        truncated.extend([1u8; 10]);
        intruder.send_raw(truncated);
    });
}
