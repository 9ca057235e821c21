//! `tensorguard bench …`: each benchmark's flags in, its JSON out; the
//! measuring is in tg-bench (the API's still beside the server it starts).

use crate::cli::BenchCommand;
use crate::errors::{UserError, invalid};
use crate::output::Output;

pub fn run(cmd: BenchCommand, out: &Output) -> Result<(), UserError> {
    match cmd {
        BenchCommand::Embed(a) => {
            out.json_value(&crate::bench_tasks::embed(&a)?);
            Ok(())
        }
        BenchCommand::Tasks(a) => {
            let report = crate::bench_tasks::run(&a, out)?;
            out.json_value(&report);
            Ok(())
        }
        BenchCommand::Fleet(a) => {
            let exe = std::env::current_exe().map_err(|e| {
                UserError::new(
                    crate::errors::Code::Internal,
                    "cannot find this program",
                    e.to_string(),
                    "run it by its path",
                )
            })?;
            let report = tg_bench::fleet::run(&tg_bench::fleet::FleetArgs {
                exe,
                agents: a.agents,
                rounds: a.rounds,
                secure_aggregation: a.secure_aggregation,
                job: a.job.clone(),
            })
            .map_err(|e| match e {
                tg_bench::BenchError::Args(m) => invalid(
                    "bench fleet cannot run this job",
                    m,
                    "check the job file (examples: deploy/examples/*.toml)",
                ),
                other => UserError::new(
                    crate::errors::Code::Internal,
                    "the fleet benchmark failed",
                    other.to_string(),
                    "see the logs in the work directory it names",
                ),
            })?;
            out.json_value(&report);
            Ok(())
        }
        BenchCommand::Api { rounds, requests } => {
            let report = tg_bench::api::run(rounds, requests).map_err(|e| {
                crate::errors::UserError::new(
                    crate::errors::Code::Internal,
                    "the API benchmark failed",
                    e.to_string(),
                    "re-run; if it persists, report it with the command line",
                )
            })?;
            out.json_value(&report);
            Ok(())
        }
        BenchCommand::Trust { vectors, repeat } => crate::bench_trust::run(&vectors, repeat, out),
        BenchCommand::Accountant { repeat } => {
            let v = tg_bench::accountant::run(repeat).map_err(|e| {
                invalid(
                    "the accountant benchmark failed",
                    e.to_string(),
                    "report it with the command line",
                )
            })?;
            out.json_value(&v);
            Ok(())
        }
        BenchCommand::Secagg(a) => crate::bench_secagg::run(&a, out),
        BenchCommand::Robust(a) => {
            let kind = a
                .aggregator
                .parse()
                .map_err(|e: tg_types::spec::SpecError| {
                    invalid(
                        format!("--aggregator {}", a.aggregator),
                        e.to_string(),
                        "pick one of the listed aggregators",
                    )
                })?;
            let report = tg_bench::robust::run(&tg_bench::robust::RobustArgs {
                files: a.files,
                kind,
                f: a.byzantine,
                norm_bound: a.norm_bound,
            })
            .map_err(|e| {
                invalid(
                    "bench robust cannot aggregate these updates",
                    e.to_string(),
                    "give readable safetensors files of one layout and an f the rule accepts",
                )
            })?;
            out.json_value(&serde_json::to_value(&report).unwrap_or_default());
            Ok(())
        }
        BenchCommand::Aggregate(a) => crate::bench_aggregate::run(&a, out),
        BenchCommand::AggregateFeed(a) => crate::bench_aggregate::feed(&a),
    }
}
