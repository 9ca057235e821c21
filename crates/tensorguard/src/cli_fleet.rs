//! Flags of the fleet commands: `coordinator`, `agent`, `enroll`, `up`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Run (or, after a crash, resume) the job in a job file.
    Start(CoordinatorStartArgs),
}

#[derive(Debug, Args)]
pub struct CoordinatorStartArgs {
    /// Job file (see deploy/examples/digits-secure.toml). Optional with
    /// --serve, where jobs also come through `POST /api/v1/jobs`.
    #[arg(long, value_name = "JOB.toml")]
    pub job: Option<PathBuf>,
    /// Keep running after the job: take further jobs from the REST API
    /// (needs --api), one at a time, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Listen address (repeatable); overrides the job file's [network] listen.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<tg_net::Multiaddr>,
    /// Serve the dashboard (/), the REST API (/api/v1, bearer tokens) and
    /// /metrics on this address; `--api` alone means 127.0.0.1:9100.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = "127.0.0.1:9100")]
    pub api: Option<std::net::SocketAddr>,
    /// Serve the API over TLS: certificate chain and private key (PEM).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Identity key (default: identity.key in the data dir, created on first use).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Turn off mDNS even if the job file enables it.
    #[arg(long)]
    pub no_mdns: bool,
    /// TESTING ONLY: admit agents with simulated attestation (labelled
    /// UNTRUSTED), run jobs whose DP noise is simulated from a public seed
    /// (labelled SIMULATION, not private), and run a job's attested
    /// aggregator without a TEE (labelled UNTRUSTED); in every output and in
    /// the audit log.
    #[arg(long)]
    pub allow_simulated: bool,
    /// Look for TEE interfaces (for an attested aggregator's evidence)
    /// under this root instead of / (containers, tests).
    #[arg(long, value_name = "DIR")]
    pub tee_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent in the foreground.
    Start(Box<AgentStartArgs>),
}

#[derive(Debug, Args, Clone)]
pub struct AgentStartArgs {
    /// The coordinator's address, as printed by `coordinator start`.
    #[arg(long, value_name = "MULTIADDR", required_unless_present = "discover")]
    pub coordinator: Option<tg_net::Multiaddr>,
    /// Find the coordinator on the local network (mDNS).
    #[arg(long)]
    pub discover: bool,
    /// Local training data: digits, csv:PATH or mnist:DIR.
    #[arg(long, default_value = "digits", value_name = "SPEC")]
    pub dataset: String,
    /// Use one shard I/N of the dataset (demonstrations on one public dataset).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// How --shard splits the dataset: iid, dirichlet:A or shards:K.
    #[arg(long, default_value = "iid")]
    pub partition: String,
    /// Seed of sharding and local shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// One-time enrollment token from the coordinator's operator.
    #[arg(long, value_name = "TOKEN", env = "TENSORGUARD_ENROLL_TOKEN")]
    pub enroll: Option<String>,
    /// Name shown to the coordinator (default: $HOSTNAME).
    #[arg(long)]
    pub name: Option<String>,
    /// Exit when the job finishes instead of waiting for the next one.
    #[arg(long)]
    pub once: bool,
    /// Listen address (repeatable; by default the agent only dials out).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<tg_net::Multiaddr>,
    /// Serve /metrics on this address.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Identity key (default: identity.key in the data dir, created on first use).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Control socket (set by `tensorguard up`).
    #[arg(long, hide = true, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Run without a TEE even when a job requires one: the agent sends
    /// simulated evidence and is labelled UNTRUSTED everywhere.
    #[arg(long)]
    pub insecure: bool,
    /// The data owner's policy (TOML): secure-aggregation floors, whether
    /// plaintext rounds may run, a per-round ε cap and the dataset's total
    /// budget, kept across jobs in the data dir. See docs/THREAT_MODEL.md.
    #[arg(long, value_name = "FILE", env = "TENSORGUARD_AGENT_POLICY")]
    pub policy: Option<PathBuf>,
    /// Let rounds without secure aggregation run (the coordinator then sees
    /// this agent's update). Off by default.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// This agent's fleet certificate (`keys certify` on the fleet root's
    /// machine), presented when it joins.
    #[arg(long, value_name = "FILE")]
    pub certificate: Option<PathBuf>,
    /// Look for TEE interfaces under this root instead of / (containers, tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub tee_root: PathBuf,
    /// SEV-SNP: the VCEK/VLEK (DER or PEM) to send with reports, when the
    /// host does not supply it (repeatable).
    #[arg(long, value_name = "FILE")]
    pub tee_cert: Vec<PathBuf>,
    /// TDX/SGX: DCAP collateral (JSON) to send with quotes.
    #[arg(long, value_name = "FILE")]
    pub tee_collateral: Option<PathBuf>,
    /// Require the coordinator to be an attested aggregator meeting this
    /// attestation policy (TOML or JSON, as `attest verify --policy`):
    /// its TEE evidence must bind the job, its peer id and the key this
    /// agent seals its updates to; otherwise the agent refuses (E094).
    #[arg(long, value_name = "FILE")]
    pub aggregator_policy: Option<PathBuf>,
    /// TESTING ONLY: accept a coordinator's simulated aggregator evidence
    /// (labelled UNTRUSTED) even with --aggregator-policy.
    #[arg(long)]
    pub allow_simulated_aggregator: bool,
    /// SIMULATION: this agent poisons the federation (sign-flip | scaling |
    /// noise | label-flip | backdoor), to test a coordinator's defences.
    /// Labelled in every output; refused with a data owner's --policy.
    #[arg(long, value_name = "KIND")]
    pub simulate_attack: Option<String>,
}

