//! Reassembly of frames sent as chunks.
//!
//! Design decision: memory is bounded by policy, not by trust. A receiver
//! holds at most [`MAX_TRANSFERS_PER_PEER`] partial frames per peer, each no
//! larger than the configured frame limit, and allocates a transfer's buffer
//! only as its chunks arrive. A transfer whose chunks stop arriving is dropped
//! after a timeout. Senders keep only a bounded window of chunks in flight.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::codec::CHUNK_BYTES;

/// Partial frames one peer may have open at once.
pub const MAX_TRANSFERS_PER_PEER: usize = 4;

/// Chunks of one frame a sender keeps in flight.
pub const SEND_WINDOW: usize = 4;

/// Splits a frame into chunk payloads (borrowed).
pub fn chunks(frame: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    frame
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, c)| (i as u32, c))
}

struct Partial {
    total: u64,
    buf: Vec<u8>,
    seen: Vec<bool>,
    remaining: usize,
    touched: Instant,
}

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }
}

/// Partial frames being received, by (peer, transfer id).
pub struct Reassembly {
    limit: u64,
    timeout: Duration,
    open: HashMap<(PeerId, u64), Partial>,
}

impl Reassembly {
    /// Reassembly of frames up to `limit` bytes; transfers idle for
    /// `timeout` are dropped.
    pub fn new(limit: u64, timeout: Duration) -> Self {
        Self {
            limit,
            timeout,
            open: HashMap::new(),
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
            let per_peer = self.open.keys().filter(|(p, _)| *p == peer).count();
            if per_peer >= MAX_TRANSFERS_PER_PEER {
                return Err(ChunkError::TooManyTransfers);
            }
            self.open.insert(
                key,
                Partial {
                    total,
                    buf: Vec::new(),
                    seen: vec![false; count],
                    remaining: count,
                    touched: Instant::now(),
                },
            );
        }
        let Some(p) = self.open.get_mut(&key) else {
            return Err(ChunkError::Inconsistent("transfer vanished"));
        };
        if p.total != total {
            return Err(ChunkError::Inconsistent("total changed within a transfer"));
        }
        let i = index as usize;
        let start = i.saturating_mul(CHUNK_BYTES);
        let expected = (total as usize).saturating_sub(start).min(CHUNK_BYTES);
        if i >= p.seen.len() || data.len() != expected {
            self.open.remove(&key);
            return Err(ChunkError::Inconsistent(
                "chunk index or length out of range",
            ));
        }
        if p.seen[i] {
            return Err(ChunkError::Inconsistent("duplicate chunk"));
        }
        // Grow the buffer only as far as data has arrived.
        if p.buf.len() < start + expected {
            p.buf.resize(start + expected, 0);
        }
        p.buf[start..start + expected].copy_from_slice(&data);
        p.seen[i] = true;
        p.remaining -= 1;
        p.touched = Instant::now();
        if p.remaining == 0 {
            let done = self.open.remove(&key).map(|p| p.buf);
            return Ok(done);
        }
        Ok(None)
    }

    /// Drops transfers idle for longer than the timeout and those of `gone`
    /// peers; returns how many were dropped.
    pub fn expire(&mut self, gone: Option<&PeerId>) -> usize {
        let before = self.open.len();
        let timeout = self.timeout;
        self.open
            .retain(|(p, _), t| Some(p) != gone && t.touched.elapsed() < timeout);
        before - self.open.len()
    }

    /// Bytes currently buffered.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.open.values().map(|p| p.buf.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_out_of_order() {
        let peer = PeerId::random();
        let frame: Vec<u8> = (0..(CHUNK_BYTES * 2 + 10)).map(|i| i as u8).collect();
        let parts: Vec<_> = chunks(&frame).collect();
        assert_eq!(parts.len(), 3);
        let mut r = Reassembly::new(1 << 30, Duration::from_secs(60));
        let total = frame.len() as u64;
        assert_eq!(r.accept(peer, 1, total, 2, parts[2].1.to_vec()), Ok(None));
        assert_eq!(r.accept(peer, 1, total, 0, parts[0].1.to_vec()), Ok(None));
        let done = r.accept(peer, 1, total, 1, parts[1].1.to_vec()).unwrap();
        assert_eq!(done.as_deref(), Some(&frame[..]));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn enforces_limits() {
        let peer = PeerId::random();
        let mut r = Reassembly::new(10 << 20, Duration::from_secs(60));
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
}
