//! `avsd`: the Alexa Voice Service client daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use avsd_config::{self as config, AvsdConfig, DEFAULT_AVSD_CONFIG};

/// Alexa Voice Service client daemon for Raspberry Pi.
///
/// avsd keeps the connection to Alexa, captures the microphone when you
/// tap or hold the talk button, and plays Alexa's answers. It is driven over
/// the system D-Bus (name org.avsd.Avs1; try `avsctl status` or
/// `busctl introspect org.avsd.Avs1 /org/avsd/Avs1`) and is normally started
/// by systemd (avsd.service). Logs go to the journal: `journalctl -u avsd`.
#[derive(Parser, Debug)]
#[command(name = "avsd", version, about, long_about)]
struct Cli {
    /// Config file to read.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_AVSD_CONFIG)]
    config: PathBuf,
    /// Check the config file, print a summary and exit (1 if it has problems).
    #[arg(long)]
    check_config: bool,
}

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
