//! `tensorguard bench …`: each benchmark's flags in, its JSON out; the
//! measuring is in tg-bench (and, for the fleet and the API, beside the
//! processes and servers they start).

use crate::cli::BenchCommand;
use crate::errors::{CliError, invalid};
use crate::output::Output;

pub fn run(cmd: BenchCommand, out: &Output) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Fleet(a) => crate::fleet::bench::run(&a, out),
        BenchCommand::Api { rounds, requests } => crate::bench_api::run(rounds, requests, out),
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
        BenchCommand::Aggregate(a) => crate::bench_aggregate::run(&a, out),
        BenchCommand::AggregateFeed(a) => crate::bench_aggregate::feed(&a),
    }
}
