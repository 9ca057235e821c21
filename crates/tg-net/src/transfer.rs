//! Reassembly of frames sent as chunks.
//!
//! Design decision: memory is bounded by policy, not by trust, and holding
//! it costs the bytes held.
//! - Only peers the application has admitted ([`Reassembly::allow`]) may
//!   send chunked (multi-chunk) frames at all; anyone else can send single
//!   frames of at most one chunk, enough for a join request.
//! - A transfer's announced size is capped at the frame limit, and its
//!   chunks are stored sparsely as they arrive: a peer that announces a huge
//!   frame and sends its last byte holds one byte, not the whole buffer.
//! - Per peer, a transfer *promises* its whole announced size when it opens,
//!   within [`PEER_BUDGET`]; a peer that over-announces blocks only itself.
//! - In total, only bytes that have arrived count, within [`TOTAL_BUDGET`].
//!   So what one peer keeps from the others it must really have sent (an
//!   announced size alone holds nothing). All transfers but one stop
//!   (answered "busy") at the budget minus one largest frame; that one, the
//!   *holder*, may use the headroom, so it can always complete. The holder
//!   is the oldest transfer still receiving chunks: one idle for [`LIVE`]
//!   while another's chunk is refused for room is dropped, so a peer that
//!   trickles cannot keep the headroom from the others.
//! - A transfer opens only with one of its first [`SEND_WINDOW`] chunks
//!   (senders start there); a later chunk of a transfer the receiver does
//!   not hold is refused, so a sender whose transfer was dropped learns it
//!   instead of believing the frame delivered.
//! - Time the receiver itself spends answering "busy" (its queue full)
//!   counts as activity: senders back off then through no fault of theirs.
//! - A peer holds at most [`MAX_TRANSFERS_PER_PEER`] partial frames, and a
//!   transfer whose chunks stop arriving is dropped after a timeout.
//!
//! Senders keep only a bounded window of chunks in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::codec::CHUNK_BYTES;

/// Partial frames one peer may have open at once.
pub const MAX_TRANSFERS_PER_PEER: usize = 4;

/// Chunks of one frame a sender keeps in flight.
pub const SEND_WINDOW: usize = 4;

/// How long the headroom holder may go without a chunk while another
/// transfer waits for room.
pub const LIVE: Duration = Duration::from_secs(10);

/// Most bytes one peer's open transfers may announce together.
pub const PEER_BUDGET: usize = 512 << 20;

/// Most bytes all open transfers may hold together.
pub const TOTAL_BUDGET: usize = 2 << 30;

/// Splits a frame into chunk payloads (borrowed).
pub fn chunks(frame: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    frame
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, c)| (i as u32, c))
}

struct Partial {
    total: u64,
    /// Bytes promised to this transfer within its peer's budget (its
    /// announced size).
    reserved: usize,
    /// Order of opening: the least open one is the oldest.
    opened: u64,
    /// Chunks received so far, by index (sparse).
    parts: BTreeMap<u32, Vec<u8>>,
    count: usize,
    touched: Instant,
}

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The frame would exceed the receiver's limit.
    TooLarge {
        /// Announced total.
        total: u64,
        /// Limit.
        limit: u64,
    },
    /// The peer has too many partial frames open.
    TooManyTransfers,
    /// The chunk does not fit the transfer (bad index, length or total).
    Inconsistent(&'static str),
    /// The peer has not been admitted: it may not send chunked frames.
    NotAdmitted,
    /// Buffering the chunk would pass the per-peer or total bound; the
    /// sender should retry later.
    OverBudget,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { total, limit } => {
                write!(f, "oversized frame: {total} bytes, limit {limit}")
            }
            Self::TooManyTransfers => write!(
                f,
                "too many transfers open (limit {MAX_TRANSFERS_PER_PEER} per peer)"
            ),
            Self::Inconsistent(why) => write!(f, "malformed chunk: {why}"),
            Self::NotAdmitted => write!(
                f,
                "chunked frames are accepted only from admitted peers (join first)"
            ),
            Self::OverBudget => write!(f, "reassembly memory is full; retry later"),
        }
    }
}

