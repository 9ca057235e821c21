//! Reassembly of frames sent as chunks.
//!
//! Design decision: memory is bounded by policy, not by trust.
//! - Only peers the application has admitted ([`Reassembly::allow`]) may
//!   send chunked (multi-chunk) frames at all; anyone else can send single
//!   frames of at most one chunk, enough for a join request.
//! - A transfer's announced size is capped at the frame limit, and its
//!   chunks are stored sparsely as they arrive: a peer that announces a huge
//!   frame and sends its last byte holds one byte, not the whole buffer.
//! - Memory is reserved for a transfer's whole announced size when it
//!   opens, within a budget per peer and in total that does not grow with
//!   the frame limit; a transfer that does not fit is answered "busy" and
//!   the sender backs off, so admitted transfers always complete (no
//!   deadlock of half-filled buffers) and the bounds hold whatever peers do.
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

/// Most bytes one peer's open transfers may reserve.
pub const PEER_BUDGET: usize = 512 << 20;

/// Most bytes all open transfers may reserve together.
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
    /// Bytes reserved for this transfer (its announced size).
    reserved: usize,
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
}

impl Reassembly {
    /// Reassembly of frames up to `limit` bytes within the default budgets
    /// ([`PEER_BUDGET`], [`TOTAL_BUDGET`]); transfers idle for `timeout` are
    /// dropped.
    pub fn new(limit: u64, timeout: Duration) -> Self {
        Self::with_budgets(limit, PEER_BUDGET, TOTAL_BUDGET, timeout)
    }

    /// As [`Reassembly::new`] with explicit bounds on reserved bytes per
    /// peer and in total.
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
        }
    }

    /// Forgets one open transfer and returns its reservation.
    fn close(&mut self, key: &(PeerId, u64)) -> Option<Partial> {
        let p = self.open.remove(key)?;
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
            let size = usize::try_from(total).unwrap_or(usize::MAX);
            if size > self.per_peer.min(self.total_budget) {
                return Err(ChunkError::TooLarge {
                    total,
                    limit: self.per_peer.min(self.total_budget) as u64,
                });
            }
            let per_peer = self.open.keys().filter(|(p, _)| *p == peer).count();
            if per_peer >= MAX_TRANSFERS_PER_PEER {
                return Err(ChunkError::TooManyTransfers);
            }
            let mine = self.reserved_by_peer.get(&peer).copied().unwrap_or(0);
            if mine + size > self.per_peer || self.reserved + size > self.total_budget {
                return Err(ChunkError::OverBudget);
            }
            *self.reserved_by_peer.entry(peer).or_insert(0) += size;
            self.reserved += size;
            self.open.insert(
                key,
                Partial {
                    total,
                    reserved: size,
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
        self.close_where(|p, t| Some(p) == gone || t.touched.elapsed() >= timeout)
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Bytes currently reserved by open transfers.
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
        // Even an admitted peer announcing the largest frame and sending its
        // last 1-byte chunk makes the receiver hold one byte.
        let limit = 256u64 << 20;
        let mut r = Reassembly::new(limit, Duration::from_secs(60));
        let peer = admitted(&mut r);
        let total = limit - (CHUNK_BYTES as u64 - 1);
        // Reserved, not allocated.
        let last = (total.div_ceil(CHUNK_BYTES as u64) - 1) as u32;
        assert_eq!(r.accept(peer, 1, total, last, vec![7]), Ok(None));
        assert_eq!(r.buffered(), 1);
        assert_eq!(r.reserved(), total as usize);
    }

    #[test]
    fn reservations_are_bounded_per_peer_and_in_total() {
        let chunk = CHUNK_BYTES;
        let mut r =
            Reassembly::with_budgets(64 << 20, 4 * chunk, 6 * chunk, Duration::from_secs(60));
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
        assert_eq!(r.reserved(), chunk + 1);
        assert_eq!(r.buffered(), chunk);
    }
}
