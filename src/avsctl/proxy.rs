//! Client-side proxies of avsd's interfaces, for `avsctl` and the tests.
//! They mirror `authorization.rs` and `dialog.rs`; the introspection test
//! keeps both in line with `dbus/org.avsd.Avs1.xml`.

use zbus::proxy;

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
    /// Token expiry, Unix seconds.
    #[zbus(property)]
    fn token_expires_at(&self) -> zbus::Result<u64>;
    /// Last problem.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
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
