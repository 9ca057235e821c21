//! The `tensorguard` command: CLI parsing and glue; all logic lives in the
//! library crates.

mod api_cmd;
mod attest;
mod audit_cmd;
mod bench;
mod bench_aggregate;
mod bench_secagg;
mod bench_tasks;
mod bench_trust;
mod cli;
mod compute_cmd;
mod config;
mod demo;
mod demo_dashboard;
mod errors;
mod fleet;
mod fleet_cert;
mod job;
mod keys;
mod models_cmd;
mod output;
mod privacy;
mod runs;
mod system;
mod telemetry;
mod tty;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{
    AgentCommand, Cli, Command, ComputeCommand, ConfigCommand, CoordinatorCommand, EnrollCommand,
    RunsCommand,
};
use crate::errors::{Code, UserError};
use crate::output::Output;

fn main() -> ExitCode {
    set_thread_policy();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            eprintln!(
                "{}",
                UserError::new(
                    Code::Usage,
                    first,
                    "the command line could not be parsed",
                    "see `tensorguard --help` or `tensorguard <command> --help`"
                )
            );
            eprintln!(
                "{}",
                rendered.lines().skip(1).collect::<Vec<_>>().join("\n")
            );
            return ExitCode::from(2);
        }
    };
    let (service, long_running) = match &cli.command {
        Command::Coordinator(_) => ("tensorguard-coordinator", true),
        Command::Agent(_) | Command::Up(_) => ("tensorguard-agent", true),
        Command::Demo(_) => ("tensorguard-demo", false),
        _ => ("tensorguard", false),
    };
    let telemetry = telemetry::init(cli.verbose, service);
    let out = Output::new(cli.json);
    // Services always say whether their spans leave the machine; other
    // commands only when export is on.
    if long_running || !telemetry.status.starts_with("traces: not exported") {
        out.note(&telemetry.status);
    }
    match run(cli, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if out.json
                && !matches!(
                    e.code,
                    errors::Code::Untrusted | errors::Code::AuditTampered
                )
            {
                out.json_value(&e.to_json());
            }
            eprintln!("{}", out.red(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli, out: &Output) -> Result<(), UserError> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "tensorguard",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    if let Command::Bench(cmd) = cli.command {
        return bench::run(cmd, out);
    }
    if let Command::Attest(cmd) = cli.command {
        return attest::run(cmd, out);
    }
    if let Command::Privacy(cmd) = cli.command {
        return privacy::run(cmd, out);
    }
    if let Command::Config(ConfigCommand::Validate { file: Some(f) }) = &cli.command {
        // Validate the named file even when the active config is broken.
        let loaded = config::Loaded {
            path: None,
            file: config::FileConfig::default(),
        };
        return system::config_validate(Some(f), &loaded, out);
    }
    let loaded = config::load(cli.config.as_deref())?;
    let data_dir = config::data_dir(cli.data_dir.as_deref(), &loaded.file)?;
    match cli.command {
        Command::Demo(args) if args.compute => {
            compute_cmd::demo(args.models.as_deref(), &data_dir, out)
        }
        Command::Demo(args) => {
            let job = match &args.job {
                Some(path) => job::from_file(path)?.job,
                None => job::from_flags(&args, &loaded.file.demo)?,
            };
            let dashboard = args
                .dashboard
                .map(|addr| demo_dashboard::start(addr, &data_dir, out))
                .transpose()?;
            let summary = demo::run(&job, &args, &data_dir, out)?;
            if out.json {
                out.json_value(&summary);
            }
            if let Some(d) = dashboard {
                d.serve_until_interrupted(out);
            }
            Ok(())
        }
        Command::Runs(RunsCommand::List) => runs::list(&data_dir, out),
        Command::Runs(RunsCommand::Show { id }) => runs::show(&data_dir, &id, out),
        Command::Models(cmd) => models_cmd::run(cmd, &data_dir, out),
        Command::Info => {
            system::info(&loaded, &data_dir, out);
            Ok(())
        }
        Command::Doctor => system::doctor(&loaded, &data_dir, out),
        Command::Init(a) => system::init(a.dir.as_deref(), a.force, out),
        Command::Config(ConfigCommand::Validate { file }) => {
            system::config_validate(file.as_deref(), &loaded, out)
        }
        Command::Config(ConfigCommand::Show) => system::config_show(&loaded, &data_dir, out),
        Command::Coordinator(CoordinatorCommand::Start(a)) => {
            fleet::coordinator::start(&a, &data_dir, out)
        }
        Command::Agent(AgentCommand::Start(a)) => fleet::agent::start(&a, &data_dir, out),
        Command::Enroll(EnrollCommand::Create { ttl }) => {
            fleet::coordinator::enroll_create(ttl, &data_dir, out)
        }
        Command::Up(a) => fleet::daemon::up(&a, &data_dir, out),
        Command::Down => fleet::daemon::down(&data_dir, out),
        Command::Status { watch } => match compute_cmd::status_of(&data_dir) {
            // A compute node runs here: show it, with the agent's line when one runs too.
            Some(c) => {
                let _ = fleet::daemon::status(false, &data_dir, out);
                compute_cmd::print_status(&c, out);
                Ok(())
            }
            None => fleet::daemon::status(watch, &data_dir, out),
        },
        Command::Compute(ComputeCommand::Start(a)) => compute_cmd::start_node(&a, &data_dir, out),
        Command::Task(cmd) => compute_cmd::task(cmd, &data_dir, out),
        Command::Wallet(a) => compute_cmd::wallet(&a, &data_dir, out),
        Command::Peers { mesh } => compute_cmd::peers(&mesh, &data_dir, out),
        Command::Logs { follow } => fleet::daemon::logs(follow, &data_dir, out),
        Command::Keys(cmd) => keys::run(cmd, &data_dir, &loaded, out),
        Command::Api(cmd) => api_cmd::run(cmd, &data_dir, out),
        Command::Openapi => {
            let doc = tg_coordinator::api::openapi::document();
            let text = serde_json::to_string_pretty(&doc).map_err(|e| {
                crate::errors::UserError::new(
                    crate::errors::Code::Internal,
                    "cannot render the OpenAPI document",
                    e.to_string(),
                    "report this bug",
                )
            })?;
            println!("{text}");
            Ok(())
        }
        Command::Audit(cmd) => audit_cmd::run(cmd, &data_dir, out),
        Command::Completion { .. }
        | Command::Privacy(_)
        | Command::Bench(_)
        | Command::Attest(_) => Ok(()),
    }
}

/// One compute thread per training job: candle otherwise starts a thread pool
/// per matrix multiply sized to all cores, and in-process agents training in
/// parallel oversubscribe the machine (≈3× slower on 2 cores, ANCHORS.md).
/// Parallelism comes from running one agent per core instead. candle reads
/// RAYON_NUM_THREADS at every multiply; setting it in this process would need
/// `unsafe` (edition 2024), which this crate forbids, so the process replaces
/// itself once (exec, same pid, same arguments) with the variable set. A
/// user's own RAYON_NUM_THREADS is respected; if exec fails, training runs
/// with candle's default threads.
fn set_thread_policy() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    // Never re-exec a setuid/setgid run: current_exe may then not be what
    // the privileged loader started.
    #[cfg(unix)]
    if rustix::process::getuid() != rustix::process::geteuid()
        || rustix::process::getgid() != rustix::process::getegid()
    {
        return;
    }
    #[cfg(unix)]
    if let Ok(exe) = std::env::current_exe() {
        use std::os::unix::process::CommandExt;
        let failed = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("RAYON_NUM_THREADS", "1")
            .exec();
        eprintln!("note: could not pin training to one thread per job ({failed}); continuing");
    }
}