/// Partial frames being received, by (peer, transfer id).
pub struct Reassembly {
    limit: u64,
    per_peer: usize,
    total_budget: usize,
    timeout: Duration,
    allowed: HashSet<PeerId>,
    open: HashMap<(PeerId, u64), Partial>,
    reserved_by_peer: HashMap<PeerId, usize>,
    reserved: usize,
    buffered: usize,
    opened: u64,
    /// The transfer that may use the headroom.
    holder: Option<(PeerId, u64)>,
    live: Duration,
    /// When the receiver last answered "busy" for its own queue.
    receiver_busy: Option<Instant>,
}

impl Reassembly {
    /// Reassembly of frames up to `limit` bytes within the default budgets
    /// ([`PEER_BUDGET`], [`TOTAL_BUDGET`]); transfers idle for `timeout` are
    /// dropped.
    pub fn new(limit: u64, timeout: Duration) -> Self {
        Self::with_budgets(limit, PEER_BUDGET, TOTAL_BUDGET, timeout)
    }

    /// As [`Reassembly::new`] with explicit bounds on announced bytes per
    /// peer and on held bytes in total.
    pub fn with_budgets(limit: u64, per_peer: usize, total: usize, timeout: Duration) -> Self {
        Self {
            limit,
            per_peer,
            total_budget: total,
            timeout,
            allowed: HashSet::new(),
            open: HashMap::new(),
            reserved_by_peer: HashMap::new(),
            reserved: 0,
            buffered: 0,
            opened: 0,
            holder: None,
            live: LIVE,
            receiver_busy: None,
        }
    }

    /// As [`Reassembly::with_budgets`] with another [`LIVE`] (tests).
    pub fn with_live(mut self, live: Duration) -> Self {
        self.live = live;
        self
    }

    /// The receiver answered "busy" for its own reasons (its queue is
    /// full): senders' silence until now is not held against them.
    pub fn receiver_busy(&mut self) {
        self.receiver_busy = Some(Instant::now());
    }

    /// How long `p` has gone without a chunk the receiver could take.
    fn idle(&self, p: &Partial) -> Duration {
        let since = match self.receiver_busy {
            Some(b) if b > p.touched => b,
            _ => p.touched,
        };
        since.elapsed()
    }

    /// Whether `len` more bytes for `key` fit, choosing a holder first if
    /// there is none: the oldest transfer still receiving (or `key`).
    fn fits(&mut self, key: &(PeerId, u64), len: usize) -> bool {
        if self.holder.is_none() {
            self.holder = self
                .open
                .iter()
                .filter(|(k, p)| *k == key || self.idle(p) < self.live)
                .min_by_key(|(_, p)| p.opened)
                .map(|(k, _)| *k);
        }
        let cap = if self.holder == Some(*key) {
            self.total_budget
        } else {
            self.total_budget - self.largest()
        };
        self.buffered + len <= cap
    }

    /// The largest frame that can ever complete here.
    fn largest(&self) -> usize {
        usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .min(self.per_peer)
            .min(self.total_budget)
    }

    /// Forgets one open transfer and returns its reservation.
    fn close(&mut self, key: &(PeerId, u64)) -> Option<Partial> {
        let p = self.open.remove(key)?;
        if self.holder == Some(*key) {
            self.holder = None;
        }
        self.reserved -= p.reserved;
        self.buffered -= p.parts.values().map(Vec::len).sum::<usize>();
        if let Some(r) = self.reserved_by_peer.get_mut(&key.0) {
            *r -= p.reserved;
            if *r == 0 {
                self.reserved_by_peer.remove(&key.0);
            }
        }
        Some(p)
    }

