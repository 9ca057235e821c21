//! The agent daemon: `up` starts `agent start` in the background with a pid
//! file, a log file and a control socket; `status`, `logs` and `down` use them.
//!
//! Design decision: the control socket is a Unix domain socket in a
//! directory of mode 0700, itself mode 0600, so only the agent's own user can
//! ask for status or stop it — no port, no password. The protocol is one
//! line in, one JSON line out.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tg_agent::net::Status;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};

use crate::cli::UpArgs;
use crate::errors::{CliError, Code};
use crate::output::Output;

/// Where the daemon keeps its files.
pub struct Paths {
    /// `run/` (mode 0700).
    pub dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Pid file.
    pub pid: PathBuf,
    /// Log file.
    pub log: PathBuf,
}

impl Paths {
    /// The daemon files under a data dir.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("run");
        Self {
            socket: dir.join("agent.sock"),
            pid: dir.join("agent.pid"),
            log: data_dir.join("agent.log"),
            dir,
        }
    }
}

fn io_err(what: String, e: std::io::Error, fix: &str) -> CliError {
    CliError::new(Code::DataDirUnwritable, what, e.to_string(), fix)
}

/// Serves the control socket in the background.
pub async fn serve_control(socket: &Path, status: Arc<Status>) -> Result<(), CliError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            io_err(
                format!("cannot create {}", dir.display()),
                e,
                "choose a writable --data-dir",
            )
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            io_err(
                format!("cannot restrict {}", dir.display()),
                e,
                "check the directory's owner",
            )
        })?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| {
        io_err(
            format!("cannot bind {}", socket.display()),
            e,
            "is another agent running? try `tensorguard down`",
        )
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        io_err(
            format!("cannot restrict {}", socket.display()),
            e,
            "check the directory's owner",
        )
    })?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let status = status.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                let mut rd = tokio::io::BufReader::new(rd).take(256);
                if rd.read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = match line.trim() {
                    "status" => serde_json::to_string(&status.snapshot()).unwrap_or_default(),
                    "stop" => "{\"stopping\":true}".to_owned(),
                    other => serde_json::json!({"error": format!("unknown command `{other}`; use status or stop")}).to_string(),
                };
                let _ = wr.write_all(format!("{reply}\n").as_bytes()).await;
                let _ = wr.flush().await;
                if line.trim() == "stop" {
                    tracing::info!("stopping on request from the control socket");
                    std::process::exit(0);
                }
            });
        }
    });
    Ok(())
}

fn ask(paths: &Paths, command: &str) -> Result<serde_json::Value, CliError> {
    let not_running = |e: std::io::Error| {
        CliError::new(
            Code::NotRunning,
            "no agent is running here",
            format!("{}: {e}", paths.socket.display()),
            "start one with `tensorguard up --coordinator ADDR` (same --data-dir)",
        )
    };
    let mut s = UnixStream::connect(&paths.socket).map_err(not_running)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(not_running)?;
    s.write_all(format!("{command}\n").as_bytes())
        .map_err(not_running)?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(not_running)?;
    serde_json::from_str(&line).map_err(|e| {
        CliError::new(
            Code::Internal,
            "unreadable answer from the agent",
            e.to_string(),
            "check `tensorguard logs`",
        )
    })
}

/// `tensorguard up`.
pub fn up(args: &UpArgs, data_dir: &Path, out: &Output) -> Result<(), CliError> {
    let paths = Paths::new(data_dir);
    if ask(&paths, "status").is_ok() {
        return Err(CliError::new(
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
        CliError::new(
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
            CliError::new(
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
pub fn down(data_dir: &Path, out: &Output) -> Result<(), CliError> {
    let paths = Paths::new(data_dir);
    let pid: Option<u32> = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let asked = ask(&paths, "stop");
    if asked.is_err() && pid.is_none_or(|p| !alive(p)) {
        let _ = std::fs::remove_file(&paths.pid);
        return Err(asked.err().unwrap_or_else(|| {
            CliError::new(Code::NotRunning, "no agent is running here", "", "")
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
pub fn status(watch: bool, data_dir: &Path, out: &Output) -> Result<(), CliError> {
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
pub fn logs(follow: bool, data_dir: &Path, out: &Output) -> Result<(), CliError> {
    let paths = Paths::new(data_dir);
    let mut f = std::fs::File::open(&paths.log).map_err(|e| {
        CliError::new(
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
