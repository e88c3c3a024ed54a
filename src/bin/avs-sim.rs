//! `avs-sim`: local stand-ins for Amazon's services (tests, demo).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Local stand-ins for Login with Amazon and AVS. Not for production.
#[derive(Debug, Parser)]
#[command(name = "avs-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A stand-in for Login with Amazon (consent page and token endpoint).
    Lwa(avsd::sim::lwa::LwaArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    avsd::tls::install_provider();
    avsd::companion::cli::init_logging("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("avs-sim: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Lwa(args) => runtime.block_on(lwa(args)),
    }
}

async fn lwa(args: avsd::sim::lwa::LwaArgs) -> ExitCode {
    let config = match avsd::sim::lwa::SimConfig::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("avs-sim lwa: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("avs-sim lwa: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("avs-sim lwa listening on https://{a}"),
        Err(e) => {
            eprintln!("avs-sim lwa: {e}");
            return ExitCode::from(2);
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(avsd::companion::cli::wait_for_signals(shutdown.clone()));
    avsd::sim::lwa::run(listener, config, shutdown).await;
    ExitCode::SUCCESS
}