    fn close_where(&mut self, drop: impl Fn(&PeerId, &Partial) -> bool) -> usize {
        let keys: Vec<(PeerId, u64)> = self
            .open
            .iter()
            .filter(|((p, _), t)| drop(p, t))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.close(k);
        }
        keys.len()
    }

    /// Lets `peer` send chunked frames (it has been admitted), or stops it
    /// and drops what it had buffered.
    pub fn allow(&mut self, peer: PeerId, allowed: bool) {
        if allowed {
            self.allowed.insert(peer);
        } else {
            self.allowed.remove(&peer);
            self.close_where(|p, _| *p == peer);
        }
    }

    /// Stores a chunk; returns the whole frame when it is complete.
    pub fn accept(
        &mut self,
        peer: PeerId,
        transfer: u64,
        total: u64,
        index: u32,
        data: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        if !self.allowed.contains(&peer) {
            return Err(ChunkError::NotAdmitted);
        }
        if total > self.limit {
            return Err(ChunkError::TooLarge {
                total,
                limit: self.limit,
            });
        }
        let count = total.div_ceil(CHUNK_BYTES as u64) as usize;
        let key = (peer, transfer);
        if !self.open.contains_key(&key) {
            if total == 0 {
                return Err(ChunkError::Inconsistent("empty transfer"));
            }
            if index as usize >= SEND_WINDOW {
                return Err(ChunkError::Inconsistent(
                    "a chunk of a transfer this receiver does not hold (it expired or never opened): send the frame again",
                ));
            }
            let size = usize::try_from(total).unwrap_or(usize::MAX);
            if size > self.largest() {
                return Err(ChunkError::TooLarge {
                    total,
                    limit: self.largest() as u64,
                });
            }
            let per_peer = self.open.keys().filter(|(p, _)| *p == peer).count();
            if per_peer >= MAX_TRANSFERS_PER_PEER {
                return Err(ChunkError::TooManyTransfers);
            }
            let mine = self.reserved_by_peer.get(&peer).copied().unwrap_or(0);
            if mine + size > self.per_peer {
                return Err(ChunkError::OverBudget);
            }
            *self.reserved_by_peer.entry(peer).or_insert(0) += size;
            self.reserved += size;
            self.opened += 1;
            self.open.insert(
                key,
                Partial {
                    total,
                    reserved: size,
                    opened: self.opened,
                    parts: BTreeMap::new(),
                    count,
                    touched: Instant::now(),
                },
            );
        }
        let i = index as usize;
        let start = i.saturating_mul(CHUNK_BYTES);
        let expected = (total as usize).saturating_sub(start).min(CHUNK_BYTES);
        let Some(p) = self.open.get_mut(&key) else {
            return Err(ChunkError::Inconsistent("transfer vanished"));
        };
        if p.total != total {
            return Err(ChunkError::Inconsistent("total changed within a transfer"));
        }
        if i >= p.count || data.len() != expected {
            self.close(&key);
            return Err(ChunkError::Inconsistent(
                "chunk index or length out of range",
            ));
        }
        if p.parts.contains_key(&index) {
            return Err(ChunkError::Inconsistent("duplicate chunk"));
        }
        // Held bytes: the holder may use the last largest frame's worth of
        // the total, so it can always finish; the others stop short.
        let empty = p.parts.is_empty();
        let len = data.len();
        if !self.fits(&key, len) {
            // Someone waits for room: a holder gone quiet is dropped, and
            // the oldest transfer still sending takes over.
            if let Some(h) = self.holder
                && h != key
                && self.open.get(&h).is_some_and(|q| self.idle(q) >= self.live)
            {
                self.close(&h);
            }
            if !self.fits(&key, len) {
                if empty {
                    // Nothing arrived: the transfer is not kept open for nothing.
                    self.close(&key);
                }
                return Err(ChunkError::OverBudget);
            }
        }
        let Some(p) = self.open.get_mut(&key) else {
            return Err(ChunkError::Inconsistent("transfer vanished"));
        };
        self.buffered += data.len();
        p.parts.insert(index, data);
        p.touched = Instant::now();
        if p.parts.len() == p.count {
            let done = self.close(&key).map(|p| {
                let mut frame = Vec::with_capacity(p.reserved);
                for part in p.parts.into_values() {
                    frame.extend_from_slice(&part);
                }
                frame
            });
            return Ok(done);
        }
        Ok(None)
    }

    /// Drops transfers idle for longer than the timeout and those of `gone`
    /// peers (which are no longer allowed to send chunks until admitted
    /// again); returns how many transfers were dropped.
    pub fn expire(&mut self, gone: Option<&PeerId>) -> usize {
        if let Some(p) = gone {
            self.allowed.remove(p);
        }
        let timeout = self.timeout;
        let stale: Vec<(PeerId, u64)> = self
            .open
            .iter()
            .filter(|((p, _), t)| Some(p) == gone || self.idle(t) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            self.close(k);
        }
        stale.len()
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Bytes open transfers have announced (each within its peer's budget).
    pub fn reserved(&self) -> usize {
        self.reserved
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(r.accept(peer, 1, total, 2, parts[2].1.to_vec()), Ok(None));
        assert_eq!(r.accept(peer, 1, total, 0, parts[0].1.to_vec()), Ok(None));
        let done = r.accept(peer, 1, total, 1, parts[1].1.to_vec()).unwrap();
        assert_eq!(done.as_deref(), Some(&frame[..]));
        assert_eq!(r.buffered(), 0);
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
        assert_eq!(r.buffered(), 0);
        assert_eq!(
            r.accept(peer, 1, 3 << 20, 1, vec![1; CHUNK_BYTES]),
            Err(ChunkError::NotAdmitted)
        );
    }

    #[test]
    fn a_huge_announced_frame_holds_only_what_arrived() {
        // An admitted peer announcing the largest frame holds what it sent;
        // its last byte alone cannot even open a transfer (senders start
        // with the first chunks), and a sender whose transfer is gone hears
        // so rather than believing its frame delivered.
        let limit = 256u64 << 20;
        let mut r = Reassembly::new(limit, Duration::from_secs(60));
        let peer = admitted(&mut r);
        let total = limit - (CHUNK_BYTES as u64 - 1);
        let last = (total.div_ceil(CHUNK_BYTES as u64) - 1) as u32;
        assert!(matches!(
            r.accept(peer, 1, total, last, vec![7]),
            Err(ChunkError::Inconsistent(_))
        ));
        assert_eq!(r.accept(peer, 1, total, 3, vec![7; CHUNK_BYTES]), Ok(None));
        assert_eq!(r.buffered(), CHUNK_BYTES);
        assert_eq!(r.reserved(), total as usize);
    }

    /// Budgets in chunks: 3 announced per peer (the largest frame), 8 held
    /// in total, so 5 for all transfers but the oldest.
    fn small() -> Reassembly {
        Reassembly::with_budgets(
            64 << 20,
            3 * CHUNK_BYTES,
            8 * CHUNK_BYTES,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_peer_that_over_announces_blocks_only_itself() {
        let chunk = CHUNK_BYTES;
        let mut r = small();
        let (a, b) = (admitted(&mut r), admitted(&mut r));
        // A frame larger than a peer may ever announce can never complete.
        assert!(matches!(
            r.accept(a, 9, 4 * chunk as u64, 0, vec![0; chunk]),
            Err(ChunkError::TooLarge { .. })
        ));
        r.accept(a, 1, 2 * chunk as u64, 0, vec![0; chunk]).unwrap();
        assert_eq!(
            r.accept(a, 2, 2 * chunk as u64, 0, vec![0; chunk]),
            Err(ChunkError::OverBudget)
        );
        r.accept(b, 1, 3 * chunk as u64, 0, vec![0; chunk]).unwrap();
        assert_eq!(r.reserved(), 5 * chunk);
        // A peer that leaves returns what it held.
        r.expire(Some(&b));
        assert_eq!((r.reserved(), r.buffered()), (2 * chunk, chunk));
    }

    #[test]
    fn announced_sizes_hold_nothing_from_other_peers() {
        // The review's attack on the old whole-size reservation: admitted
        // Sybils announce the largest frame and send only its 1-byte last
        // chunk, and used to fill the total so honest uploads got "busy".
        let chunk = CHUNK_BYTES;
        let mut r = small();
        let total = 2 * chunk as u64 + 1;
        for _ in 0..6 {
            let sybil = admitted(&mut r);
            assert_eq!(r.accept(sybil, 1, total, 2, vec![7]), Ok(None));
        }
        assert_eq!(r.buffered(), 6);
        let honest = admitted(&mut r);
        let frame: Vec<u8> = (0..3 * chunk).map(|i| i as u8).collect();
        let mut done = None;
        for (i, part) in chunks(&frame) {
            done = r
                .accept(honest, 5, frame.len() as u64, i, part.to_vec())
                .unwrap();
        }
        assert_eq!(done.as_deref(), Some(&frame[..]));
    }

    #[test]
    fn held_bytes_are_bounded_and_the_oldest_transfer_always_completes() {
        let chunk = CHUNK_BYTES;
        let mut r = small();
        let total = 3 * chunk as u64;
        let peers: Vec<PeerId> = (0..6).map(|_| admitted(&mut r)).collect();
        // Five transfers each send a first chunk: the shared part is full.
        for p in &peers[..5] {
            r.accept(*p, 1, total, 0, vec![0; chunk]).unwrap();
        }
        assert_eq!(r.buffered(), 5 * chunk);
        // Neither a younger transfer's next chunk nor a new transfer fits,
        // and the refused newcomer is not kept open.
        assert_eq!(
            r.accept(peers[1], 1, total, 1, vec![0; chunk]),
            Err(ChunkError::OverBudget)
        );
        let before = r.reserved();
        assert_eq!(
            r.accept(peers[5], 1, total, 0, vec![0; chunk]),
            Err(ChunkError::OverBudget)
        );
        assert_eq!(r.reserved(), before);
        // Each oldest transfer in turn finishes within the headroom; the
        // held total never passes the budget.
        for p in &peers[..5] {
            r.accept(*p, 1, total, 1, vec![0; chunk]).unwrap();
            assert!(r.buffered() <= 8 * chunk);
            let done = r.accept(*p, 1, total, 2, vec![0; chunk]).unwrap();
            assert_eq!(done.map(|f| f.len()), Some(3 * chunk));
        }
        assert_eq!((r.buffered(), r.reserved()), (0, 0));
        r.accept(peers[5], 1, total, 0, vec![0; chunk]).unwrap();
    }

    #[test]
    fn a_holder_that_trickles_loses_the_headroom_to_those_still_sending() {
        // The review's attack on the first headroom rule: an early Sybil
        // transfer holds the headroom and sends a chunk now and then, while
        // honest uploads fill the shared part and wait for room forever.
        let chunk = CHUNK_BYTES;
        let live = Duration::from_millis(50);
        let mut r = small().with_live(live);
        let sybil = admitted(&mut r);
        r.accept(sybil, 1, 3 * chunk as u64, 0, vec![0; chunk])
            .unwrap();
        let honest: Vec<PeerId> = (0..4).map(|_| admitted(&mut r)).collect();
        for p in &honest {
            r.accept(*p, 1, 3 * chunk as u64, 0, vec![0; chunk])
                .unwrap();
        }
        // Full (5 chunks); the Sybil holds the headroom and keeps quiet.
        assert_eq!(
            r.accept(honest[0], 1, 3 * chunk as u64, 1, vec![0; chunk]),
            Err(ChunkError::OverBudget)
        );
        std::thread::sleep(live * 2);
        // Now the quiet holder is dropped for the one still sending, which
        // finishes, and so does every other honest upload in turn.
        for p in &honest {
            r.accept(*p, 1, 3 * chunk as u64, 1, vec![0; chunk])
                .unwrap();
            let done = r
                .accept(*p, 1, 3 * chunk as u64, 2, vec![0; chunk])
                .unwrap();
            assert_eq!(done.map(|f| f.len()), Some(3 * chunk));
        }
        assert_eq!((r.buffered(), r.reserved()), (0, 0));
    }

    #[test]
    fn a_receiver_busy_with_its_own_queue_does_not_count_against_senders() {
        let chunk = CHUNK_BYTES;
        let live = Duration::from_millis(50);
        let mut r = small().with_live(live);
        let first = admitted(&mut r);
        r.accept(first, 1, 3 * chunk as u64, 0, vec![0; chunk])
            .unwrap();
        let others: Vec<PeerId> = (0..4).map(|_| admitted(&mut r)).collect();
        for p in &others {
            r.accept(*p, 1, 3 * chunk as u64, 0, vec![0; chunk])
                .unwrap();
        }
        std::thread::sleep(live * 2);
        // Everyone was told "busy" by the receiver itself just now: the
        // holder was not quiet by choice and keeps its place.
        r.receiver_busy();
        assert_eq!(
            r.accept(others[0], 1, 3 * chunk as u64, 1, vec![0; chunk]),
            Err(ChunkError::OverBudget)
        );
        r.accept(first, 1, 3 * chunk as u64, 1, vec![0; chunk])
            .unwrap();
        let done = r
            .accept(first, 1, 3 * chunk as u64, 2, vec![0; chunk])
            .unwrap();
        assert_eq!(done.map(|f| f.len()), Some(3 * chunk));
    }
}
