//! Held connections on two real nodes: an idle connection closes after the
//! idle timeout; a held one stays open until its hold runs out and then
//! closes like any other, also when the hold comes after the idle timer
//! started; a hold set before the connection exists applies to it once it
//! is made; and a hold on one end alone does not keep a connection the
//! other end lets go.

use std::time::{Duration, Instant};

use tg_net::{Config, Event, Multiaddr, Role};
use tokio::sync::mpsc::Receiver;

const IDLE: Duration = Duration::from_secs(2);

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

#[derive(Clone, Copy, PartialEq)]
enum When {
    /// `a` holds `b` before dialling it.
    BeforeDial,
    /// `a` holds `b` a quarter of an idle timeout after both ends identified.
    AfterIdleStarts,
}

/// Connects `a` to `b` and returns how long the connection lived once
/// both ends had identified each other (the last streams on it). `b`
/// holds `a` at that moment when `both` is set.
async fn lifetime(seed: u8, hold_for: Option<Duration>, when: When, both: bool) -> Duration {
    let (a, mut a_events) = node(seed);
    let (b, mut b_events) = node(seed + 1);
    let b_addr = wait_for(&mut b_events, |e| match e {
        Event::Listening(addr) => Some(addr),
        _ => None,
    })
    .await;
    let b_id = b.local_peer_id();
    if let (Some(d), When::BeforeDial) = (hold_for, when) {
        a.hold(b_id, d).await.unwrap();
    }
    a.dial(b_addr).await.unwrap();
    wait_for(&mut a_events, |e| match e {
        Event::Identified { peer, .. } if peer == b_id => Some(()),
        _ => None,
    })
    .await;
    let t0 = Instant::now();
    // A hold on one end keeps the connection open only if the other end
    // keeps it too: a task's submitter and worker both hold.
    if let (Some(d), true) = (hold_for, both) {
        b.hold(a.local_peer_id(), d).await.unwrap();
    }
    if let (Some(d), When::AfterIdleStarts) = (hold_for, when) {
        tokio::time::sleep(IDLE / 4).await;
        a.hold(b_id, d).await.unwrap();
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
    let hold = Duration::from_secs(8);
    let idle = lifetime(10, None, When::AfterIdleStarts, false).await;
    assert!(
        idle < Duration::from_secs(6),
        "an idle connection lived {idle:?}"
    );

    let held = lifetime(20, Some(hold), When::AfterIdleStarts, true).await;
    assert!(
        held >= hold,
        "a connection held for {hold:?} closed after {held:?}"
    );
    assert!(
        held < hold + Duration::from_secs(8),
        "a connection held for {hold:?} was still open after {held:?}"
    );

    // Set before the dial: the deadline runs from then, and dialling and
    // identifying take well under 3 s on loopback.
    let early = lifetime(30, Some(hold), When::BeforeDial, true).await;
    assert!(
        early >= hold - Duration::from_secs(3),
        "a hold set before dialling was ignored: closed after {early:?}"
    );

    let one_end = lifetime(40, Some(hold), When::AfterIdleStarts, false).await;
    assert!(
        one_end < Duration::from_secs(6),
        "a hold on one end kept the connection for {one_end:?}"
    );
}
