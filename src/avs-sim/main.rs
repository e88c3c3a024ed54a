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
    Lwa(avs_sim::lwa::LwaArgs),
    /// A stand-in for the Alexa Voice Service HTTP/2 API, with a control API.
    Avs(avs_sim::avs::AvsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    https::install_provider();
    kit::logging::init("info");
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

async fn lwa(args: avs_sim::lwa::LwaArgs) -> ExitCode {
    let config = match avs_sim::lwa::SimConfig::from_args(&args) {
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
    if let Err(e) = kit::signals::watch("avs-sim", shutdown.clone()) {
        eprintln!("avs-sim: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    avs_sim::lwa::run(listener, config, shutdown).await;
    ExitCode::SUCCESS
}

async fn avs(args: avs_sim::avs::AvsArgs) -> ExitCode {
    let mut config = match avs_sim::avs::AvsConfig::from_args(&args) {
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
    if let Some(dir) = &args.media_dir {
        match media(dir, &args, config.tls.clone(), shutdown.clone()).await {
            Ok(a) => println!("avs-sim avs media on https://{a}"),
            Err(e) => {
                eprintln!("avs-sim avs: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = kit::signals::watch("avs-sim", shutdown.clone()) {
        eprintln!("avs-sim: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    avs_sim::avs::run(listener, config, shutdown).await;
    ExitCode::SUCCESS
}

/// Starts the media server of `--media-dir`; its address.
async fn media(
    dir: &std::path::Path,
    args: &avs_sim::avs::AvsArgs,
    tls: std::sync::Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Result<std::net::SocketAddr, String> {
    let media = avs_sim::media::Media::load(dir)?;
    let listener = tokio::net::TcpListener::bind(args.media_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (--media-listen): {e}",
                args.media_listen
            )
        })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(avs_sim::media::run(listener, tls, media, shutdown));
    Ok(addr)
}
