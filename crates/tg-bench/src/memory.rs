//! Resident memory of this process, as the kernel accounts it.

/// Current and peak resident set size, in bytes.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Rss {
    /// `VmRSS`: resident now.
    pub now: u64,
    /// `VmHWM`: the high-water mark so far (what `/usr/bin/time -v` reports
    /// as maximum resident set size when the process ends).
    pub peak: u64,
}

/// Reads `/proc/self/status`; `None` where there is no procfs.
pub fn rss() -> Option<Rss> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Rss {
        now: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}
