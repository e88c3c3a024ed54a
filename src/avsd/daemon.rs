//! The daemon's supervisor: starts the actors, takes the bus name, tells
//! systemd, feeds the watchdog from the main loop, and shuts down cleanly.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents;
use crate::auth::{self, AuthHandle, AuthState, AuthStatus};
use crate::avs::connection::{self, ConnectionHandle};
use crate::avs::discovery::Capability;
use crate::avs::router::Router;
use crate::dbus::{self, BusError};
use crate::dialog::{self, DialogHandle};
use crate::volume::{self, VolumeHandle};
use avs_proto::message::SpeechState;
use avsd_config::AvsdConfig;
use kit::notify;

/// How long shutdown may take before tasks are abandoned; systemd's
/// default stop timeout is far longer, but users expect `systemctl stop`
/// to be instant.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

/// What AVS sent, waiting for the router, and directives waiting for the
/// dialog. A full queue holds the reader back (and with it HTTP/2 flow
/// control), so nothing is lost; at most this many JSON parts of 256 KiB
/// each (the parser's limit), 8 MiB per queue, wait in memory.
const INBOUND_QUEUE: usize = 32;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The bus refused us.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The capability agents do not add up (a programming error).
    #[error(transparent)]
    Agents(#[from] agents::DuplicateNamespace),
}

/// Run avsd until `shutdown` is cancelled.
pub async fn run(config: AvsdConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let tracker = TaskTracker::new();
    let auth = auth::spawn_configured(&config, &tracker, shutdown.child_token());
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let (speech_tx, speech) = watch::channel(SpeechState::default());
    let (to_dialog, dialog_inbound) = mpsc::channel(INBOUND_QUEUE);
    let mut dialog_settings = dialog::Settings::from_config(&config.audio);
    let volume = volume::spawn(
        volume::Settings {
            state_dir: config.state_dir(),
            output: volume_output(&config, &mut dialog_settings),
        },
        &tracker,
        shutdown.child_token(),
    );
    let (player, player_mailbox) = agents::audio_player::PlayerLink::new();
    // The one speaker, shared by the dialog, the music player and the
    // alerts under one audio focus; its configuration carries the volume's
    // master gain.
    let speaker = crate::audio::Speaker::new(dialog_settings.playback.clone());
    let (alerts, alerts_inbox) = agents::alerts::channel();
    let wake = crate::wakeword::Wake::from_config(&config.wakeword, &config.state_dir());
    let agents = match agents::for_daemon(agents::Deps {
        state_dir: config.state_dir(),
        inactivity_report_every: Duration::from_secs(config.avs.inactivity_report_secs),
        dialog: to_dialog,
        speech,
        volume: volume.clone(),
        player: player.clone(),
        alerts: alerts.clone(),
        wake_word: wake.engine.is_ok(),
    }) {
        Ok(agents) => agents,
        Err(e) => {
            stop(&tracker, &shutdown).await;
            return Err(e.into());
        }
    };
    let context = agents.context_source();
    let connection = connection::spawn(
        avs_settings(&config, agents.discovery()),
        auth.clone(),
        inbound_tx.clone(),
        context.clone(),
        &tracker,
        shutdown.child_token(),
    );
    volume::report::spawn(
        volume.clone(),
        connection.clone(),
        &tracker,
        shutdown.child_token(),
    );
    let env = agents::Env {
        connection: connection.clone(),
        auth: auth.clone(),
    };
    // Media URLs trust the system roots plus avs.ca_file (a stand-in's).
    let media = crate::media::MediaClient::new(config.avs.ca_file.as_deref());
    player.spawn(
        player_mailbox,
        agents::audio_player::Outputs {
            speaker: speaker.clone(),
            media,
        },
        connection.clone(),
        context.clone(),
        &tracker,
        shutdown.child_token(),
    );
    let router = Router::new(agents, env);
    tracker.spawn(router.run(inbound, shutdown.child_token()));
    agents::alerts::spawn(
        alerts_inbox,
        agents::alerts::Links {
            dir: agents::alerts::dir(&config.state_dir()),
            speaker: speaker.as_ref().ok().cloned(),
            clock_sync_file: config.alerts.clock_sync_file.clone(),
            rtc: agents::alerts::clock::RTC_DEVICE.into(),
            ca_file: config.avs.ca_file.clone(),
        },
        connection.clone(),
        &tracker,
        shutdown.child_token(),
    );
    let microphone = crate::audio::MicSwitch::load(&config.state_dir());
    let dialog = dialog::spawn(
        dialog_settings,
        dialog::Links {
            auth: auth.status(),
            connection: connection.clone(),
            router: inbound_tx,
            inbound: dialog_inbound,
            speech: speech_tx,
            context,
            speaker,
            microphone: microphone.clone(),
            wake: wake.clone(),
        },
        &tracker,
        shutdown.child_token(),
    );
    let owners = dbus::Owners {
        auth: auth.clone(),
        dialog: dialog.clone(),
        volume: volume.clone(),
        player,
        alerts,
        microphone,
        wake,
    };
    let conn = match dbus::serve(owners, &tracker, shutdown.child_token()).await {
        Ok(conn) => conn,
        Err(e) => {
            stop(&tracker, &shutdown).await;
            return Err(e.into());
        }
    };
    let status = status_line(&auth.status().borrow(), &config);
    notify::ready(&status);
    tracing::info!("ready on D-Bus as {}: {status}", dbus::BUS_NAME);

    let watchdog = notify::watchdog_interval();
    let mut auth_rx = auth.status();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick(watchdog) => {
                // Ping from here, not from a side task: if this loop or an
                // actor is wedged, systemd stops hearing from us.
                let within = watchdog.unwrap_or(Duration::MAX) / 4;
                match alive(&auth, &dialog, &connection, &volume, within).await {
                    Ok(()) => notify::watchdog(),
                    Err(e) => tracing::error!("withholding the watchdog ping: {e}"),
                }
            }
            changed = auth_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let status = status_line(&auth_rx.borrow_and_update(), &config);
                notify::status(&status);
            }
        }
    }
    notify::stopping();
    tracing::info!("stopping");
    stop(&tracker, &shutdown).await;
    drop(conn);
    Ok(())
}

