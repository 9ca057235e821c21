//! Reassembly of frames sent as chunks.
//!
//! Design decision: memory is bounded by reservation, and a reservation is
//! kept only by sending.
//! - Only peers the application has admitted ([`Reassembly::allow`]) may
//!   send chunked (multi-chunk) frames at all; anyone else can send single
//!   frames of at most one chunk, enough for a join request.
//! - A transfer reserves its whole announced size when it opens, within
//!   [`PEER_BUDGET`] per peer and [`TOTAL_BUDGET`] in total; one that does
//!   not fit is answered "busy" and the sender backs off. An admitted
//!   transfer therefore always has room to complete: half-filled transfers
//!   cannot deadlock.
//! - A reservation costs bandwidth in proportion to its size: when room is
//!   needed, open transfers receiving below their required rate on average
//!   (after a [`GRACE`] period) are dropped, slowest first, but only if that
//!   makes the room, and the room goes to the one that asked. The required
//!   rate is [`MIN_RATE`], or the rate that completes the transfer within
//!   [`MAX_TRANSFER_TIME`] if that is more: holding S bytes of the total
//!   costs sending about S every [`MAX_TRANSFER_TIME`].
//! - A peer whose transfer was dropped for its rate, broken off with a
//!   malformed chunk, or left idle until it timed out while others asked
//!   for room, may not open another for [`COOLDOWN`]; and a transfer opened
//!   while room is contended (a request was refused for room within
//!   [`CONTENDED`]) gets no grace. So room freed by one Sybil cannot be held
//!   by the next for free. Senders ramp their window up (one chunk, one,
//!   two, then four in flight), so what the receiver has counted lags what
//!   was sent by little even in a transfer's first seconds.
//! - With no one waiting, a slow transfer is left alone (the receiver's own
//!   link may be what is slow); under contention the receiver's link must
//!   carry each open transfer's required rate.
//! - Time the receiver itself answers "busy" because its own queue is full
//!   is not counted against senders (they cannot send then).
//! - A transfer opens only with its first chunk, which senders send alone
//!   before the rest: a later chunk of a transfer the receiver does not hold
//!   is refused, so a sender whose transfer was dropped is told instead of
//!   believing its frame delivered, and a last byte alone holds nothing.
//! - Chunks are stored as they arrive; a peer holds at most
//!   [`MAX_TRANSFERS_PER_PEER`] partial frames, and a transfer whose chunks
//!   stop arriving is dropped after a timeout.

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

/// The slowest average a transfer may receive at after [`GRACE`] (32 KiB/s,
/// 256 kbit/s): slower, it is dropped and its reservation freed.
pub const MIN_RATE: u64 = 32 << 10;

/// A transfer's required rate is at least what completes it in this long
/// (a 256 MiB frame: about 437 KiB/s).
pub const MAX_TRANSFER_TIME: Duration = Duration::from_secs(600);

/// How long a transfer may receive nothing before its rate is required.
pub const GRACE: Duration = Duration::from_secs(30);

/// How long a peer whose transfer was dropped for its rate (or broken off
/// with a malformed chunk) may not open another.
pub const COOLDOWN: Duration = Duration::from_secs(120);

/// Room counts as contended for this long after a request was refused for
/// it (senders retry at least every second while they wait).
pub const CONTENDED: Duration = Duration::from_secs(5);

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
    received: usize,
    count: usize,
    opened: Instant,
    /// How long it may receive nothing before its rate is required.
    grace: Duration,
    /// The receiver's busy time when the transfer opened.
    busy_at_open: Duration,
    touched: Instant,
    busy_at_touch: Duration,
}

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The frame would exceed the receiver's limit.
    #[error("oversized frame: {total} bytes, limit {limit}")]
    TooLarge {
        /// Announced total.
        total: u64,
        /// Limit.
        limit: u64,
    },
    /// The peer has too many partial frames open.
    #[error("too many transfers open (limit {MAX_TRANSFERS_PER_PEER} per peer)")]
    TooManyTransfers,
    /// The chunk does not fit the transfer (bad index, length or total).
    #[error("malformed chunk: {0}")]
    Inconsistent(&'static str),
    /// The peer has not been admitted: it may not send chunked frames.
    #[error("chunked frames are accepted only from admitted peers (join first)")]
    NotAdmitted,
    /// Reserving the transfer would pass the per-peer or total bound; the
    /// sender should retry later.
    #[error("reassembly memory is full; retry later")]
    OverBudget,
}

