//! Resource caps: CPU by duty-cycling the worker threads (measured with
//! getrusage), memory by refusing work above a resident-set bound, and nice 19
//! for every worker thread.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// CPU seconds this process has used (user + system), from getrusage.
pub fn process_cpu_seconds() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 * 1e-6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// This process's resident set, in bytes (from /proc/self/statm).
pub fn rss_bytes() -> u64 {
    let page = rustix::param::page_size() as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

/// Sets the calling thread's nice value (Linux: priorities are per thread).
pub fn nice_this_thread(nice: i32) -> std::io::Result<()> {
    let tid = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(tid), nice).map_err(std::io::Error::from)
}

/// The calling thread's nice value.
pub fn this_thread_nice() -> std::io::Result<i32> {
    let tid = rustix::thread::gettid();
    rustix::process::getpriority_process(Some(tid)).map_err(std::io::Error::from)
}

/// Keeps the process's CPU use at a share of one core: a token bucket of CPU
/// time. Wall time earns `cap` seconds of CPU per second, up to a burst of
/// `cap × 0.5 s`; every CPU second used (all threads, from getrusage) spends
/// one. Before each piece of work the worker sleeps until the bucket is not
/// in debt, so over any long window the process uses at most `cap` of a core
/// plus one burst, and pieces of work are kept short (see the worker's slices).
#[derive(Debug)]
pub struct Governor {
    cap: f64,
    window: Duration,
    budget: f64,
    last: Option<(Instant, f64)>,
    samples: VecDeque<(Instant, f64)>,
    clock: fn() -> f64,
}

impl Governor {
    /// A governor for `cap_pct` percent of one core; `window` is what
    /// [`Governor::used`] reports over.
    pub fn new(cap_pct: u32, window: Duration) -> Self {
        Self::with_clock(cap_pct, window, process_cpu_seconds)
    }

    /// The same with another CPU clock (for tests).
    pub fn with_clock(cap_pct: u32, window: Duration, clock: fn() -> f64) -> Self {
        Self {
            cap: f64::from(cap_pct.clamp(1, 100 * 64)) / 100.0,
            window,
            budget: 0.0,
            last: None,
            samples: VecDeque::new(),
            clock,
        }
    }

    /// The cap, as a share of one core.
    pub fn cap(&self) -> f64 {
        self.cap
    }

    /// CPU used over the window, as a share of one core.
    pub fn used(&mut self) -> f64 {
        let now = Instant::now();
        let cpu = (self.clock)();
        self.samples.push_back((now, cpu));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some((t0, c0)) if now > *t0 => (cpu - c0) / now.duration_since(*t0).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// How long to pause before the next piece of work.
    pub fn pause(&mut self) -> Duration {
        let now = Instant::now();
        let cpu = (self.clock)();
        if let Some((t, c)) = self.last {
            self.budget += self.cap * now.duration_since(t).as_secs_f64() - (cpu - c);
            self.budget = self.budget.min(self.cap * 0.5);
        }
        self.last = Some((now, cpu));
        if self.budget < 0.0 {
            Duration::from_secs_f64((-self.budget / self.cap).min(60.0))
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_19_is_set_on_this_thread_only() {
        let before = this_thread_nice().unwrap();
        std::thread::spawn(|| {
            nice_this_thread(19).unwrap();
            assert_eq!(this_thread_nice().unwrap(), 19);
        })
        .join()
        .unwrap();
        assert_eq!(this_thread_nice().unwrap(), before);
    }

    static FAKE_CPU: std::sync::Mutex<f64> = std::sync::Mutex::new(0.0);
    fn fake() -> f64 {
        *FAKE_CPU.lock().unwrap()
    }

    #[test]
    fn the_bucket_holds_the_long_run_share_at_the_cap() {
        let mut g = Governor::with_clock(50, Duration::from_secs(10), fake);
        // Work comes in 30 ms slices at full speed; the governor's pauses are slept.
        let start = Instant::now();
        let mut used = 0.0;
        while start.elapsed() < Duration::from_millis(1500) {
            let p = g.pause();
            std::thread::sleep(p);
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(30) {}
            used += 0.03;
            *FAKE_CPU.lock().unwrap() = used;
        }
        // Sleeps may overshoot on a loaded machine (a lower share); the cap is never exceeded.
        let share = used / start.elapsed().as_secs_f64();
        assert!(share <= 0.5 + 0.05 && share > 0.2, "share {share}");
    }

    #[test]
    fn rss_and_cpu_are_read() {
        assert!(rss_bytes() > 1 << 20);
        let t0 = process_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds() > t0);
    }
}
