//! Reassembly against the peers it bounds: strangers, over-announcers,
//! Sybils that stop sending, and a receiver that is itself busy.

use super::*;

fn admitted(r: &mut Reassembly) -> PeerId {
    let peer = PeerId::random();
    r.allow(peer, true);
    peer
}

#[test]
fn reassembles_out_of_order() {
    let mut r = Reassembly::new(1 << 30, Duration::from_secs(60));
    let peer = admitted(&mut r);
    let frame: Vec<u8> = (0..(CHUNK_BYTES * 2 + 10)).map(|i| i as u8).collect();
    let parts: Vec<_> = chunks(&frame).collect();
    assert_eq!(parts.len(), 3);
    let total = frame.len() as u64;
    assert_eq!(r.accept(peer, 1, total, 0, parts[0].1.to_vec()), Ok(None));
    assert_eq!(r.accept(peer, 1, total, 2, parts[2].1.to_vec()), Ok(None));
    let done = r.accept(peer, 1, total, 1, parts[1].1.to_vec()).unwrap();
    assert_eq!(done.as_deref(), Some(&frame[..]));
    assert_eq!((r.buffered(), r.reserved()), (0, 0));
}

#[test]
fn enforces_limits() {
    let mut r = Reassembly::new(10 << 20, Duration::from_secs(60));
    let peer = admitted(&mut r);
    assert!(matches!(
        r.accept(peer, 1, 11 << 20, 0, vec![0; CHUNK_BYTES]),
        Err(ChunkError::TooLarge { .. })
    ));
    for t in 0..MAX_TRANSFERS_PER_PEER as u64 {
        r.accept(peer, t, 3 << 20, 0, vec![0; CHUNK_BYTES]).unwrap();
    }
    assert_eq!(
        r.accept(peer, 99, 3 << 20, 0, vec![0; CHUNK_BYTES]),
        Err(ChunkError::TooManyTransfers)
    );
    assert!(matches!(
        r.accept(peer, 0, 3 << 20, 7, vec![0; 3]),
        Err(ChunkError::Inconsistent(_))
    ));
    assert_eq!(r.expire(Some(&peer)), MAX_TRANSFERS_PER_PEER - 1);
}

#[test]
fn an_unadmitted_peer_cannot_open_a_transfer() {
    // The review's attack: before admission, announce a 4 GiB frame and
    // send its last byte.
    let mut r = Reassembly::new(u64::MAX, Duration::from_secs(60));
    let stranger = PeerId::random();
    // (Even with no frame limit at all.)
    let total = 4u64 << 30;
    let last = (total.div_ceil(CHUNK_BYTES as u64) - 1) as u32;
    let tail = (total - u64::from(last) * CHUNK_BYTES as u64) as usize;
    assert_eq!(
        r.accept(stranger, 1, total, last, vec![0; tail]),
        Err(ChunkError::NotAdmitted)
    );
    assert_eq!(r.buffered(), 0);
    // Revoked admission stops a peer again and frees what it held.
    let peer = admitted(&mut r);
    r.accept(peer, 1, 3 << 20, 0, vec![1; CHUNK_BYTES]).unwrap();
    r.allow(peer, false);
    assert_eq!((r.buffered(), r.reserved()), (0, 0));
    assert_eq!(
        r.accept(peer, 1, 3 << 20, 1, vec![1; CHUNK_BYTES]),
        Err(ChunkError::NotAdmitted)
    );
}

#[test]
fn a_transfer_opens_only_with_its_first_chunk() {
    // The largest frame's 1-byte last chunk from an admitted peer holds
    // nothing, and a sender whose transfer is gone hears so rather than
    // believing its frame delivered.
    let limit = 256u64 << 20;
    let mut r = Reassembly::new(limit, Duration::from_secs(60));
    let peer = admitted(&mut r);
    let total = limit - (CHUNK_BYTES as u64 - 1);
    let last = (total.div_ceil(CHUNK_BYTES as u64) - 1) as u32;
    for index in [last, 1] {
        let len = if index == last { 1 } else { CHUNK_BYTES };
        assert!(matches!(
            r.accept(peer, 1, total, index, vec![7; len]),
            Err(ChunkError::Inconsistent(_))
        ));
    }
    assert_eq!((r.buffered(), r.reserved()), (0, 0));
    assert_eq!(r.accept(peer, 1, total, 0, vec![7; CHUNK_BYTES]), Ok(None));
    assert_eq!(r.buffered(), CHUNK_BYTES);
    assert_eq!(r.reserved(), total as usize);
}

