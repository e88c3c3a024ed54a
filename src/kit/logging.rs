//! Logging: journald when systemd started us (it sets `JOURNAL_STREAM`),
//! human-readable stderr otherwise. `RUST_LOG` overrides the config level.
//!
//! The filter is tracing-subscriber's `Targets` (`LEVEL` and
//! `TARGET=LEVEL` directives, the most specific target winning), not its
//! `EnvFilter`: the span and field matching of the latter brings a regex
//! engine, about a tenth of the daemon's code, for a feature nobody here
//! uses.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Where log lines went, so `main` can say so at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, with structured fields.
    Journald,
    /// Standard error, one line per event.
    Stderr,
}

/// Libraries whose debug output is per frame or per packet (HTTP/2,
/// HTTP, TLS, D-Bus internals): at a global `debug` they would drown
/// avsd's own lines, so they stay at `info` unless named in the filter.
const NOISY: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tokio_rustls",
    "zbus",
    "zvariant",
    "tower",
    "mio",
    "want",
    "cookie_store",
    "symphonia_core",
    "symphonia_bundle_mp3",
];

/// Install the global subscriber once. `level` comes from the config;
/// `RUST_LOG`, when set and valid, wins. Either way a global `debug` or
/// `trace` keeps the [`NOISY`] libraries at `info` unless the filter
/// names them (`RUST_LOG=debug,h2=trace` gets h2's frames).
pub fn init(level: &str) -> Sink {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| s.parse::<Targets>().is_ok())
        .unwrap_or_else(|| level.to_string());
    let filter = quiet_libraries(&spec)
        .parse::<Targets>()
        .or_else(|_| level.parse::<Targets>())
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
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

/// `spec` with `LIB=info` added for each [`NOISY`] library it does not
/// name, when its global level (a directive without a target) is more
/// verbose than `info`.
fn quiet_libraries(spec: &str) -> String {
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let verbose = directives.iter().any(|d| {
        matches!(
            d.to_ascii_lowercase().as_str(),
            "debug" | "trace" | "5" | "4"
        )
    });
    if !verbose {
        return spec.to_string();
    }
    let named = |lib: &str| {
        directives.iter().any(|d| {
            // A directive's target runs to `=` or `[` (a span filter).
            let target = d.split(['=', '[']).next().unwrap_or("");
            target == lib || target.starts_with(&format!("{lib}::"))
        })
    };
    let mut out = spec.to_string();
    for lib in NOISY.iter().filter(|lib| !named(lib)) {
        out.push_str(&format!(",{lib}=info"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_debug_keeps_libraries_at_info() {
        let spec = quiet_libraries("debug");
        assert!(spec.starts_with("debug,"), "{spec}");
        assert!(spec.contains(",h2=info"), "{spec}");
        assert!(spec.contains(",zbus=info"), "{spec}");
        let filter: Targets = spec.parse().expect("a valid filter");
        use tracing::Level;
        assert!(filter.would_enable("h2::codec", &Level::INFO));
        assert!(!filter.would_enable("h2::codec", &Level::DEBUG));
        assert!(filter.would_enable("avsd::dialog", &Level::DEBUG));
    }

    #[test]
    fn a_library_the_user_names_keeps_its_level() {
        let spec = quiet_libraries("debug,h2=trace,rustls::client=debug");
        assert!(!spec.contains(",h2=info"), "{spec}");
        assert!(!spec.contains(",rustls=info"), "{spec}");
        assert!(spec.contains("hyper=info"), "{spec}");
    }

    #[test]
    fn quieter_levels_are_left_alone() {
        for spec in ["info", "warn", "avsd=debug", "error,avsd::dialog=trace"] {
            assert_eq!(quiet_libraries(spec), spec);
        }
    }
}
