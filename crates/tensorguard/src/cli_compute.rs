//! Compute-network commands: `compute start`, `task submit|show`, `wallet`, `peers`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `tensorguard compute …`
#[derive(Debug, Subcommand)]
pub enum ComputeCommand {
    /// Run a compute node in the foreground: join the DHT, serve tasks under caps, earn receipts.
    Start(Box<ComputeStartArgs>),
}

/// Where a compute node listens and whom it joins through.
#[derive(Debug, Args, Clone)]
pub struct MeshArgs {
    /// Peers to join the network through (multiaddr with /p2p/ID). Default:
    /// the compute node running in this data directory, if any.
    #[arg(long, value_name = "ADDR")]
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS.
    #[arg(long)]
    pub mdns: bool,
    /// The network is one LAN (or this machine): reachability checks
    /// (AutoNAT) test private addresses too; on the internet leave it off.
    #[arg(long)]
    pub lan: bool,
    /// Identity key file (default: the node identity in the data directory's keyring).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// `tensorguard compute start`.
#[derive(Debug, Args)]
pub struct ComputeStartArgs {
    /// Addresses to listen on.
    #[arg(long, value_name = "ADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    pub listen: Vec<String>,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// A relay to listen through (`/ip4/…/tcp/…/p2p/RELAY_ID`), for a node
    /// behind NAT: once the relay accepts, `status` says `relayed` and peers
    /// reach the node by its circuit address. Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub relay: Vec<String>,
    /// Directory of model artifacts (default: DATA/compute/models). Missing
    /// models are fetched from peers and checked against their pinned hashes.
    #[arg(long, env = "TENSORGUARD_MODELS", value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// CPU cap, percent of one core, enforced over a 10 s window.
    #[arg(long, default_value_t = 50, value_name = "PCT")]
    pub cpu_cap: u32,
    /// Memory cap: above this resident set the node refuses tasks.
    #[arg(long, default_value_t = 1024, value_name = "MB")]
    pub mem_cap_mb: u64,
    /// Bound on the model files this node fetched itself (least recently
    /// used evicted first to make room for a fetch); a `--models` directory
    /// you filled is never evicted.
    #[arg(long, default_value_t = 2048, value_name = "MB")]
    pub cache_max_mb: u64,
    /// Tasks queued or running at most.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_queue: u32,
    /// Inference threads (each at nice 19).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Longest one task may run or wait, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub task_timeout: u64,
    /// Join and route, but run no tasks for others.
    #[arg(long)]
    pub no_serve: bool,
    /// Serve Prometheus `/metrics` on this address (peers, tasks by outcome,
    /// task latency, CPU-cap use, RSS, verification disagreements).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Require this bearer token (the file's first line) on `/metrics`;
    /// needed to serve it on an address other than loopback.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// SIMULATION: return perturbed embeddings (a lying worker, for red-team
    /// tests). Labelled in every output; never use it on a real network.
    #[arg(long)]
    pub simulate_lying: bool,
}

/// `tensorguard task …`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task to the compute network and follow it to Done.
    Submit(Box<TaskSubmitArgs>),
    /// Show a task from this data directory's task store.
    Show {
        /// Task id (or a unique prefix of 6+ hex digits).
        id: String,
    },
}

/// `tensorguard task submit`.
#[derive(Debug, Args)]
pub struct TaskSubmitArgs {
    /// Task kind: embed | classify | chunk.
    #[arg(long)]
    pub kind: String,
    /// The text, or @FILE to read it from a file (one text per line for
    /// embed and classify; the whole file for chunk).
    pub text: String,
    /// Agreeing results needed from distinct workers (1–5), or `auto` for
    /// BOINC-style adaptive replication.
    #[arg(long, default_value = "2")]
    pub redundancy: String,
    /// Give up after this many seconds (the task stays stored and resumes on the next submit).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// `tensorguard wallet`.
#[derive(Debug, Args)]
pub struct WalletArgs {
    /// Write every receipt to FILE as JSON anyone can verify.
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    /// Verify an exported wallet (signatures, payee, no double payment, total).
    #[arg(long, value_name = "FILE", conflicts_with = "export")]
    pub verify: Option<PathBuf>,
    /// Identity key file (default: the node identity in the data directory's keyring).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}