async fn stop(tracker: &TaskTracker, shutdown: &CancellationToken) {
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
}

/// Half the watchdog interval, as systemd recommends; never when disabled.
async fn tick(watchdog: Option<Duration>) {
    match watchdog {
        Some(every) => tokio::time::sleep(every / 2).await,
        None => std::future::pending().await,
    }
}

async fn alive(
    auth: &AuthHandle,
    dialog: &DialogHandle,
    connection: &ConnectionHandle,
    volume: &VolumeHandle,
    within: Duration,
) -> Result<(), String> {
    auth.ping(within).await.map_err(|e| e.to_string())?;
    volume.ping(within).await.map_err(|e| e.to_string())?;
    dialog.ping(within).await.map_err(|e| e.to_string())?;
    connection.ping(within).await.map_err(|e| e.to_string())
}

/// Where the Speaker volume goes: the ALSA control `audio.mixer_control`
/// names, or else (and when that control cannot be used: reported, not
/// fatal, like any audio device problem) a gain on the mix, shared here
/// with the speaker.
fn volume_output(config: &AvsdConfig, dialog: &mut dialog::Settings) -> volume::Output {
    if let Some(control) = &config.audio.mixer_control {
        let card = avsd_config::audio::mixer_card(&config.audio.playback_device);
        match volume::Output::alsa(&card, control) {
            Ok(output) => {
                tracing::info!("the volume sets the ALSA control {control:?} of {card}");
                return output;
            }
            Err(e) => tracing::error!("{e}; using a software volume instead"),
        }
    }
    let gain = crate::audio::mixer::MasterGain::default();
    dialog.playback.master = gain.clone();
    volume::Output::Software(gain)
}

fn avs_settings(config: &AvsdConfig, capabilities: Vec<Capability>) -> connection::Settings {
    let state_dir = config.state_dir();
    // An endpoint AVS asked for (System.SetEndpoint) wins over the config.
    let endpoint = agents::system::saved_endpoint(&state_dir)
        .unwrap_or_else(|| connection::endpoint_for(&config.avs.endpoint));
    let identity = connection::Identity {
        product_id: config.device.product_id.clone(),
        dsn: crate::device::serial(config.device.serial.as_deref()),
        capabilities,
    };
    let mut settings = connection::Settings::new(endpoint, identity);
    settings.ca_file = config.avs.ca_file.clone();
    settings.ping_interval = Duration::from_secs(config.avs.ping_interval_secs);
    settings.stable_after = Duration::from_secs(config.avs.stable_after_secs);
    settings
}

/// The `STATUS=` line: what is going on and what the person should do.
pub fn status_line(auth: &AuthStatus, config: &AvsdConfig) -> String {
    match auth.state {
        AuthState::Unregistered if config.companion.url.is_empty() => {
            "Not registered: set companion.url in the config, then run `avsctl login`".to_string()
        }
        AuthState::Unregistered => {
            "Not registered: run `avsctl login` to link with Amazon".to_string()
        }
        // Not the URL and code: `systemctl status` shows this line to
        // every local user, and whoever uses the code first owns the login.
        AuthState::WaitingForUser => {
            "Waiting for login: `sudo avsctl status` shows the URL and code".to_string()
        }
        AuthState::Authorized => "Authorized with Amazon".to_string(),
        AuthState::Error => format!("Error: {}", auth.last_error),
    }
}
