//! `up`, `down`, `status` and `logs`: the background agent of
//! `tg_agent::daemon`, asked through its control socket.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use std::ffi::OsString;

use tg_agent::control::{ControlError, Paths};
use tg_agent::daemon;

use crate::cli::UpArgs;
use crate::errors::{Code, UserError};
use crate::output::Output;

/// The control socket's error, with its code and what to do.
pub fn control_error(e: ControlError) -> UserError {
    match e {
        ControlError::Setup { what, source } => UserError::new(
            Code::DataDirUnwritable,
            what,
            source.to_string(),
            "choose a writable --data-dir; if another agent is running, `tensorguard down` first",
        ),
        ControlError::NotRunning { socket, source } => UserError::new(
            Code::NotRunning,
            "no agent is running here",
            format!("{socket}: {source}"),
            "start one with `tensorguard up --coordinator ADDR` (same --data-dir)",
        ),
        ControlError::Exited { status, log_tail } => UserError::new(
            Code::Internal,
            format!("the agent exited ({status}) before it was ready"),
            if log_tail.is_empty() {
                "its log is empty".to_owned()
            } else {
                log_tail
            },
            "fix what its log says (above), then `tensorguard up` again",
        ),
        other => UserError::new(
            Code::Internal,
            "unreadable answer from the agent",
            other.to_string(),
            "check `tensorguard logs`",
        ),
    }
}

fn ask(paths: &Paths, command: &str) -> Result<serde_json::Value, UserError> {
    tg_agent::control::ask(&paths.socket, command).map_err(control_error)
}

/// `tensorguard up`.
pub fn up(args: &UpArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let paths = Paths::new(data_dir);
    if daemon::running(&paths) {
        return Err(UserError::new(
            Code::AlreadyExists,
            "an agent is already running with this data dir",
            format!("its control socket {} answers", paths.socket.display()),
            "see `tensorguard status`, or stop it with `tensorguard down`",
        ));
    }
    let mut agent = args.agent.clone();
    agent.control_socket = Some(paths.socket.clone());
    if args.foreground {
        daemon::record_foreground(&paths).map_err(control_error)?;
        let r = super::agent::start(&agent, data_dir, out);
        daemon::clear_pid(&paths);
        return r;
    }
    let exe = std::env::current_exe().map_err(|e| {
        UserError::new(
            Code::Internal,
            "cannot find this program",
            e.to_string(),
            "run tensorguard by its full path",
        )
    })?;
    let mut argv: Vec<OsString> = vec!["--data-dir".into(), data_dir.into(), "-v".into()];
    argv.extend(["agent".into(), "start".into()]);
    argv.extend(agent.to_args());
    let pid = daemon::start(&exe, &argv, &paths).map_err(control_error)?;
    if out.json {
        out.json_value(&serde_json::json!({"pid": pid, "log": paths.log, "socket": paths.socket}));
    } else {
        out.line(&format!(
            "agent started (pid {pid}); log {}; `tensorguard status` to watch",
            paths.log.display()
        ));
    }
    Ok(())
}

/// `tensorguard down`.
pub fn down(data_dir: &Path, out: &Output) -> Result<(), UserError> {
    daemon::stop(&Paths::new(data_dir)).map_err(control_error)?;
    out.line("agent stopped");
    Ok(())
}

/// `tensorguard status [--watch]`.
pub fn status(watch: bool, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let paths = Paths::new(data_dir);
    loop {
        let s = ask(&paths, "status")?;
        if out.json {
            out.line(&s.to_string());
        } else {
            let get = |k: &str| {
                s.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let epsilon = if s.get("epsilon_unbounded").and_then(|v| v.as_bool()) == Some(true) {
                " · ε ∞ (a round without DP ran)".to_owned()
            } else {
                s.get("epsilon")
                    .and_then(|v| v.as_f64())
                    .map(|e| format!(" · ε {e:.4} (own ledger)"))
                    .unwrap_or_default()
            };
            out.line(&format!(
                "agent {} · {} · job {} · round {} · answered {} · refused {} · up {}s · {} examples{epsilon}",
                get("peer_id"), get("state"), get("job"), get("round"), get("answered"), get("refused"), get("uptime_s"), get("examples")
            ));
        }
        if !watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `tensorguard logs [-f]`.
pub fn logs(follow: bool, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let paths = Paths::new(data_dir);
    let mut f = std::fs::File::open(&paths.log).map_err(|e| {
        UserError::new(
            Code::NotRunning,
            format!("no log at {}", paths.log.display()),
            e.to_string(),
            "start the agent with `tensorguard up`",
        )
    })?;
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    print!("{buf}");
    let _ = out;
    if !follow {
        return Ok(());
    }
    let mut pos = f.stream_position().unwrap_or(0);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = f.metadata().map(|m| m.len()).unwrap_or(pos);
        if len > pos {
            let mut more = String::new();
            let _ = f.read_to_string(&mut more);
            print!("{more}");
            let _ = std::io::stdout().flush();
            pos = f.stream_position().unwrap_or(len);
        } else if len < pos {
            pos = 0;
            let _ = f.seek(std::io::SeekFrom::Start(0));
        }
    }
}
