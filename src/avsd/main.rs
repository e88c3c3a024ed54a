//! `avsd`: the Alexa Voice Service client daemon.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use avsd::cli::Cli;
use avsd_config::{self as config, AvsdConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load::<AvsdConfig>(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        print!("{}", config.summary(&cli.config));
        return ExitCode::SUCCESS;
    }
    kit::logging::init(&config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("avsd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(e) = kit::signals::watch("avsd", shutdown.clone()) {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        match avsd::daemon::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    });
    // Do not wait for stray blocking tasks: the deadline was in `run`.
    runtime.shutdown_background();
    code
}
