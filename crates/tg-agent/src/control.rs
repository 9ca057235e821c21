//! The running agent's control socket: `status` and `stop` for the agent's
//! own user, and the client the CLI asks it with.
//!
//! Design decision: the socket is a Unix domain socket in a directory of
//! mode 0700, itself mode 0600, so only the agent's own user can ask for
//! status or stop it — no port, no password. The protocol is one line in
//! (at most 256 bytes), one JSON line out.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};

use crate::net::Status;

/// Where a daemonized agent keeps its files under a data directory.
#[derive(Clone, Debug)]
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

/// Why the control socket could not be served or asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Setting up the socket failed (`what` names the step and path).
    #[error("{what}: {source}")]
    Setup {
        /// The step and path.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No agent answers on the socket.
    #[error("{socket}: {source}")]
    NotRunning {
        /// The socket asked.
        socket: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The agent's answer is not JSON.
    #[error("unreadable answer from the agent: {0}")]
    Unreadable(String),
    /// A background agent exited before it answered.
    #[error("the agent exited ({status}) before it was ready")]
    Exited {
        /// How it exited.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
}

fn setup(what: String) -> impl FnOnce(std::io::Error) -> ControlError {
    move |source| ControlError::Setup { what, source }
}

/// Serves the control socket in the background: `status` answers the
/// agent's status, `stop` answers and then calls `stop`.
pub async fn serve(
    socket: &Path,
    status: Arc<Status>,
    stop: Arc<dyn Fn() + Send + Sync>,
) -> Result<(), ControlError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(setup(format!("cannot create {}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(setup(format!("cannot restrict {}", dir.display())))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(setup(format!("cannot bind {}", socket.display())))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(setup(format!("cannot restrict {}", socket.display())))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (status, stop) = (status.clone(), stop.clone());
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
                    stop();
                }
            });
        }
    });
    Ok(())
}

/// Sends `command` to the agent on `socket` and returns its JSON answer.
pub fn ask(socket: &Path, command: &str) -> Result<serde_json::Value, ControlError> {
    let not_running = |source| ControlError::NotRunning {
        socket: socket.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(not_running)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(not_running)?;
    s.write_all(format!("{command}\n").as_bytes())
        .map_err(not_running)?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(not_running)?;
    serde_json::from_str(&line).map_err(|e| ControlError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_status_and_stop_are_answered_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopped.clone();
        serve(
            &paths.socket,
            Arc::new(Status::default()),
            Arc::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&paths.dir), mode(&paths.socket)), (0o700, 0o600));
        let socket = paths.socket.clone();
        let ask_on = move |c: &'static str| {
            let socket = socket.clone();
            tokio::task::spawn_blocking(move || ask(&socket, c))
        };
        let unknown = ask_on("rm -rf /").await.unwrap().unwrap();
        assert!(
            unknown["error"]
                .as_str()
                .unwrap()
                .contains("unknown command")
        );
        assert!(ask_on("status").await.unwrap().unwrap().is_object());
        // An overlong line is cut at 256 bytes, never buffered whole.
        let long: &'static str = Box::leak("x".repeat(10_000).into_boxed_str());
        assert!(ask_on(long).await.unwrap().is_ok());
        assert!(!stopped.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(ask_on("stop").await.unwrap().unwrap()["stopping"], true);
        for _ in 0..100 {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("stop was not called");
    }
}
