//! `avs-sim`: local stand-ins for Amazon's services (tests, demo).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Local stand-ins for Login with Amazon and AVS. Not for production.
#[derive(Debug, Parser)]
#[command(name = "avs-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A stand-in for Login with Amazon (consent page and token endpoint).
    Lwa(avsd::sim::lwa::LwaArgs),
    /// A stand-in for the Alexa Voice Service HTTP/2 API, with a control API.
    Avs(avsd::sim::avs::AvsArgs),
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
        Command::Avs(args) => runtime.block_on(avs(args)),
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

async fn avs(args: avsd::sim::avs::AvsArgs) -> ExitCode {
    let mut config = match avsd::sim::avs::AvsConfig::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("avs-sim avs: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(addr) = args.control
        && !addr.ip().is_loopback()
    {
        eprintln!(
            "avs-sim avs: --control {addr}: the control API has no authentication; give a loopback address such as 127.0.0.1:0"
        );
        return ExitCode::from(1);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("avs-sim avs: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let control = match args.control {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("avs-sim avs: cannot listen on {addr} (--control): {e}");
                return ExitCode::from(2);
            }
        },
    };
    // Both lines before serving, so a test reading them can connect at once.
    match listener.local_addr() {
        Ok(a) => println!("avs-sim avs listening on https://{a}"),
        Err(e) => {
            eprintln!("avs-sim avs: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(l) = &control {
        match l.local_addr() {
            Ok(a) => println!("avs-sim avs control on http://{a}"),
            Err(e) => {
                eprintln!("avs-sim avs: {e}");
                return ExitCode::from(2);
            }
        }
    }
    config.control = control;
    let shutdown = CancellationToken::new();
    tokio::spawn(avsd::companion::cli::wait_for_signals(shutdown.clone()));
    avsd::sim::avs::run(listener, config, shutdown).await;
    ExitCode::SUCCESS
}