#[test]
fn reservations_are_bounded_per_peer_and_in_total_and_admitted_transfers_complete() {
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 4 * chunk, 6 * chunk, Duration::from_secs(60));
    let a = admitted(&mut r);
    let b = admitted(&mut r);
    let c = admitted(&mut r);
    // A frame larger than a peer may ever reserve can never complete.
    assert!(matches!(
        r.accept(a, 9, 5 * chunk as u64, 0, vec![0; chunk]),
        Err(ChunkError::TooLarge { .. })
    ));
    // a reserves 3 chunks' worth, then cannot open 2 more (per peer).
    r.accept(a, 1, 3 * chunk as u64, 0, vec![0; chunk]).unwrap();
    assert_eq!(
        r.accept(a, 2, 2 * chunk as u64, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    // b takes the rest of the total; c must wait.
    r.accept(b, 1, 3 * chunk as u64, 0, vec![0; chunk]).unwrap();
    assert_eq!(
        r.accept(c, 1, chunk as u64 + 1, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    assert_eq!(r.reserved(), 6 * chunk);
    // Admitted transfers complete, and their reservation is returned.
    r.accept(a, 1, 3 * chunk as u64, 1, vec![0; chunk]).unwrap();
    let done = r.accept(a, 1, 3 * chunk as u64, 2, vec![0; chunk]).unwrap();
    assert_eq!(done.map(|f| f.len()), Some(3 * chunk));
    assert_eq!(r.reserved(), 3 * chunk);
    r.accept(c, 1, chunk as u64 + 1, 0, vec![0; chunk]).unwrap();
    // A peer that leaves returns what it held.
    r.expire(Some(&b));
    assert_eq!((r.reserved(), r.buffered()), (chunk + 1, chunk));
}

#[test]
fn a_reservation_is_kept_only_by_sending() {
    // The review's attack on whole-size reservations: admitted Sybils open
    // the largest frames, then stop sending, so honest uploads find the
    // total reserved. Here a chunk is due every 50 ms after no grace.
    let chunk = CHUNK_BYTES;
    let rate = (chunk * 20) as u64;
    let frame: Vec<u8> = (0..3 * chunk).map(|i| i as u8).collect();
    let parts: Vec<_> = chunks(&frame).collect();
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 6 * chunk, Duration::from_secs(60))
        .with_rate(rate, Duration::ZERO);
    let sybils: Vec<PeerId> = (0..2).map(|_| admitted(&mut r)).collect();
    for s in &sybils {
        r.accept(*s, 1, 3 * chunk as u64, 0, vec![0; chunk])
            .unwrap();
    }
    let honest = admitted(&mut r);
    assert_eq!(
        r.accept(honest, 7, frame.len() as u64, 0, parts[0].1.to_vec()),
        Err(ChunkError::OverBudget)
    );
    std::thread::sleep(Duration::from_millis(200));
    // Behind the rate, the Sybils' reservations go when room is needed; an
    // honest sender that keeps up completes.
    let mut done = None;
    for (i, part) in &parts {
        done = r
            .accept(honest, 7, frame.len() as u64, *i, part.to_vec())
            .unwrap();
    }
    assert_eq!(done.as_deref(), Some(&frame[..]));
    // Just enough room was made: one Sybil's reservation went.
    assert_eq!((r.buffered(), r.reserved()), (chunk, 3 * chunk));
    // The dropped Sybil's next chunk is refused: it is told, not fooled;
    // and it gets no second grace by opening another transfer.
    let next = |r: &mut Reassembly, s: PeerId| r.accept(s, 1, 3 * chunk as u64, 1, vec![0; chunk]);
    let (dropped, kept) = if next(&mut r, sybils[0]).is_err() {
        (sybils[0], sybils[1])
    } else {
        (sybils[1], sybils[0])
    };
    assert!(matches!(
        next(&mut r, dropped),
        Err(ChunkError::Inconsistent(_))
    ));
    assert_eq!(
        r.accept(dropped, 2, 3 * chunk as u64, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    let _ = next(&mut r, kept);
}

#[test]
fn a_slow_transfer_is_dropped_only_when_room_is_needed() {
    // The receiver's own link may be what is slow: with no one waiting,
    // transfers behind the rate keep going; only idle ones time out.
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 6 * chunk, Duration::from_secs(60))
        .with_rate((chunk * 20) as u64, Duration::ZERO);
    let peer = admitted(&mut r);
    r.accept(peer, 1, 3 * chunk as u64, 0, vec![0; chunk])
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(r.expire(None), 0);
    r.accept(peer, 1, 3 * chunk as u64, 1, vec![0; chunk])
        .unwrap();
    let done = r
        .accept(peer, 1, 3 * chunk as u64, 2, vec![0; chunk])
        .unwrap();
    assert_eq!(done.map(|f| f.len()), Some(3 * chunk));
}

#[test]
fn the_receiver_s_own_busy_time_is_not_held_against_senders() {
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 6 * chunk, Duration::from_secs(60))
        .with_rate((chunk * 20) as u64, Duration::ZERO);
    let (a, b, c) = (admitted(&mut r), admitted(&mut r), admitted(&mut r));
    for p in [a, b] {
        r.accept(p, 1, 3 * chunk as u64, 0, vec![0; chunk]).unwrap();
    }
    // The receiver's queue is full: no one can send, so no one is behind.
    r.receiver_busy();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        r.accept(c, 1, 3 * chunk as u64, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    r.receiver_ready();
    assert_eq!(
        r.accept(c, 1, 3 * chunk as u64, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    // Once the receiver has had room, silence counts.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        r.accept(c, 1, 3 * chunk as u64, 0, vec![0; chunk]),
        Ok(None)
    );
}

#[test]
fn room_freed_while_others_wait_carries_no_grace() {
    // The reviews' rotation attack: one Sybil frees room and the next takes
    // it at once, each with a fresh grace, so an honest sender that has
    // been waiting never gets in. Here the grace is long (10 s): a transfer
    // opened while room is contended still has to pay from its first chunk.
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 6 * chunk, Duration::from_secs(60))
        .with_rate((chunk * 20) as u64, Duration::from_secs(10));
    let (a, s1, s2, honest) = (
        admitted(&mut r),
        admitted(&mut r),
        admitted(&mut r),
        admitted(&mut r),
    );
    let three = 3 * chunk as u64;
    for p in [a, s1] {
        r.accept(p, 1, three, 0, vec![0; chunk]).unwrap();
    }
    assert_eq!(
        r.accept(honest, 1, three, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    // s1 breaks its transfer off (and may not reopen); s2 grabs the room.
    assert!(matches!(
        r.accept(s1, 1, three, 1, vec![0; 7]),
        Err(ChunkError::Inconsistent(_))
    ));
    r.accept(s2, 1, three, 0, vec![0; chunk]).unwrap();
    assert_eq!(
        r.accept(s1, 2, three, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    // s2 had no grace: once behind, the honest sender's next try gets in.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(r.accept(honest, 1, three, 0, vec![0; chunk]), Ok(None));
    assert!(matches!(
        r.accept(s2, 1, three, 1, vec![0; chunk]),
        Err(ChunkError::Inconsistent(_))
    ));
}

#[test]
fn a_transfer_left_to_time_out_while_others_wait_costs_its_peer_a_fresh_start() {
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 3 * chunk, Duration::from_millis(50));
    let (peer, other) = (admitted(&mut r), admitted(&mut r));
    let three = 3 * chunk as u64;
    // No one waited: a timeout (say, a lost connection) costs nothing.
    r.accept(peer, 1, three, 0, vec![0; chunk]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.expire(None), 1);
    r.accept(peer, 2, three, 0, vec![0; chunk]).unwrap();
    // Someone asked for the room it held: then it does.
    assert_eq!(
        r.accept(other, 1, three, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.expire(None), 1);
    assert_eq!(
        r.accept(peer, 3, three, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    r.accept(other, 1, three, 0, vec![0; chunk]).unwrap();
}

#[test]
fn a_first_chunk_probe_of_a_few_bytes_asks_for_no_room() {
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 3 * chunk, Duration::from_secs(60));
    let (a, sybil) = (admitted(&mut r), admitted(&mut r));
    r.accept(a, 1, 3 * chunk as u64, 0, vec![0; chunk]).unwrap();
    assert!(matches!(
        r.accept(sybil, 1, 3 * chunk as u64, 0, vec![]),
        Err(ChunkError::Inconsistent(_))
    ));
    // Nor a one-byte "transfer" (a frame that small is sent whole).
    assert!(matches!(
        r.accept(sybil, 3, 1, 0, vec![0]),
        Err(ChunkError::Inconsistent(_))
    ));
    // Refused as malformed before any room was asked for (nothing was
    // dropped), and without holding anything.
    assert_eq!(r.reserved(), 3 * chunk);
    r.accept(a, 1, 3 * chunk as u64, 1, vec![0; chunk]).unwrap();
    r.accept(a, 1, 3 * chunk as u64, 2, vec![0; chunk]).unwrap();
    r.accept(sybil, 2, 3 * chunk as u64, 0, vec![0; chunk])
        .unwrap();
}

#[test]
fn nothing_is_dropped_unless_dropping_makes_the_room() {
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 3 * chunk, 6 * chunk, Duration::from_secs(60))
        .with_rate((chunk * 20) as u64, Duration::ZERO);
    let (slow, greedy) = (admitted(&mut r), admitted(&mut r));
    r.accept(slow, 1, 2 * chunk as u64, 0, vec![0; chunk])
        .unwrap();
    r.accept(greedy, 1, 3 * chunk as u64, 0, vec![0; chunk])
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Only the asker's own budget is in its way: the slow transfer stays.
    assert_eq!(
        r.accept(greedy, 2, chunk as u64 + 1, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
    assert_eq!(r.reserved(), 5 * chunk);
    // A malformed chunk breaks a transfer off, and costs a fresh grace.
    assert!(matches!(
        r.accept(slow, 1, 2 * chunk as u64, 1, vec![0; 3]),
        Err(ChunkError::Inconsistent(_))
    ));
    assert_eq!(
        r.accept(slow, 2, 2 * chunk as u64, 0, vec![0; chunk]),
        Err(ChunkError::OverBudget)
    );
}

#[test]
fn a_larger_reservation_must_be_paid_for_faster() {
    // One chunk a second would keep a small reservation, not a large one:
    // holding S costs sending about S per MAX_TRANSFER_TIME.
    let chunk = CHUNK_BYTES;
    let mut r = Reassembly::with_budgets(64 << 20, 8 * chunk, 10 * chunk, Duration::from_secs(60))
        .with_rate(1, Duration::ZERO)
        .with_max_time(Duration::from_secs(4));
    let (small, large, honest) = (admitted(&mut r), admitted(&mut r), admitted(&mut r));
    r.accept(small, 1, 2 * chunk as u64, 0, vec![0; chunk])
        .unwrap();
    r.accept(large, 1, 8 * chunk as u64, 0, vec![0; chunk])
        .unwrap();
    // 1 s in: the small one is on time (half a chunk of its 2 due), the
    // large one (2 of its 8 due, 1 sent) is not.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        r.accept(honest, 1, 2 * chunk as u64, 0, vec![0; chunk]),
        Ok(None)
    );
    assert_eq!(r.reserved(), 4 * chunk);
    assert!(matches!(
        r.accept(large, 1, 8 * chunk as u64, 1, vec![0; chunk]),
        Err(ChunkError::Inconsistent(_))
    ));
}
