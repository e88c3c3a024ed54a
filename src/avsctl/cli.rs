//! avsctl's command line, in the library so that its manual and shell
//! completions are generated from these same definitions
//! (`tests/cli_docs.rs`) and cannot drift from `--help`.

use clap::{Parser, Subcommand};

use crate::exit;

/// Command-line client of avsd over the system D-Bus.
///
/// avsctl controls avsd, the Alexa Voice Service daemon. Reading status
/// works for everyone; the other commands need root or membership in group
/// avsd (`sudo adduser $USER avsd`, then log in again).
#[derive(Parser, Debug)]
#[command(name = "avsctl", version, about, long_about, after_help = exit::HELP)]
pub struct Cli {
    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

/// avsctl's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show authorization and dialog state; while waiting for a login, the
    /// URL, the code and a QR code of the URL.
    Status,
    /// Every property of avsd as Interface.Property=value lines, for
    /// scripts (like `timedatectl show`).
    Show {
        /// Only this property (Dialog.State, or State for all interfaces
        /// that have one); may be repeated.
        #[arg(short, long, value_name = "NAME")]
        property: Vec<String>,
        /// Print the values only, without `Interface.Property=`.
        #[arg(long)]
        value: bool,
    },
    /// Print each change of avsd's state as Interface.Property=value lines
    /// until Ctrl-C.
    Watch,
    /// Start linking this device with Amazon and wait until it is done.
    Login,
    /// Forget the session and tokens.
    Reset,
    /// Tap to talk: listen until Alexa decides you have finished.
    Tap,
    /// Start listening until `avsctl release`.
    Hold,
    /// Stop listening after `avsctl hold`.
    Release,
    /// Stop listening or speaking now, and silence a ringing alert.
    Stop,
    /// Show the volume, or set it: N (0 to 100), +N or -N.
    Volume {
        /// N, +N or -N; none shows the volume.
        #[arg(allow_hyphen_values = true)]
        level: Option<String>,
    },
    /// Mute the speaker.
    Mute,
    /// Unmute the speaker.
    Unmute,
    /// Ask Alexa to play or resume the music (a media button).
    Play,
    /// Ask Alexa to pause the music.
    Pause,
    /// Ask Alexa for the next track.
    Next,
    /// Ask Alexa for the previous track.
    Previous,
    /// List the timers, alarms and reminders set, and which one rings.
    Alerts,
    /// Turn the microphone on, or off (the privacy switch: no capture at
    /// all, talk refused); it stays so across restarts.
    Mic {
        /// `on` or `off`.
        state: Switch,
    },
    /// Listen for "Alexa" while idle, or stop; it stays so across restarts
    /// (until `wakeword.enabled` in avsd.toml is changed).
    Wakeword {
        /// `on` or `off`.
        state: Switch,
    },
}

/// `on` or `off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}
