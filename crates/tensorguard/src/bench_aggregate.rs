//! `tensorguard bench aggregate`: flags, the agents' child process, output.

use std::process::{Command, Stdio};

use clap::Args;
use tg_bench::aggregate::{AggregateArgs, Mode};

use crate::errors::{Code, UserError, invalid};
use crate::output::Output;

#[derive(Debug, Args)]
pub struct AggregateBenchArgs {
    /// Agents whose updates stream in.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Model size (f32 values).
    #[arg(long, default_value_t = 1_000_000)]
    pub dim: usize,
    /// Keep every update until the round's end (the old batch path), for comparison.
    #[arg(long)]
    pub batch: bool,
    /// Seed of the synthetic updates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct FeedArgs {
    #[arg(long)]
    pub clients: usize,
    #[arg(long)]
    pub dim: usize,
    #[arg(long)]
    pub seed: u64,
}

fn bench_error(e: tg_bench::BenchError) -> UserError {
    match e {
        tg_bench::BenchError::Args(why) => {
            invalid("bench aggregate", why, "check --clients and --dim")
        }
        other => UserError::new(
            Code::Internal,
            "the aggregation benchmark failed",
            other.to_string(),
            "re-run; if it persists, report it with the command line",
        ),
    }
}

pub fn run(a: &AggregateBenchArgs, out: &Output) -> Result<(), UserError> {
    let args = AggregateArgs {
        clients: a.clients,
        dim: a.dim,
        mode: if a.batch {
            Mode::Batch
        } else {
            Mode::Streaming
        },
        seed: a.seed,
    };
    args.check().map_err(bench_error)?;
    let exe = std::env::current_exe().map_err(|e| {
        UserError::new(
            Code::Internal,
            "cannot find this executable to start the agents' process",
            e.to_string(),
            "run tensorguard from a path that exists",
        )
    })?;
    let mut child = Command::new(exe)
        .args(["bench", "aggregate-feed", "--clients"])
        .arg(a.clients.to_string())
        .arg("--dim")
        .arg(a.dim.to_string())
        .arg("--seed")
        .arg(a.seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            UserError::new(
                Code::Internal,
                "cannot start the agents' process",
                e.to_string(),
                "check that processes can be spawned here",
            )
        })?;
    let mut pipe = child.stdout.take().ok_or_else(|| {
        UserError::new(
            Code::Internal,
            "no pipe to the agents' process",
            "stdout was not captured",
            "re-run",
        )
    })?;
    let report = tg_bench::aggregate::aggregate(args, &mut pipe);
    drop(pipe);
    let _ = child.wait();
    let report = report.map_err(bench_error)?;
    if out.json {
        out.json_value(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        out.line(&format!(
            "{:?}: {} updates of {} values; peak RSS {:.1} MB, {:.1} MB above idle ({:.2}× the model's f32 size); {:.2} s",
            report.mode,
            report.clients,
            report.dim,
            report.peak_rss_bytes as f64 / 1e6,
            report.above_idle_bytes as f64 / 1e6,
            report.above_idle_per_model,
            report.seconds
        ));
    }
    Ok(())
}

pub fn feed(a: &FeedArgs) -> Result<(), UserError> {
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    tg_bench::aggregate::feed(a.clients, a.dim, a.seed, &mut lock).map_err(bench_error)
}
