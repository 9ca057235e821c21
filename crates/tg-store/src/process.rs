//! Which process owns a running job, robust to pid reuse.

/// A process id plus its start time (clock ticks since boot, from
/// `/proc/<pid>/stat`), so a recycled pid is not mistaken for the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStamp {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot, when known.
    pub start_ticks: Option<u64>,
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields
    // after the last ')' are space-separated. starttime is field 22 overall.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl ProcessStamp {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_ticks: start_ticks(pid),
        }
    }

    /// True when we can tell the process is no longer running. Where `/proc`
    /// is unavailable this answers `false` (we cannot tell).
    pub fn is_gone(&self) -> bool {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return false;
        }
        match (start_ticks(self.pid), self.start_ticks) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_fake_one_is_not() {
        assert!(!ProcessStamp::current().is_gone());
        let me = ProcessStamp::current();
        if me.start_ticks.is_some() {
            let recycled = ProcessStamp {
                pid: me.pid,
                start_ticks: me.start_ticks.map(|t| t + 1),
            };
            assert!(recycled.is_gone());
        }
    }
}
