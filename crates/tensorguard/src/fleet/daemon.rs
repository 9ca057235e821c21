//! The agent daemon: `up` starts `agent start` in the background with a pid
//! file, a log file and a control socket (`tg_agent::control`); `status`,
//! `logs` and `down` use them.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use tg_agent::control::{ControlError, Paths};

use crate::cli::UpArgs;
use crate::errors::{Code, UserError};
use crate::output::Output;

fn io_err(what: String, e: std::io::Error, fix: &str) -> UserError {
    UserError::new(Code::DataDirUnwritable, what, e.to_string(), fix)
}

/// The control socket's error, with its code and what to do.
pub fn control_error(e: ControlError) -> UserError {
    match e {
        ControlError::Setup { what, source } => io_err(
            what,
            source,
            "choose a writable --data-dir; if another agent is running, `tensorguard down` first",
        ),
        ControlError::NotRunning { socket, source } => UserError::new(
            Code::NotRunning,
            "no agent is running here",
            format!("{socket}: {source}"),
            "start one with `tensorguard up --coordinator ADDR` (same --data-dir)",
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
    if ask(&paths, "status").is_ok() {
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
        std::fs::create_dir_all(&paths.dir).map_err(|e| {
            io_err(
                format!("cannot create {}", paths.dir.display()),
                e,
                "choose a writable --data-dir",
            )
        })?;
        let _ = std::fs::write(&paths.pid, format!("{}\n", std::process::id()));
        let r = super::agent::start(&agent, data_dir, out);
        let _ = std::fs::remove_file(&paths.pid);
        return r;
    }
    std::fs::create_dir_all(&paths.dir).map_err(|e| {
        io_err(
            format!("cannot create {}", paths.dir.display()),
            e,
            "choose a writable --data-dir",
        )
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| {
            io_err(
                format!("cannot open {}", paths.log.display()),
                e,
                "choose a writable --data-dir",
            )
        })?;
    let exe = std::env::current_exe().map_err(|e| {
        UserError::new(
            Code::Internal,
            "cannot find this program",
            e.to_string(),
            "run tensorguard by its full path",
        )
    })?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("-v")
        .arg("agent")
        .arg("start");
    cmd.args(agent.to_args());
    use std::os::unix::process::CommandExt;
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| io_err("log file".into(), e, "check the disk"))?,
        )
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            UserError::new(
                Code::Internal,
                "cannot start the agent",
                e.to_string(),
                "check the log and permissions",
            )
        })?;
    let pid = child.id();
    std::fs::write(&paths.pid, format!("{pid}\n")).map_err(|e| {
        io_err(
            format!("cannot write {}", paths.pid.display()),
            e,
            "choose a writable --data-dir",
        )
    })?;
    for _ in 0..100 {
        if ask(&paths, "status").is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `tensorguard down`.
pub fn down(data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let paths = Paths::new(data_dir);
    let pid: Option<u32> = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let asked = ask(&paths, "stop");
    if asked.is_err() && pid.is_none_or(|p| !alive(p)) {
        let _ = std::fs::remove_file(&paths.pid);
        return Err(asked.err().unwrap_or_else(|| {
            UserError::new(Code::NotRunning, "no agent is running here", "", "")
        }));
    }
    if let Some(pid) = pid {
        for _ in 0..100 {
            if !alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    let _ = std::fs::remove_file(&paths.pid);
    let _ = std::fs::remove_file(&paths.socket);
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
