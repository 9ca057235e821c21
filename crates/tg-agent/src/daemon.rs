//! The agent as a background process: started detached (its own process
//! group, a log file, a pid file), ready once its control socket answers,
//! and stopped through that socket.
//!
//! Design decision: `up` reports success only for an agent that is really
//! running — it waits for the control socket to answer, and if the child
//! exits first (a bad certificate, a policy that would refuse every round)
//! the error carries the end of the child's log instead of a false "started".

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::{ControlError, Paths, ask};

/// How long a starting agent may take to answer on its control socket.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a stopping agent may take to exit before it gets SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// How much of the log an early exit reports.
const LOG_TAIL: u64 = 2048;

fn setup(what: String) -> impl FnOnce(std::io::Error) -> ControlError {
    move |source| ControlError::Setup { what, source }
}

/// Whether an agent answers on the control socket under `paths`.
pub fn running(paths: &Paths) -> bool {
    ask(&paths.socket, "status").is_ok()
}

/// Creates the daemon's directory and records this process as the agent
/// (the foreground mode of `up`); [`clear_pid`] undoes it.
pub fn record_foreground(paths: &Paths) -> Result<(), ControlError> {
    std::fs::create_dir_all(&paths.dir)
        .map_err(setup(format!("cannot create {}", paths.dir.display())))?;
    std::fs::write(&paths.pid, format!("{}\n", std::process::id()))
        .map_err(setup(format!("cannot write {}", paths.pid.display())))
}

/// Removes the pid file.
pub fn clear_pid(paths: &Paths) {
    let _ = std::fs::remove_file(&paths.pid);
}

/// Starts `exe args…` detached, its output appended to the log, and waits
/// until its control socket answers; returns its pid. An agent that exits
/// first is [`ControlError::Exited`], with the end of its log.
pub fn start(exe: &Path, args: &[OsString], paths: &Paths) -> Result<u32, ControlError> {
    std::fs::create_dir_all(&paths.dir)
        .map_err(setup(format!("cannot create {}", paths.dir.display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(setup(format!("cannot open {}", paths.log.display())))?;
    let from = log.metadata().map_or(0, |m| m.len());
    let out = log
        .try_clone()
        .map_err(setup(format!("cannot open {}", paths.log.display())))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(setup(format!("cannot start {}", exe.display())))?;
    let pid = child.id();
    std::fs::write(&paths.pid, format!("{pid}\n"))
        .map_err(setup(format!("cannot write {}", paths.pid.display())))?;
    let began = Instant::now();
    loop {
        if running(paths) {
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            clear_pid(paths);
            return Err(ControlError::Exited {
                status: status.to_string(),
                log_tail: tail(&paths.log, from),
            });
        }
        if began.elapsed() > READY_WITHIN {
            // Still starting (a slow key derivation, say): left running.
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The log written since byte `from`, at most its last [`LOG_TAIL`] bytes.
fn tail(log: &Path, from: u64) -> String {
    let Ok(mut f) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map_or(from, |m| m.len());
    let start = from.max(len.saturating_sub(LOG_TAIL));
    let mut buf = Vec::new();
    let _ = f
        .seek(SeekFrom::Start(start))
        .and_then(|_| f.take(LOG_TAIL).read_to_end(&mut buf));
    String::from_utf8_lossy(&buf).trim().to_owned()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stops the agent under `paths`: asks it on the control socket, waits for
/// it to exit, then sends SIGTERM if it has not. Fails (`NotRunning`) when
/// no agent answers and the recorded pid is not alive.
pub fn stop(paths: &Paths) -> Result<(), ControlError> {
    let pid: Option<u32> = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let asked = ask(&paths.socket, "stop");
    if let Err(e) = asked
        && pid.is_none_or(|p| !alive(p))
    {
        clear_pid(paths);
        return Err(e);
    }
    if let Some(pid) = pid {
        let began = Instant::now();
        while alive(pid) && began.elapsed() < STOP_WITHIN {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    clear_pid(paths);
    let _ = std::fs::remove_file(&paths.socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_that_exits_at_once_is_an_error_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let args: Vec<OsString> = ["-c", "echo 'error[E020]: cannot take part' >&2; exit 2"]
            .iter()
            .map(OsString::from)
            .collect();
        match start(Path::new("/bin/sh"), &args, &paths) {
            Err(ControlError::Exited { status, log_tail }) => {
                assert!(status.contains('2'), "{status}");
                assert!(log_tail.contains("E020"), "{log_tail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!paths.pid.exists());
        assert!(matches!(stop(&paths), Err(ControlError::NotRunning { .. })));
    }
}
