//! Logging: journald when systemd started us (it sets `JOURNAL_STREAM`),
//! human-readable stderr otherwise. `RUST_LOG` overrides the config level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Where log lines went, so `main` can say so at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, with structured fields.
    Journald,
    /// Standard error, one line per event.
    Stderr,
}

/// Install the global subscriber once. `level` comes from the config;
/// `RUST_LOG`, when set and valid, wins.
pub fn init(level: &str) -> Sink {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // The journald layer fails to build when journald is not running
        // (a container, a chroot); the stderr fallback still reaches the
        // journal through the service's stream.
        if let Ok(journal) = tracing_journald::layer() {
            if registry.with(journal).try_init().is_ok() {
                return Sink::Journald;
            }
            return Sink::Stderr;
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = registry.with(fmt).try_init();
    Sink::Stderr
}
