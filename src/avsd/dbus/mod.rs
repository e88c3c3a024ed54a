//! avsd on the system bus: the `org.avsd.Avs1` name, one object with the
//! Daemon, Authorization, Dialog, Speaker and Player interfaces. The interface structs are facades:
//! they read the actors' published state and send them commands, nothing
//! more. The client side (typed proxies) lives in the `avsctl` crate.
//!
//! Every method takes the message header, unused: zbus 5 runs a method
//! without parameters whatever the call's body holds, but checks the body's
//! signature once the method takes anything, so a call with stray
//! arguments is refused ("Signature mismatch") instead of acted on.

mod access;
mod alerts;
pub mod annotated;
mod authorization;
mod daemon;
mod dialog;
mod microphone;
mod player;
pub mod polkit;
mod signals;
mod speaker;
mod wakeword;

pub use access::LoginReaders;
pub use alerts::Alerts;
pub use authorization::Authorization;
pub use daemon::Daemon;
pub use dialog::Dialog;
pub use microphone::Microphone;
pub use player::Player;
pub use speaker::Speaker;
pub use wakeword::WakeWord;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::alerts::AlertsHandle;
use crate::auth::{AuthError, AuthHandle};
use crate::dialog::{DialogError, DialogHandle};
use crate::volume::VolumeHandle;
use kit::actor::ActorError;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.avsd.Avs1";
/// The one object path.
pub const OBJECT_PATH: &str = "/org/avsd/Avs1";

/// The contract's named D-Bus errors.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.avsd.Avs1.Error")]
pub enum AvsError {
    /// A transport error from zbus itself.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No valid LWA token: log in first.
    NotAuthorized(String),
    /// No AVS connection now.
    NotConnected(String),
    /// Another dialog or registration is in the way.
    Busy(String),
    /// A config key needed for this is missing.
    NotConfigured(String),
    /// The microphone or speaker cannot be used.
    AudioDevice(String),
    /// The microphone privacy switch is on.
    MicrophoneMuted(String),
    /// The caller is neither root nor in group avsd, and polkit did not
    /// authorize it (or could not be asked).
    NotPermitted(String),
}

impl From<ActorError> for AvsError {
    fn from(e: ActorError) -> Self {
        Self::ZBus(zbus::Error::Failure(e.to_string()))
    }
}

impl From<AuthError> for AvsError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NotConfigured(m) => Self::NotConfigured(m),
            AuthError::NotAuthorized(m) => Self::NotAuthorized(m),
            AuthError::Actor(a) => a.into(),
        }
    }
}

impl From<DialogError> for AvsError {
    fn from(e: DialogError) -> Self {
        match e {
            DialogError::NotAuthorized(m) => Self::NotAuthorized(m),
            DialogError::NotConnected(m) => Self::NotConnected(m),
            DialogError::Busy(m) => Self::Busy(m),
            DialogError::Audio(m) => Self::AudioDevice(m),
            DialogError::MicrophoneMuted(m) => Self::MicrophoneMuted(m),
            DialogError::Actor(a) => a.into(),
        }
    }
}

/// Why avsd could not take its place on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No bus to connect to.
    #[error(
        "cannot connect to the system D-Bus ({0}); is dbus running? (DBUS_SYSTEM_BUS_ADDRESS \
         overrides the address)"
    )]
    Connect(zbus::Error),
    /// The name is taken or the policy refuses it.
    #[error(
        "cannot own the bus name {BUS_NAME} ({0}); another avsd may be running, or the policy \
         /usr/share/dbus-1/system.d/org.avsd.Avs1.conf is missing or does not allow this user \
         (only user `avsd` may own it)"
    )]
    Name(zbus::Error),
    /// Serving the object failed.
    #[error("cannot serve {OBJECT_PATH} on the bus: {0}")]
    Serve(zbus::Error),
}

