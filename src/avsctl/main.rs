//! `avsctl`: a small command-line client of avsd's D-Bus API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;

use avsctl::proxy::{AuthorizationProxy, DialogProxy, PlayerProxy, SpeakerProxy};
use avsctl::proxy::{MicrophoneProxy, WakeWordProxy};
use avsctl::report::{self as ctl, Snapshot, VolumeRequest};

/// Control avsd, the Alexa Voice Service daemon, over the system D-Bus.
///
/// Reading status works for everyone; the other commands need root or
/// membership in group avsd (`sudo adduser $USER avsd`, then log in again).
#[derive(Parser, Debug)]
#[command(name = "avsctl", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show authorization and dialog state; while waiting for a login, the
    /// URL, the code and a QR code of the URL.
    Status,
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
    /// Stop listening or speaking now.
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
    /// Turn the microphone on, or off (the privacy switch: no capture at
    /// all, talk refused); it stays so across restarts.
    Mic {
        /// `on` or `off`.
        state: Switch,
    },
    /// Listen for "Alexa" while idle, or stop (until avsd restarts; the
    /// default is `wakeword.enabled` in avsd.toml).
    Wakeword {
        /// `on` or `off`.
        state: Switch,
    },
}

/// `on` or `off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("avsctl: {}", explain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> zbus::Result<ExitCode> {
    // A level that is not one is a usage error, told before any bus call.
    let volume = match &command {
        Command::Volume { level: Some(text) } => match ctl::parse_volume(text) {
            Ok(v) => Some(v),
            Err(why) => {
                eprintln!("avsctl: {why}");
                return Ok(ExitCode::from(2));
            }
        },
        _ => None,
    };
    let conn = zbus::Connection::system().await?;
    let auth = AuthorizationProxy::new(&conn).await?;
    let dialog = DialogProxy::new(&conn).await?;
    let speaker = SpeakerProxy::new(&conn).await?;
    let player = PlayerProxy::new(&conn).await?;
    match command {
        Command::Status => {
            let mut s = snapshot(&auth, &dialog, &player).await?;
            // An older avsd has no Speaker interface: no volume line.
            s.volume = match (speaker.volume().await, speaker.muted().await) {
                (Ok(v), Ok(m)) => Some((v, m)),
                _ => None,
            };
            print!("{}", ctl::report(&s, kit::clock::unix_now()));
            // An older avsd has no Microphone interface: no line.
            if let Ok(muted) = MicrophoneProxy::new(&conn).await?.muted().await {
                println!(
                    "Microphone:    {}",
                    if muted { "off (muted)" } else { "on" }
                );
            }
            if let Ok(on) = WakeWordProxy::new(&conn).await?.enabled().await {
                println!("Wake word:     {}", if on { "on" } else { "off" });
            }
        }
        Command::Volume { .. } => {
            match volume {
                None => {}
                Some(VolumeRequest::Set(v)) => speaker.set_volume(v).await?,
                Some(VolumeRequest::Adjust(d)) => speaker.adjust_volume(d).await?,
            }
            // Past zbus's property cache: the value avsd holds now.
            let now = SpeakerProxy::builder(&conn)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?;
            let (v, m) = (now.volume().await?, now.muted().await?);
            println!("Volume: {v}{}", if m { " (muted)" } else { "" });
        }
        Command::Mute => speaker.set_muted(true).await?,
        Command::Unmute => speaker.set_muted(false).await?,
        Command::Login => return login(&auth).await,
        Command::Reset => {
            auth.reset().await?;
            println!("Session forgotten; avsd is unregistered.");
        }
        Command::Tap => dialog.tap().await?,
        Command::Hold => dialog.hold().await?,
        Command::Release => dialog.release().await?,
        Command::Stop => dialog.stop().await?,
        Command::Play => player.play().await?,
        Command::Pause => player.pause().await?,
        Command::Next => player.next().await?,
        Command::Previous => player.previous().await?,
        Command::Mic { state } => {
            let mic = MicrophoneProxy::new(&conn).await?;
            mic.set_muted(state == Switch::Off).await?;
        }
        Command::Wakeword { state } => {
            let wake = WakeWordProxy::new(&conn).await?;
            wake.set_enabled(state == Switch::On).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn login(auth: &AuthorizationProxy<'_>) -> zbus::Result<ExitCode> {
    let mut owners = auth.inner().receive_owner_changed().await?;
    // Reading a property fills the proxy's cache, so each stream made
    // after it yields the current value once, right away: take that now,
    // and every later item is a change avsd announced.
    let before = auth.state().await?;
    let mut states = auth.receive_state_changed().await;
    let mut errors = auth.receive_last_error_changed().await;
    states.next().await;
    errors.next().await;
    match before.as_str() {
        "authorized" => {
            // Start() would throw the working session away.
            println!(
                "avsd is already authorized; nothing to do. To link another Amazon account, \
                 run `avsctl reset` first."
            );
            return Ok(ExitCode::SUCCESS);
        }
        // A registration is under way: show it and wait, do not restart it.
        "waiting-for-user" => {}
        _ => {
            auth.start().await?;
            // The properties reach us in a signal sent after the reply, so
            // what the cache says now may be from before Start.
            wait_for_change(&mut states, &mut errors, &mut owners).await?;
        }
    }
    let mut shown = String::new();
    loop {
        match auth.state().await?.as_str() {
            "authorized" => {
                println!("Logged in: avsd is authorized.");
                return Ok(ExitCode::SUCCESS);
            }
            "error" => {
                eprintln!("Login failed: {}", auth.last_error().await?);
                return Ok(ExitCode::FAILURE);
            }
            "waiting-for-user" => {
                let url = auth.login_url().await?;
                if url.is_empty() {
                    eprint!("{}", ctl::HIDDEN_LOGIN);
                    return Ok(ExitCode::FAILURE);
                }
                if url != shown {
                    print!(
                        "{}",
                        ctl::login_instructions(&url, &auth.user_code().await?)
                    );
                    println!("Waiting for the login to finish (Ctrl-C to stop waiting)...");
                    shown = url;
                }
            }
            _ => {}
        }
        wait_for_change(&mut states, &mut errors, &mut owners).await?;
    }
}

/// Wait until avsd announces a new State or LastError (a failed
/// registration may change only LastError, when State was already
/// `error`). Fails if avsd leaves the bus (stopped or crashed).
async fn wait_for_change(
    states: &mut zbus::proxy::PropertyStream<'_, String>,
    errors: &mut zbus::proxy::PropertyStream<'_, String>,
    owners: &mut zbus::proxy::OwnerChangedStream<'_>,
) -> zbus::Result<()> {
    tokio::select! {
        change = states.next() => if change.is_none() {
            return Err(zbus::Error::Failure("avsd left the bus".to_string()));
        },
        change = errors.next() => if change.is_none() {
            return Err(zbus::Error::Failure("avsd left the bus".to_string()));
        },
        owner = owners.next() => if !matches!(owner, Some(Some(_))) {
            return Err(zbus::Error::Failure(
                "avsd stopped while waiting for the login (journalctl -u avsd)".to_string(),
            ));
        },
    }
    Ok(())
}

async fn snapshot(
    auth: &AuthorizationProxy<'_>,
    dialog: &DialogProxy<'_>,
    player: &PlayerProxy<'_>,
) -> zbus::Result<Snapshot> {
    // An older avsd has no Player: its line is left out.
    let player_status = player.playback_status().await.unwrap_or_default();
    let player_track = player
        .metadata()
        .await
        .map(|m| track(&m))
        .unwrap_or_default();
    Ok(Snapshot {
        auth_state: auth.state().await?,
        login_url: auth.login_url().await?,
        user_code: auth.user_code().await?,
        // An avsd from before Method existed reads as "".
        method: auth.method().await.unwrap_or_default(),
        token_expires_at: auth.token_expires_at().await?,
        last_error: auth.last_error().await?,
        dialog_state: dialog.state().await?,
        connection: dialog.connection().await?,
        reconnect_attempt: dialog.reconnect_attempt().await?,
        next_reconnect_at: dialog.next_reconnect_at().await?,
        volume: None,
        player_status,
        player_track,
    })
}

/// "Title — Artist" from MPRIS-style metadata; what is known of it.
fn track(m: &std::collections::HashMap<String, zbus::zvariant::OwnedValue>) -> String {
    let title = m
        .get("xesam:title")
        .and_then(|v| String::try_from(v.clone()).ok())
        .unwrap_or_default();
    let artist = m
        .get("xesam:artist")
        .and_then(|v| Vec::<String>::try_from(v.clone()).ok())
        .and_then(|a| a.into_iter().next())
        .unwrap_or_default();
    match (title.is_empty(), artist.is_empty()) {
        (false, false) => format!("{title} \u{2014} {artist}"),
        (false, true) => title,
        (true, false) => artist,
        (true, true) => String::new(),
    }
}

/// Turn bus errors into what the person should do.
fn explain(e: &zbus::Error) -> String {
    if let zbus::Error::MethodError(name, msg, _) = e {
        let msg = msg.clone().unwrap_or_default();
        return match name.as_str() {
            "org.freedesktop.DBus.Error.AccessDenied" => {
                "permission denied: only root and members of group avsd may do this \
                 (sudo adduser $USER avsd, then log in again)"
                    .to_string()
            }
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                "avsd is not running (systemctl status avsd; journalctl -u avsd)".to_string()
            }
            _ => msg,
        };
    }
    format!("{e} (is the system D-Bus running?)")
}
