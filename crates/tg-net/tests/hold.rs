//! Held connections on two real nodes: an idle connection closes after the
//! idle timeout, a held one stays open until its hold runs out and then
//! closes like any other, and a hold set before the connection exists
//! applies to it once it is made.

use std::time::{Duration, Instant};

use tg_net::{Config, Event, Multiaddr, Role};
use tokio::sync::mpsc::Receiver;

const IDLE: Duration = Duration::from_secs(1);

fn node(seed: u8) -> (tg_net::Client, Receiver<Event>) {
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let mut config = Config::new(Role::Compute, vec![listen]);
    config.idle_timeout = IDLE;
    let (client, events, event_loop) = tg_net::new([seed; 32], config).unwrap();
    tokio::spawn(event_loop.run());
    (client, events)
}

async fn wait_for<T>(events: &mut Receiver<Event>, mut f: impl FnMut(Event) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(t) = f(events.recv().await.expect("event loop stopped")) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

/// Connects `a` to `b` and returns how long the connection lived once
/// both ends had identified each other (the last streams on it).
async fn lifetime(seed: u8, hold_for: Option<Duration>, hold_first: bool) -> Duration {
    let (a, mut a_events) = node(seed);
    let (b, mut b_events) = node(seed + 1);
    let b_addr = wait_for(&mut b_events, |e| match e {
        Event::Listening(addr) => Some(addr),
        _ => None,
    })
    .await;
    let b_id = b.local_peer_id();
    if let (Some(d), true) = (hold_for, hold_first) {
        a.hold(b_id, d).await.unwrap();
    }
    a.dial(b_addr).await.unwrap();
    wait_for(&mut a_events, |e| match e {
        Event::Identified { peer, .. } if peer == b_id => Some(()),
        _ => None,
    })
    .await;
    let t0 = Instant::now();
    if let (Some(d), false) = (hold_for, hold_first) {
        a.hold(b_id, d).await.unwrap();
    }
    // A hold on one end keeps the connection open only if the other end
    // keeps it too: hold it on both, as a task's submitter and worker do.
    if let Some(d) = hold_for {
        b.hold(a.local_peer_id(), d).await.unwrap();
    }
    wait_for(&mut a_events, |e| match e {
        Event::Disconnected { peer } if peer == b_id => Some(()),
        _ => None,
    })
    .await;
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closes_and_a_held_one_lasts_until_its_hold_ends() {
    let idle = lifetime(10, None, false).await;
    assert!(
        idle < Duration::from_secs(6),
        "an idle connection lived {idle:?}"
    );

    let hold = Duration::from_secs(5);
    let held = lifetime(20, Some(hold), false).await;
    assert!(
        held >= hold,
        "a connection held for {hold:?} closed after {held:?}"
    );
    assert!(
        held < hold + Duration::from_secs(8),
        "a connection held for {hold:?} was still open after {held:?}"
    );

    let early = lifetime(30, Some(hold), true).await;
    assert!(
        early >= hold - Duration::from_secs(1),
        "a hold set before dialling was ignored: closed after {early:?}"
    );
}
