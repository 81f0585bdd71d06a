//! `sensor`: parses arguments, sets up logging, runs the agent, and maps the
//! outcome to an exit code: 0 ok, 64 bad usage or configuration, 1 runtime
//! failure.

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use sensor::{
    agent, analyze,
    config::{
        cli::{AnalyzeArgs, ReportFormat, TopCli},
        Config, Mode, Options,
    },
};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// `EX_USAGE` from sysexits.h.
const EXIT_USAGE: u8 = 64;
/// The pinned aya version (see the workspace Cargo.toml).
const AYA_VERSION: &str = "0.14.0";

fn main() -> ExitCode {
    let top = match TopCli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let cli = match top.into_agent() {
        Ok(cli) => cli,
        Err(analyze) => {
            let (log_level, args) = *analyze;
            return analyze_main(log_level, args);
        }
    };
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sensor: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The filter was checked by validation; fall back to "info" regardless.
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        git = option_env!("SENSOR_GIT_HASH").unwrap_or("unknown"),
        aya = AYA_VERSION,
        "sensor starting"
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match config.mode {
            Mode::Check => agent::check(config).await,
            Mode::Run => {
                let shutdown = shutdown_signal().map_err(|source| agent::AgentError::Signal {
                    signal: "SIGINT/SIGTERM",
                    source,
                })?;
                agent::run(config, shutdown).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            if e.is_usage() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `sensor analyze`: prints the report, then any error that cut it short.
fn analyze_main(log_level: Option<String>, args: AnalyzeArgs) -> ExitCode {
    let options = Options {
        interval: args.interval,
        flows_file: args.flows_file,
        events: args.events,
        top_k: args.top_k,
        config: args.config,
        ..Options::default()
    };
    let config = match Config::from_options(Mode::Check, log_level, options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sensor: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let opts = analyze::AnalyzeOptions::from_config(args.file, &config);
    match analyze::run(&opts) {
        Ok((outcome, _)) => {
            let text = match args.format {
                ReportFormat::Text => outcome.report.to_text(),
                ReportFormat::Json => outcome.report.to_json(),
            };
            println!("{text}");
            match outcome.error {
                None => ExitCode::SUCCESS,
                Some(e) => {
                    eprintln!("sensor: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("sensor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed
/// before this returns, so a signal sent during start-up is not missed.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
