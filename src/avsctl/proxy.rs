//! Client-side proxies of avsd's interfaces, for `avsctl` and the tests.
//! They mirror `daemon.rs`, `authorization.rs`, `dialog.rs` and `speaker.rs`; the introspection test
//! keeps both in line with `dbus/org.avsd.Avs1.xml`.

use zbus::proxy;

/// avsd's well-known bus name.
pub const SERVICE: &str = "org.avsd.Avs1";
/// avsd's one object path.
pub const PATH: &str = "/org/avsd/Avs1";

/// Client of `org.avsd.Avs1.Authorization`.
#[proxy(
    interface = "org.avsd.Avs1.Authorization",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Authorization {
    /// Begin (or restart) registration.
    fn start(&self) -> zbus::Result<()>;
    /// Forget the session and tokens.
    fn reset(&self) -> zbus::Result<()>;
    /// Registration state.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// Companion login page.
    #[zbus(property)]
    fn login_url(&self) -> zbus::Result<String>;
    /// Registration code.
    #[zbus(property)]
    fn user_code(&self) -> zbus::Result<String>;
    /// Login path: `companion` or `code`.
    #[zbus(property)]
    fn method(&self) -> zbus::Result<String>;
    /// Token expiry, Unix seconds.
    #[zbus(property)]
    fn token_expires_at(&self) -> zbus::Result<u64>;
    /// Last problem.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    /// Last problem's reason, for programs.
    #[zbus(property)]
    fn last_error_reason(&self) -> zbus::Result<String>;
}

/// Client of `org.avsd.Avs1.Dialog`.
#[proxy(
    interface = "org.avsd.Avs1.Dialog",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Dialog {
    /// Tap to talk.
    fn tap(&self) -> zbus::Result<()>;
    /// Press and hold to talk.
    fn hold(&self) -> zbus::Result<()>;
    /// Release after Hold.
    fn release(&self) -> zbus::Result<()>;
    /// Stop now.
    fn stop(&self) -> zbus::Result<()>;
    /// Attention state.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// AVS connection state.
    #[zbus(property)]
    fn connection(&self) -> zbus::Result<String>;
    /// Back-off draws since the reconnect back-off last started over.
    #[zbus(property)]
    fn reconnect_attempt(&self) -> zbus::Result<u32>;
    /// Unix seconds of the next try to connect; 0 when none is waited for.
    #[zbus(property)]
    fn next_reconnect_at(&self) -> zbus::Result<u64>;
    /// Last dialog problem.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    /// Last dialog problem's reason, for programs.
    #[zbus(property)]
    fn last_error_reason(&self) -> zbus::Result<String>;
}

/// Client of `org.avsd.Avs1.Speaker`.
#[proxy(
    interface = "org.avsd.Avs1.Speaker",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Speaker {
    /// Move the volume by `delta`.
    fn adjust_volume(&self, delta: i32) -> zbus::Result<()>;
    /// Volume, 0 to 100.
    #[zbus(property)]
    fn volume(&self) -> zbus::Result<u8>;
    /// Set the volume.
    #[zbus(property)]
    fn set_volume(&self, volume: u8) -> zbus::Result<()>;
    /// Muted.
    #[zbus(property)]
    fn muted(&self) -> zbus::Result<bool>;
    /// Mute or unmute.
    #[zbus(property)]
    fn set_muted(&self, muted: bool) -> zbus::Result<()>;
}

/// Client of `org.avsd.Avs1.Player` (shaped like MPRIS2's Player).
#[proxy(
    interface = "org.avsd.Avs1.Player",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Player {
    /// Play or resume.
    fn play(&self) -> zbus::Result<()>;
    /// Pause.
    fn pause(&self) -> zbus::Result<()>;
    /// Pause when playing, else play.
    fn play_pause(&self) -> zbus::Result<()>;
    /// Next item.
    fn next(&self) -> zbus::Result<()>;
    /// Previous item.
    fn previous(&self) -> zbus::Result<()>;
    /// `Playing`, `Paused` or `Stopped`.
    #[zbus(property)]
    fn playback_status(&self) -> zbus::Result<String>;
    /// `xesam:title`, `xesam:artist`, `avsd:token`.
    #[zbus(property)]
    fn metadata(
        &self,
    ) -> zbus::Result<std::collections::HashMap<String, zbus::zvariant::OwnedValue>>;
    /// Microseconds into the stream, as heard.
    #[zbus(property(emits_changed_signal = "false"))]
    fn position(&self) -> zbus::Result<i64>;
}

/// Client of `org.avsd.Avs1.Alerts`.
#[proxy(
    interface = "org.avsd.Avs1.Alerts",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Alerts {
    /// Silence the ringing alert; whether one rang.
    fn stop(&self) -> zbus::Result<bool>;
    /// Token, type, due (Unix seconds) and label of every alert set.
    #[zbus(property)]
    fn alerts(&self) -> zbus::Result<Vec<(String, String, i64, String)>>;
    /// The sounding alert's token; empty when none.
    #[zbus(property)]
    fn active(&self) -> zbus::Result<String>;
}

/// Client of `org.avsd.Avs1.Daemon`: what this avsd is.
#[proxy(
    interface = "org.avsd.Avs1.Daemon",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Daemon {
    /// avsd's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::Result<String>;
    /// Interfaces and features this avsd has.
    #[zbus(property(emits_changed_signal = "const"))]
    fn features(&self) -> zbus::Result<Vec<String>>;
}

/// Client of `org.avsd.Avs1.Microphone` (the privacy switch).
#[proxy(
    interface = "org.avsd.Avs1.Microphone",
    default_service = "org.avsd.Avs1",
    default_path = "/org/avsd/Avs1"
)]
pub trait Microphone {
    /// Whether the microphone is muted.
    #[zbus(property)]
    fn muted(&self) -> zbus::Result<bool>;
    /// Mute or unmute the microphone.
    #[zbus(property)]
    fn set_muted(&self, muted: bool) -> zbus::Result<()>;
}

pub use wake_word::*;

/// The WakeWord proxy apart: its signal's generated argument types and
/// stream methods carry no docs.
#[allow(missing_docs)]
mod wake_word {
    use zbus::proxy;

    /// Client of `org.avsd.Avs1.WakeWord`.
    #[proxy(
        interface = "org.avsd.Avs1.WakeWord",
        default_service = "org.avsd.Avs1",
        default_path = "/org/avsd/Avs1"
    )]
    pub trait WakeWord {
        /// Whether avsd listens for the wake word.
        #[zbus(property)]
        fn enabled(&self) -> zbus::Result<bool>;
        /// Turn the wake word on or off.
        #[zbus(property)]
        fn set_enabled(&self, enabled: bool) -> zbus::Result<()>;
        /// The model file.
        #[zbus(property)]
        fn model(&self) -> zbus::Result<String>;
        /// The wake word was heard.
        #[zbus(signal)]
        fn detected(&self, start_index: u64, end_index: u64, score: f64) -> zbus::Result<()>;
    }
}
