//! `ferry`: the operator CLI, the demo and the benchmarks.
//!
//! Errors are printed as one line (`error: what failed: why`) with a non-zero exit code:
//! 1 for failures, 2 for usage errors, 3 when a phase change was refused by its guards, 4 when
//! a change was made but live routers had not acknowledged it within `--wait`, 5 when `ferry
//! check` found anomalies. With `--json`,
//! an error or refusal is instead one object on stdout, `{"error": {"code", "message"}}`,
//! with the same exit codes.

mod args;
mod bench;
mod check;
mod commands;
mod context;
mod demo;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

/// Exit codes other than 0 (success), 1 (error) and 2 (usage, from clap).
pub mod exit {
    pub const REFUSED: u8 = 3;
    pub const NOT_EFFECTIVE: u8 = 4;
    /// `ferry check` found anomalies.
    pub const ANOMALIES: u8 = 5;
    /// Standard output was closed early; 128 + SIGPIPE, as shells report for other filters.
    pub const CLOSED_STDOUT: i32 = 141;
    // 86: a crash point ended the process (`ferry_crash::EXIT_CODE`, failpoints builds only).
}

fn init_logs(verbose: u8, json: bool) {
    use tracing_subscriber::EnvFilter;
    // Ferry's crates log as `ferry_*`; the `ferry` directive covers them all.
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "info,ferry=debug",
        _ => "debug,ferry=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A reader that goes away (`ferry status --watch | head`) ends the program quietly, as it
/// would any Unix filter, instead of with a panic about a broken pipe.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(exit::CLOSED_STDOUT);
        }
        default(info);
    }));
}

/// Parses the flags; a usage error with `--json` is reported as JSON (exit 2), help and
/// version are printed as clap prints them.
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if output::json_requested() && e.use_stderr() => {
            output::json_error("usage", e.kind().as_str().unwrap_or("invalid usage"));
            eprint!("{e}");
            Err(ExitCode::from(2))
        }
        Err(e) => e.exit(),
    }
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Crash points (FERRY_CRASH_AT, …) in a binary built without them are an error, so a crash
    // test cannot pass by testing nothing.
    if let Err(e) = ferry_crash::check_build() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    init_logs(cli.global.verbose, cli.global.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if output::json_requested() => {
            output::json_error(output::error_code(&e), &format!("{e:#}"));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(&cli.global, &args).await,
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Check(args) => check::run(&args).await,
        command => {
            let ctx = context::Context::open(&cli.global).await?;
            commands::run(&ctx, command).await
        }
    }
}