/// Partial frames being received, by (peer, transfer id).
pub struct Reassembly {
    limit: u64,
    per_peer: usize,
    total_budget: usize,
    timeout: Duration,
    min_rate: u64,
    grace: Duration,
    max_time: Duration,
    allowed: HashSet<PeerId>,
    open: HashMap<(PeerId, u64), Partial>,
    reserved_by_peer: HashMap<PeerId, usize>,
    reserved: usize,
    buffered: usize,
    /// Time the receiver has spent busy (its queue full), and since when it
    /// is busy now.
    busy_total: Duration,
    busy_since: Option<Instant>,
    /// Peers whose transfer was dropped for its rate, and when.
    penalized: HashMap<PeerId, Instant>,
    /// When a request was last refused for room.
    refused_at: Option<Instant>,
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
            min_rate: MIN_RATE,
            grace: GRACE,
            max_time: MAX_TRANSFER_TIME,
            allowed: HashSet::new(),
            open: HashMap::new(),
            reserved_by_peer: HashMap::new(),
            reserved: 0,
            buffered: 0,
            busy_total: Duration::ZERO,
            busy_since: None,
            penalized: HashMap::new(),
            refused_at: None,
        }
    }

    /// Another minimum rate (bytes per second) and grace period.
    pub fn with_rate(mut self, min_rate: u64, grace: Duration) -> Self {
        self.min_rate = min_rate;
        self.grace = grace;
        self
    }

    /// Another [`MAX_TRANSFER_TIME`] (at least a millisecond).
    pub fn with_max_time(mut self, max_time: Duration) -> Self {
        self.max_time = max_time.max(Duration::from_millis(1));
        self
    }

    /// The receiver answers "busy" because its own queue is full: from now
    /// until [`Reassembly::receiver_ready`], senders' silence is excused.
    pub fn receiver_busy(&mut self) {
        self.busy_since.get_or_insert_with(Instant::now);
    }

    /// The receiver's queue has room again.
    pub fn receiver_ready(&mut self) {
        if let Some(since) = self.busy_since.take() {
            self.busy_total += since.elapsed();
        }
    }

    fn busy_now(&self) -> Duration {
        self.busy_total + self.busy_since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Whether `p` has received nothing for the idle timeout, not counting
    /// the receiver's own busy time.
    fn idle(&self, p: &Partial) -> bool {
        let busy = self.busy_now().saturating_sub(p.busy_at_touch);
        p.touched.elapsed().saturating_sub(busy) >= self.timeout
    }

    /// `p`'s average receive rate (bytes a second) since it opened, and
    /// whether it is past its grace and below the minimum rate; the
    /// receiver's own busy time is not counted.
    fn rate(&self, p: &Partial) -> (f64, bool) {
        let busy = self.busy_now().saturating_sub(p.busy_at_open);
        let active = p.opened.elapsed().saturating_sub(busy);
        let rate = p.received as f64 / active.as_secs_f64().max(1e-3);
        let required = (self.min_rate as f64).max(p.total as f64 / self.max_time.as_secs_f64());
        let due = active.saturating_sub(p.grace).as_secs_f64() * required;
        (
            rate,
            active > p.grace && (p.received as f64) < due.min(p.total as f64),
        )
    }

    /// Open transfers that stopped paying their way (past their grace and
    /// below the minimum rate), slowest first.
    fn slow(&self) -> Vec<(PeerId, u64)> {
        let mut slow: Vec<((PeerId, u64), f64)> = self
            .open
            .iter()
            .filter_map(|(k, p)| {
                let (rate, below) = self.rate(p);
                below.then_some((*k, rate))
            })
            .collect();
        slow.sort_by(|a, b| a.1.total_cmp(&b.1));
        slow.into_iter().map(|(k, _)| k).collect()
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
        self.reserved -= p.reserved;
        self.buffered -= p.received;
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

    /// Opens a transfer of `total` bytes for `peer`, reserving it.
    fn open_transfer(&mut self, key: (PeerId, u64), total: u64) -> Result<(), ChunkError> {
        let peer = key.0;
        let size = usize::try_from(total).unwrap_or(usize::MAX);
        if size > self.largest() {
            return Err(ChunkError::TooLarge {
                total,
                limit: self.largest() as u64,
            });
        }
        if self.open.keys().filter(|(p, _)| *p == peer).count() >= MAX_TRANSFERS_PER_PEER {
            return Err(ChunkError::TooManyTransfers);
        }
        if self
            .penalized
            .get(&peer)
            .is_some_and(|t| t.elapsed() < COOLDOWN)
        {
            return Err(ChunkError::OverBudget);
        }
        let mine = self.reserved_by_peer.get(&peer).copied().unwrap_or(0);
        if mine.saturating_add(size) > self.per_peer {
            // Only this peer's own transfers are in its way.
            return Err(ChunkError::OverBudget);
        }
        let now = Instant::now();
        let needed = self
            .reserved
            .saturating_add(size)
            .saturating_sub(self.total_budget);
        if needed > 0 {
            // Drop slow reservations only if that makes the room.
            let mut freed = 0;
            let mut drop = Vec::new();
            for k in self.slow() {
                if freed >= needed {
                    break;
                }
                freed += self.open.get(&k).map_or(0, |p| p.reserved);
                drop.push(k);
            }
            if freed < needed {
                self.refused_at = Some(now);
                return Err(ChunkError::OverBudget);
            }
            for k in drop {
                self.close(&k);
                self.penalized.insert(k.0, now);
            }
        }
        // Opened while others wait for room: no grace.
        let grace = if self.refused_at.is_some_and(|t| t.elapsed() < CONTENDED) {
            Duration::ZERO
        } else {
            self.grace
        };
        *self.reserved_by_peer.entry(peer).or_insert(0) += size;
        self.reserved += size;
        let busy = self.busy_now();
        self.open.insert(
            key,
            Partial {
                total,
                reserved: size,
                parts: BTreeMap::new(),
                received: 0,
                count: total.div_ceil(CHUNK_BYTES as u64) as usize,
                opened: now,
                grace,
                busy_at_open: busy,
                touched: now,
                busy_at_touch: busy,
            },
        );
        Ok(())
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
        let key = (peer, transfer);
        if !self.open.contains_key(&key) {
            if total <= CHUNK_BYTES as u64 {
                // Senders send such a frame whole; as "chunks" it could only
                // probe for room for a few bytes.
                return Err(ChunkError::Inconsistent(
                    "a transfer of at most one chunk (send it as one frame)",
                ));
            }
            if index != 0 {
                return Err(ChunkError::Inconsistent(
                    "a chunk of a transfer this receiver does not hold (it was dropped, or never opened with its first chunk): send the frame again",
                ));
            }
            // A first chunk is checked whole before it may ask for room: a
            // probe of a few bytes neither drops anyone nor marks room as
            // contended.
            if data.len() != CHUNK_BYTES {
                return Err(ChunkError::Inconsistent(
                    "chunk index or length out of range",
                ));
            }
            self.open_transfer(key, total)?;
        }
        let i = index as usize;
        let start = i.saturating_mul(CHUNK_BYTES);
        let expected = (total as usize).saturating_sub(start).min(CHUNK_BYTES);
        let busy = self.busy_now();
        let Some(p) = self.open.get_mut(&key) else {
            return Err(ChunkError::Inconsistent("transfer vanished"));
        };
        if p.total != total {
            return Err(ChunkError::Inconsistent("total changed within a transfer"));
        }
        if i >= p.count || data.len() != expected {
            // Breaking a transfer off is no way to a fresh grace.
            self.close(&key);
            self.penalized.insert(peer, Instant::now());
            return Err(ChunkError::Inconsistent(
                "chunk index or length out of range",
            ));
        }
        if p.parts.contains_key(&index) {
            return Err(ChunkError::Inconsistent("duplicate chunk"));
        }
        self.buffered += data.len();
        p.received += data.len();
        p.parts.insert(index, data);
        p.touched = Instant::now();
        p.busy_at_touch = busy;
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

    /// Drops transfers idle for longer than the timeout and those of
    /// `gone` peers (which are no longer allowed to send chunks until
    /// admitted again); returns how many were dropped.
    pub fn expire(&mut self, gone: Option<&PeerId>) -> usize {
        if let Some(p) = gone {
            self.allowed.remove(p);
        }
        self.penalized.retain(|_, t| t.elapsed() < COOLDOWN);
        let stale: Vec<((PeerId, u64), bool)> = self
            .open
            .iter()
            .filter(|((p, _), t)| Some(p) == gone || self.idle(t))
            .map(|(k, t)| {
                // Room was asked for while it sat idle: letting it time out
                // is no way to a fresh grace either.
                let contended =
                    Some(&k.0) != gone && self.refused_at.is_some_and(|r| r > t.touched);
                (*k, contended)
            })
            .collect();
        let now = Instant::now();
        for (k, contended) in &stale {
            self.close(k);
            if *contended {
                self.penalized.insert(k.0, now);
            }
        }
        stale.len()
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
#[path = "transfer_tests.rs"]
mod tests;
