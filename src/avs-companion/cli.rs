//! The `avs-companion` command line: serve, `--check-config`, `make-certs`,
//! `sessions`.
//! Only this module picks exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use super::config::{CompanionConfig, DEFAULT_COMPANION_CONFIG};

/// The Login with Amazon companion web service for avsd devices.
#[derive(Debug, Parser)]
#[command(name = "avs-companion", version)]
pub struct Cli {
    /// Config file.
    #[arg(long, default_value = DEFAULT_COMPANION_CONFIG, global = true)]
    pub config: PathBuf,
    /// Check the config and the database (reachable, login, schema
    /// version), print a summary, and exit (1 if either has problems).
    #[arg(long)]
    pub check_config: bool,
    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a local CA and a server certificate for this host (and device
    /// client certificates for mutual TLS). Install `ca.crt` on the devices
    /// and browsers that talk to the service.
    MakeCerts {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// A DNS name or IP address the service is reached at; repeat it.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// A device identity `<productId>:<dsn>` to make a client
        /// certificate for; repeat it.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Keep the CA and sign a new server certificate (and any --device
        /// certificates) with it: phones and devices that trust the CA keep
        /// working. The hosts must be among those the CA was made for.
        #[arg(long)]
        renew_server: bool,
        /// Where the CA's ca.crt and ca.key are for --renew-server (default:
        /// OUT/ca, where make-certs put them).
        #[arg(long, value_name = "DIR", requires = "renew_server")]
        ca_dir: Option<PathBuf>,
        /// Replace an existing CA. Every phone and device that trusts the
        /// old ca.crt must be given the new one.
        #[arg(long, conflicts_with = "renew_server")]
        force: bool,
    },
    /// Seal every refresh token and PKCE verifier in the database with the
    /// newest key of storage.key_file (its last line), then forget the
    /// older keys' checks so they may leave the file. Run it as the service
    /// user; the service may keep running (restart it afterwards, so it
    /// seals new values with the newest key too, and run this once more).
    RotateKey,
    /// List or revoke device sessions in the service's database (run it as
    /// the service user; the service may keep running).
    Sessions {
        /// What to do.
        #[command(subcommand)]
        action: SessionsAction,
    },
}

/// `avs-companion sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// Every session: short id, product, serial, status, created, last
    /// changed. Never the session id or tokens.
    List,
    /// End sessions: every pending or linked session of PRODUCT and SERIAL,
    /// or the one session whose short id (from `list`) starts with --id.
    /// A revoked device gets `access_denied` and must be registered again.
    Revoke {
        /// Product id.
        #[arg(required_unless_present = "id", requires = "serial")]
        product: Option<String>,
        /// Device serial number.
        serial: Option<String>,
        /// A short id from `sessions list` (at least 4 hex digits).
        #[arg(long, conflicts_with_all = ["product", "serial"])]
        id: Option<String>,
    },
}

