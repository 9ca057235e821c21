//! Reusable scratch buffers for the FFTs.
//!
//! Design decision: a PLD query allocates a few megabytes of transform
//! buffers. Fresh allocations of that size are mmapped and unmapped on each
//! query, and in a multi-threaded process every unmap costs a TLB shootdown
//! across cores — measured at a fifth of a query's time. Buffers are
//! therefore kept in small process-wide pools and handed out zeroed.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use realfft::num_complex::Complex;

/// Buffers kept per pool (two directions × a few sizes).
const POOL_SIZE: usize = 8;

static REAL: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
static COMPLEX: Mutex<Vec<Vec<Complex<f64>>>> = Mutex::new(Vec::new());

/// A zeroed buffer of `len` elements that returns to its pool when dropped.
pub(super) struct Scratch<T: 'static + Clone + Default> {
    buf: Vec<T>,
    pool: &'static Mutex<Vec<Vec<T>>>,
}

fn take<T: Clone + Default>(pool: &'static Mutex<Vec<Vec<T>>>, len: usize) -> Scratch<T> {
    let reused = {
        let mut p = match pool.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Prefer the smallest buffer that fits, else any (it will grow once).
        let best = p
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => Some(p.swap_remove(i)),
            None => p.pop(),
        }
    };
    let mut buf = reused.unwrap_or_default();
    buf.clear();
    buf.resize(len, T::default());
    Scratch { buf, pool }
}

/// A zeroed real buffer.
pub(super) fn real(len: usize) -> Scratch<f64> {
    take(&REAL, len)
}

/// A zeroed complex buffer.
pub(super) fn complex(len: usize) -> Scratch<Complex<f64>> {
    take(&COMPLEX, len)
}

impl<T: Clone + Default> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_SIZE
        {
            p.push(buf);
        }
    }
}

impl<T: Clone + Default> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf
    }
}

impl<T: Clone + Default> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf
    }
}
