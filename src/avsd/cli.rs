//! avsd's command line, a library item so that tests/cli_docs.rs makes
//! the shell completions from the same definition.

use std::path::PathBuf;

use clap::Parser;

use avsd_config::DEFAULT_AVSD_CONFIG;

/// Alexa Voice Service client daemon for Raspberry Pi.
///
/// avsd keeps the connection to Alexa, captures the microphone when you
/// tap or hold the talk button, and plays Alexa's answers. It is driven over
/// the system D-Bus (name org.avsd.Avs1; try `avsctl status` or
/// `busctl introspect org.avsd.Avs1 /org/avsd/Avs1`) and is normally started
/// by systemd (avsd.service). Logs go to the journal: `journalctl -u avsd`.
#[derive(Parser, Debug)]
#[command(name = "avsd", version, about, long_about)]
pub struct Cli {
    /// Config file to read.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_AVSD_CONFIG)]
    pub config: PathBuf,
    /// Check the config file, print a summary and exit (1 if it has problems).
    #[arg(long)]
    pub check_config: bool,
}