/// Parse the command line and run; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    https::install_provider();
    if let Some(Command::MakeCerts {
        out,
        hosts,
        devices,
        renew_server,
        ca_dir,
        force,
    }) = &cli.command
    {
        let how = match (renew_server, force) {
            (true, _) => CaChoice::Keep(ca_dir.clone().unwrap_or_else(|| out.join("ca"))),
            (false, true) => CaChoice::Replace,
            (false, false) => CaChoice::New,
        };
        return make_certs(out, hosts, devices, how);
    }
    let config: CompanionConfig = match kit::strict::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(1);
        }
    };
    if cli.check_config {
        print!("{}", config.summary(&cli.config));
        // Reachable, logged in, and a schema this program can use.
        return match super::store::check(&config) {
            Ok(state @ super::store::SchemaState::Ahead { .. }) => {
                eprintln!(
                    "{}: database {}: {}; fix: run the avs-companion version that migrated it (or \
                     a newer one)",
                    cli.config.display(),
                    config.store_name(),
                    state.describe()
                );
                ExitCode::from(1)
            }
            Ok(state) => {
                println!("  schema:       {}", state.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", cli.config.display());
                ExitCode::from(1)
            }
        };
    }
    // The SQLite file's owner; PostgreSQL checks its own logins.
    let owner = match config.storage.url {
        None => super::owner::check(&config.database_path()),
        Some(_) => super::owner::Verdict::Fine,
    };
    if let Some(Command::Sessions { action }) = &cli.command {
        match owner {
            super::owner::Verdict::Refuse(why) => {
                eprintln!("avs-companion sessions: {why}");
                return ExitCode::from(1);
            }
            super::owner::Verdict::Warn(why) => eprintln!("avs-companion sessions: warning: {why}"),
            super::owner::Verdict::Fine => {}
        }
        return super::sessions::main(&config, action);
    }
    if let Some(Command::RotateKey) = &cli.command {
        return rotate_key(&config);
    }
    kit::logging::init(&config.log.level);
    // After logging starts, so the journal gets these at their priority.
    match owner {
        super::owner::Verdict::Refuse(why) => {
            tracing::error!("{why}");
            return ExitCode::from(1);
        }
        super::owner::Verdict::Warn(why) => tracing::warn!("{why}"),
        super::owner::Verdict::Fine => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: CompanionConfig) -> ExitCode {
    let addr = config.server.listen.clone();
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "a port below 1024 needs CAP_NET_BIND_SERVICE: set AmbientCapabilities= and \
                 CapabilityBoundingSet= to it (`systemctl edit avs-companion`), or use a port \
                 from 1024 up in server.listen"
            } else {
                "choose a free port in server.listen, or stop what uses it"
            };
            tracing::error!("cannot listen on {addr}: {e}; fix: {fix}");
            return ExitCode::from(2);
        }
    };
    if let Ok(a) = listener.local_addr() {
        // Tests and scripts read this line to find a port chosen by the OS.
        println!("avs-companion listening on https://{a}");
    }
    let shutdown = CancellationToken::new();
    if let Err(e) = kit::signals::watch("avs-companion", shutdown.clone()) {
        tracing::error!("cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    match super::run(listener, config, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Through the log, so the journal has it at error priority
            // (`journalctl -p err`), not as a plain line of output.
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `avs-companion rotate-key`.
fn rotate_key(config: &CompanionConfig) -> ExitCode {
    let Some(key_file) = &config.storage.key_file else {
        eprintln!(
            "avs-companion rotate-key: storage.key_file is not set; fix: make a key file (see the \
             README's fleet section) and set storage.key_file"
        );
        return ExitCode::from(1);
    };
    let rotated = super::store::open_sealed(config).and_then(|s| s.rotate());
    match rotated {
        Ok(n) => {
            println!(
                "resealed {n} value(s) with the newest key of {}; once every instance has been \
                 restarted and this has run again, older keys may leave the file",
                key_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("avs-companion rotate-key: {e}");
            ExitCode::from(1)
        }
    }
}

/// What `make-certs` does about the CA.
enum CaChoice {
    /// Make one; refuse if one is there.
    New,
    /// Make one, replacing what is there (`--force`).
    Replace,
    /// Sign with the one in this folder (`--renew-server`).
    Keep(PathBuf),
}

fn make_certs(
    out: &std::path::Path,
    hosts: &[String],
    devices: &[String],
    how: CaChoice,
) -> ExitCode {
    if let Some(bad) = devices.iter().find(|d| !d.contains(':')) {
        eprintln!("avs-companion make-certs: --device {bad}: write it as <productId>:<dsn>");
        return ExitCode::from(1);
    }
    let bad_hosts: Vec<String> = hosts
        .iter()
        .filter_map(|h| https::certs::check_host(h).err())
        .collect();
    if !bad_hosts.is_empty() {
        for e in bad_hosts {
            eprintln!("avs-companion make-certs: --host {e}");
        }
        return ExitCode::from(1);
    }
    let existing = https::certs::existing_ca(out);
    if matches!(how, CaChoice::New) && !existing.is_empty() {
        let names: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "avs-companion make-certs: a CA is already there ({}); a new one would break every \
             phone and device that trusts it.\n  fix: renew only the server certificate under it \
             with --renew-server, or replace the CA with --force and install the new ca.crt \
             everywhere",
            names.join(", ")
        );
        return ExitCode::from(1);
    }
    let made = match &how {
        CaChoice::Keep(ca_dir) => https::certs::renew_server(out, ca_dir, hosts, devices),
        CaChoice::New | CaChoice::Replace => https::certs::write_bundle(out, hosts, devices),
    };
    match made {
        Ok(made) => {
            if matches!(how, CaChoice::Keep(_)) {
                println!(
                    "wrote {}/server.crt and server.key, signed by the existing CA (phones and devices that trust it need nothing new)",
                    out.display()
                );
            } else {
                println!(
                    "wrote {0}/ca.crt, server.crt, server.key, and the CA's key in {0}/ca/ca.key",
                    out.display()
                );
            }
            for h in hosts {
                println!(
                    "  server certificate names {} {h}",
                    https::certs::san_kind(h)
                );
            }
            for (i, d) in devices.iter().enumerate() {
                println!("  device-{}.crt/.key names {d}", i + 1);
            }
            // SAFETY: geteuid cannot fail and touches no memory.
            if unsafe { libc::geteuid() } == 0 {
                println!(
                    "  made as root: the service reads server.key as its own user; run\n    \
                     chown avs-companion: {0}/server.key {0}/server.crt",
                    out.display()
                );
            }
            let host_args: Vec<String> = hosts.iter().map(|h| format!("--host {h}")).collect();
            println!(
                "  the server certificate expires on {}: before then run\n    avs-companion make-certs --out {} --renew-server {}",
                made.server_expires,
                out.display(),
                host_args.join(" ")
            );
            println!("  the CA expires on {}", made.ca_expires);
            if !matches!(how, CaChoice::Keep(_)) {
                println!(
                    "Set server.cert_file and server.key_file to server.crt and server.key; \
                     trust ca.crt on devices and phones; move the ca/ folder (the CA's key) offline \
                     and give it back with --ca-dir to renew."
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("avs-companion make-certs: {e}");
            ExitCode::from(1)
        }
    }
}