/// The owners the D-Bus facades front, one per interface.
pub struct Owners {
    /// Authorization.
    pub auth: AuthHandle,
    /// Dialog.
    pub dialog: DialogHandle,
    /// Speaker.
    pub volume: VolumeHandle,
    /// Player.
    pub player: crate::agents::audio_player::PlayerLink,
    /// Alerts.
    pub alerts: AlertsHandle,
    /// Microphone.
    pub microphone: crate::audio::MicSwitch,
    /// WakeWord.
    pub wake: crate::wakeword::Wake,
}

/// Connect to the system bus, serve the object, then own the name, so
/// that a client that sees the name can use the object at once.
pub async fn serve(
    owners: Owners,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<zbus::Connection, BusError> {
    let Owners {
        auth,
        dialog,
        volume,
        player,
        alerts,
        microphone,
        wake,
    } = owners;
    // The interfaces served below, by short name, for Daemon.Features: a
    // new interface adds its name here.
    let mut features: Vec<String> = [
        "Daemon",
        "Authorization",
        "Dialog",
        "Speaker",
        "Player",
        "Alerts",
        "Microphone",
        "WakeWord",
    ]
    .map(String::from)
    .into();
    features.push(format!("login:{}", auth.method()));
    let members = LoginReaders::from_system();
    let gate = polkit::Gate::new(members.clone());
    let conn = zbus::connection::Builder::system()
        .map_err(BusError::Connect)?
        .serve_at(OBJECT_PATH, Daemon::new(features))
        .map_err(BusError::Serve)?
        .serve_at(
            OBJECT_PATH,
            annotated::Annotated::new(
                Authorization::new(auth.clone(), members),
                annotated::AUTHORIZATION,
            ),
        )
        .map_err(BusError::Serve)?
        .serve_at(
            OBJECT_PATH,
            annotated::Annotated::new(
                Dialog::new(dialog.clone(), gate.clone()).with_alerts(alerts.clone()),
                annotated::DIALOG,
            ),
        )
        .map_err(BusError::Serve)?
        .serve_at(OBJECT_PATH, Alerts::new(alerts.clone()))
        .map_err(BusError::Serve)?
        .serve_at(OBJECT_PATH, Speaker::new(volume.clone()))
        .map_err(BusError::Serve)?
        .serve_at(
            OBJECT_PATH,
            annotated::Annotated::new(Player::new(player.clone(), gate), annotated::PLAYER),
        )
        .map_err(BusError::Serve)?
        .serve_at(OBJECT_PATH, Microphone::new(microphone.clone()))
        .map_err(BusError::Serve)?
        .serve_at(OBJECT_PATH, WakeWord::new(wake.clone()))
        .map_err(BusError::Serve)?
        .build()
        .await
        .map_err(BusError::Connect)?;
    // Snapshots taken here, before the name is owned, not in the tasks:
    // see `signals`.
    let (auth_now, auth_rx) = auth.status().transitions();
    let dialog_now = dialog.status().transitions();
    let link_now = dialog.connection().transitions();
    let backoff_now = dialog.reconnect().transitions();
    let volume_now = volume.state().transitions();
    let mic_now = microphone.state().transitions();
    tracker.spawn(microphone::forward(conn.clone(), mic_now, shutdown.clone()));
    let wake_now = wake.enabled.state().transitions();
    let detections = wake.detected.subscribe();
    tracker.spawn(wakeword::forward(
        conn.clone(),
        wake_now,
        detections,
        shutdown.clone(),
    ));
    tracker.spawn(speaker::forward(conn.clone(), volume_now, shutdown.clone()));
    tracker.spawn(signals::forward_auth(
        conn.clone(),
        auth_rx,
        auth_now,
        shutdown.clone(),
    ));
    tracker.spawn(player::forward(
        conn.clone(),
        player.state.view(),
        shutdown.clone(),
    ));
    tracker.spawn(signals::forward_dialog(
        conn.clone(),
        dialog_now,
        link_now,
        backoff_now,
        shutdown.clone(),
    ));
    tracker.spawn(alerts::forward(conn.clone(), alerts, shutdown));
    conn.request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DoNotQueue.into())
        .await
        .map_err(BusError::Name)?;
    Ok(conn)
}
