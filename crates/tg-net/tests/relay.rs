//! A node behind a relay: a real libp2p circuit-relay server on loopback
//! accepts a tg-net node's reservation, the node then listens on its circuit
//! address (what `status` reports as `relayed`), and a second node reaches
//! it through the relay and delivers a frame.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, relay, tcp, yamux};
use tg_net::{Config, Event, Multiaddr, Role};

#[derive(NetworkBehaviour)]
struct RelayServer {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// A relay on 127.0.0.1, driven in the background; its address with its id.
async fn relay_server() -> Multiaddr {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| RelayServer {
            relay: relay::Behaviour::new(key.public().to_peer_id(), Default::default()),
            identify: identify::Behaviour::new(identify::Config::new(
                "/tensorguard/1".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let id = *swarm.local_peer_id();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    // Reservations carry the relay's confirmed addresses.
    swarm.add_external_address(addr.clone());
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    addr.with(Protocol::P2p(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_relay_listens_on_its_circuit_and_is_reached_through_it() {
    let relay = relay_server().await;
    // The node behind the relay: no direct listener at all.
    let mut config = Config::new(Role::Compute, Vec::new());
    config.relays = vec![relay.clone()];
    let (behind, mut events, event_loop) = tg_net::new([31; 32], config).unwrap();
    tokio::spawn(event_loop.run());
    let circuit = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await.expect("event loop stopped") {
                Event::Listening(a) if a.iter().any(|p| matches!(p, Protocol::P2pCircuit)) => {
                    break a;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the relay did not accept a reservation");
    // Another node dials the circuit address and delivers a frame.
    let config = Config::new(Role::Compute, vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]);
    let (other, _other_events, event_loop) = tg_net::new([32; 32], config).unwrap();
    tokio::spawn(event_loop.run());
    let target = if matches!(circuit.iter().last(), Some(Protocol::P2p(_))) {
        circuit
    } else {
        circuit.with(Protocol::P2p(behind.local_peer_id()))
    };
    other.dial(target).await.unwrap();
    let me = other.local_peer_id();
    let mut sent = false;
    for _ in 0..100 {
        if other
            .send(behind.local_peer_id(), b"through the relay".to_vec())
            .await
            .is_ok()
        {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "no frame reached the node behind the relay");
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Event::Frame { peer, frame } = events.recv().await.expect("event loop stopped")
                && peer == me
            {
                break frame;
            }
        }
    })
    .await
    .expect("the frame did not arrive");
    assert_eq!(got, b"through the relay");
}