impl AgentStartArgs {
    /// These arguments as command-line flags (for `up` to pass on).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |k: &str, val: String| {
            v.push(k.into());
            v.push(val.into());
        };
        if let Some(c) = &self.coordinator {
            push("--coordinator", c.to_string());
        }
        push("--dataset", self.dataset.clone());
        if let Some(s) = &self.shard {
            push("--shard", s.clone());
        }
        push("--partition", self.partition.clone());
        push("--seed", self.seed.to_string());
        if let Some(t) = &self.enroll {
            push("--enroll", t.clone());
        }
        if let Some(n) = &self.name {
            push("--name", n.clone());
        }
        for l in &self.listen {
            push("--listen", l.to_string());
        }
        if let Some(m) = self.metrics {
            push("--metrics", m.to_string());
        }
        if let Some(k) = &self.key_file {
            push("--key-file", k.display().to_string());
        }
        if let Some(s) = &self.control_socket {
            push("--control-socket", s.display().to_string());
        }
        push("--tee-root", self.tee_root.display().to_string());
        for c in &self.tee_cert {
            push("--tee-cert", c.display().to_string());
        }
        if let Some(c) = &self.tee_collateral {
            push("--tee-collateral", c.display().to_string());
        }
        if self.insecure {
            v.push("--insecure".into());
        }
        if let Some(p) = &self.policy {
            v.push("--policy".into());
            v.push(p.clone().into_os_string());
        }
        if self.allow_plaintext {
            v.push("--allow-plaintext".into());
        }
        if let Some(p) = &self.aggregator_policy {
            v.push("--aggregator-policy".into());
            v.push(p.clone().into_os_string());
        }
        if self.allow_simulated_aggregator {
            v.push("--allow-simulated-aggregator".into());
        }
        if let Some(k) = &self.simulate_attack {
            v.push("--simulate-attack".into());
            v.push(k.into());
        }
        if let Some(c) = &self.certificate {
            v.push("--certificate".into());
            v.push(c.clone().into_os_string());
        }
        if self.discover {
            v.push("--discover".into());
        }
        if self.once {
            v.push("--once".into());
        }
        v
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Stay attached instead of running in the background.
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub agent: AgentStartArgs,
}

#[derive(Debug, Subcommand)]
pub enum EnrollCommand {
    /// Print a one-time token that admits one agent.
    Create {
        /// How long the token stays valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

/// TLS for the API and dashboard (rustls). Both or neither.
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// Certificate chain (PEM), leaf first.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM; PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the API over plain HTTP on an address other hosts can reach
    /// (bearer tokens then cross the network in the clear). Refused without it.
    #[arg(long)]
    pub insecure_http: bool,
    /// Require this bearer token (the file's first line) on `/metrics`
    /// (Prometheus: `authorization: { credentials_file: … }`).
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
}
