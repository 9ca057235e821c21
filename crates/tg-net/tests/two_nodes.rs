//! Two real nodes on loopback: frames small and chunked, and refusal of
//! oversized frames.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use tg_net::{Config, Event, Multiaddr, Role};
use tokio::sync::mpsc::Receiver;

fn node(role: Role, seed: u8) -> (tg_net::Client, Receiver<Event>) {
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let mut config = Config::new(role, vec![listen]);
    config.max_frame_bytes = 8 << 20;
    let (client, events, event_loop) = tg_net::new([seed; 32], config).unwrap();
    tokio::spawn(event_loop.run());
    (client, events)
}

async fn next_matching<T>(
    events: &mut Receiver<Event>,
    mut f: impl FnMut(Event) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = events.recv().await.expect("event loop stopped");
            if let Some(t) = f(e) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_both_ways_and_limits_hold() {
    let (coord, mut coord_events) = node(Role::Coordinator, 1);
    let (agent, mut agent_events) = node(Role::Agent, 2);
    let addr = next_matching(&mut coord_events, |e| match e {
        Event::Listening(a) => Some(a),
        _ => None,
    })
    .await;
    agent.dial(addr).await.unwrap();
    let coord_id = coord.local_peer_id();
    let agent_id = agent.local_peer_id();
    assert_eq!(
        tg_net::ed25519_key_of(&agent_id).map(|k| tg_net::peer_id_of(&k).unwrap()),
        Some(agent_id)
    );
    let role = next_matching(&mut agent_events, |e| match e {
        Event::Identified {
            peer,
            agent_version,
            ..
        } if peer == coord_id => Some(agent_version),
        _ => None,
    })
    .await;
    assert_eq!(Role::from_agent_version(&role), Some(Role::Coordinator));

    // Small frame, agent → coordinator.
    agent.send(coord_id, b"hello".to_vec()).await.unwrap();
    let got = next_matching(&mut coord_events, |e| match e {
        Event::Frame { peer, frame } if peer == agent_id => Some(frame),
        _ => None,
    })
    .await;
    assert_eq!(got, b"hello");

    // A chunked frame from a peer not yet admitted: nothing is buffered,
    // the sender is told to wait, the attempt is counted.
    let big: Vec<u8> = (0..(7 << 19)).map(|i: u32| (i % 251) as u8).collect();
    let early = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        agent.send(coord_id, big.clone()),
    )
    .await;
    assert!(early.is_err() || early.is_ok_and(|r| r.is_err()));
    assert!(
        coord
            .stats()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), async {
            next_matching(&mut coord_events, |e| match e {
                Event::Frame { .. } => Some(()),
                _ => None,
            })
            .await
        })
        .await
        .is_err(),
        "no frame from an unadmitted peer's chunks"
    );

    // Once admitted, a 3.5 MiB frame, coordinator → agent, in chunks.
    agent.allow_transfers(coord_id, true).await.unwrap();
    coord.allow_transfers(agent_id, true).await.unwrap();
    coord.send(agent_id, big.clone()).await.unwrap();
    let got = next_matching(&mut agent_events, |e| match e {
        Event::Frame { frame, .. } => Some(frame),
        _ => None,
    })
    .await;
    assert_eq!(got, big);

    // Above the receiver's limit: refused, counted.
    let huge = vec![0u8; 9 << 20];
    let e = agent.send(coord_id, huge).await.unwrap_err();
    assert!(e.to_string().contains("oversized"), "{e}");
    assert!(
        coord
            .stats()
            .oversized
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_over_quic() {
    let listen: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    let (coord, mut coord_events, event_loop) =
        tg_net::new([3; 32], Config::new(Role::Coordinator, vec![listen])).unwrap();
    tokio::spawn(event_loop.run());
    let (agent, _agent_events) = node(Role::Agent, 4);
    let addr = next_matching(&mut coord_events, |e| match e {
        Event::Listening(a) => Some(a),
        _ => None,
    })
    .await;
    assert!(addr.to_string().contains("quic-v1"), "{addr}");
    agent.dial(addr).await.unwrap();
    next_matching(&mut coord_events, |e| match e {
        Event::Connected { .. } => Some(()),
        _ => None,
    })
    .await;
    coord
        .allow_transfers(agent.local_peer_id(), true)
        .await
        .unwrap();
    // Every step of the sender's window ramp (chunk 0, chunk 1, a pair,
    // then the window), with a short last chunk or a whole one.
    for len in [(2 << 20) + 1, 3 << 20, (4 << 20) + 5, 9 << 20] {
        let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        agent
            .send(coord.local_peer_id(), big.clone())
            .await
            .unwrap();
        let got = next_matching(&mut coord_events, |e| match e {
            Event::Frame { frame, .. } => Some(frame),
            _ => None,
        })
        .await;
        assert_eq!(got, big, "{len}");
    }
}
