//! `avsctl`: a small command-line client of avsd's D-Bus API.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use futures_util::StreamExt;

use avsctl::cli::{Cli, Command, Switch};
use avsctl::exit;
use avsctl::proxy::{AlertsProxy, AuthorizationProxy, DialogProxy, PlayerProxy, SpeakerProxy};
use avsctl::proxy::{MicrophoneProxy, WakeWordProxy};
use avsctl::report::{self as ctl, Paint, Snapshot, VolumeRequest};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    die_quietly_on_sigpipe();
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("avsctl: {}", explain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A reader that goes away (`avsctl status | head -1`) ends avsctl at
/// once and quietly, as it ends `cat` or `ls`: the shell sees status 141
/// (128 + SIGPIPE). Rust ignores SIGPIPE by default, and then every
/// `print!` after the reader left panics ("failed printing to stdout");
/// the default action covers every output path, present and future.
fn die_quietly_on_sigpipe() {
    // SAFETY: called first thing in main, before any thread of ours
    // writes or installs handlers; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// How the QR code is painted: explicit colours on a terminal, so light
/// terminals show it scannable too; none when piped.
fn paint() -> Paint {
    if std::io::stdout().is_terminal() {
        Paint::Ansi
    } else {
        Paint::Plain
    }
}

async fn run(command: Command) -> zbus::Result<ExitCode> {
    // A level that is not one is a usage error, told before any bus call.
    let volume = match &command {
        Command::Volume { level: Some(text) } => match ctl::parse_volume(text) {
            Ok(v) => Some(v),
            Err(why) => {
                eprintln!("avsctl: {why}");
                return Ok(ExitCode::from(exit::USAGE));
            }
        },
        _ => None,
    };
    let conn = match zbus::Connection::system().await {
        Ok(conn) => conn,
        // No system bus: avsd cannot be running on it.
        Err(e) => {
            eprintln!("avsctl: cannot connect to the system D-Bus ({e}); is dbus running?");
            return Ok(ExitCode::from(exit::NOT_RUNNING));
        }
    };
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
            print!(
                "{}",
                ctl::report_painted(&s, kit::clock::unix_now(), paint())
            );
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
        Command::Show { property, value } => return show(&conn, &property, value).await,
        Command::Watch => return watch(&conn).await,
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
        Command::Alerts => {
            let alerts = AlertsProxy::new(&conn).await?;
            print!(
                "{}",
                alerts_report(&alerts.alerts().await?, &alerts.active().await?)
            );
        }
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

/// One line per alert (due time in UTC), the ringing one marked.
fn alerts_report(alerts: &[(String, String, i64, String)], active: &str) -> String {
    if alerts.is_empty() {
        return "No alerts set.\n".to_string();
    }
    let mut out = String::new();
    for (token, kind, due, label) in alerts {
        let ringing = if token == active { "  RINGING" } else { "" };
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("  \"{label}\"")
        };
        out.push_str(&format!(
            "{kind:<8} {}{label}{ringing}  ({token})\n",
            utc(*due)
        ));
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    let mut told_retrying = false;
    loop {
        match auth.state().await?.as_str() {
            "authorized" => {
                println!("Logged in: avsd is authorized.");
                return Ok(ExitCode::SUCCESS);
            }
            "error" => {
                let why = auth.last_error().await?;
                // avsd retries what may come right (the companion down or
                // unreachable): so does avsctl, saying so.
                if !retrying(&why) {
                    eprintln!("Login failed: {why}");
                    return Ok(ExitCode::from(exit::FAILED));
                }
                if told_retrying {
                    eprintln!("Still trying: {why}");
                } else {
                    eprintln!(
                        "The login cannot start yet: {why}\n\
                         avsd keeps trying; still waiting (Ctrl-C to stop waiting)..."
                    );
                    told_retrying = true;
                }
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
                        ctl::login_instructions(&url, &auth.user_code().await?, paint())
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

/// Whether avsd will try again after this `LastError` (it says "retrying
/// in N s" then).
fn retrying(last_error: &str) -> bool {
    last_error.contains("; retrying in ")
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
        // An avsd from before Dialog.LastError reads as "".
        dialog_error: dialog.last_error().await.unwrap_or_default(),
        // An avsd from before LastErrorReason reads as "".
        last_error_reason: auth.last_error_reason().await.unwrap_or_default(),
        dialog_error_reason: dialog.last_error_reason().await.unwrap_or_default(),
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

/// The D-Bus error name and message of a failed call, if it has them.
fn error_name(e: &zbus::Error) -> Option<(String, String)> {
    use zbus::DBusError;
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            Some((name.to_string(), msg.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(fdo) => Some((
            fdo.name().to_string(),
            fdo.description().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

/// The documented exit code for a failed call (see `exit`).
fn exit_code(e: &zbus::Error) -> u8 {
    match error_name(e) {
        Some((name, _)) => exit::for_error_name(&name),
        None => exit::FAILED,
    }
}

/// Turn bus errors into what the person should do.
fn explain(e: &zbus::Error) -> String {
    let Some((name, msg)) = error_name(e) else {
        return format!("{e} (is the system D-Bus running?)");
    };
    match exit::for_error_name(&name) {
        // avsd's own refusal says what polkit said.
        exit::DENIED if name == "org.avsd.Avs1.Error.NotPermitted" && !msg.is_empty() => msg,
        exit::DENIED => "permission denied: only root and members of group avsd may do this \
                         (sudo adduser $USER avsd, then log in again)"
            .to_string(),
        exit::NOT_RUNNING => {
            "avsd is not running (systemctl status avsd; journalctl -u avsd)".to_string()
        }
        _ if msg.is_empty() => name,
        _ => msg,
    }
}

/// The avsd interfaces the object has, in introspection order: whatever
/// this avsd offers, including interfaces newer than this avsctl.
async fn interfaces(conn: &zbus::Connection) -> zbus::Result<Vec<String>> {
    let intro = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination(avsctl::proxy::SERVICE)?
        .path(avsctl::proxy::PATH)?
        .build()
        .await?;
    let xml = intro.introspect().await?;
    let open = format!("<interface name=\"{}", avsctl::show::PREFIX);
    Ok(xml
        .match_indices(&open)
        .filter_map(|(at, _)| {
            let name = &xml[at + "<interface name=\"".len()..];
            name.split('"').next().map(str::to_string)
        })
        .collect())
}

/// org.freedesktop.DBus.Properties of avsd's object, uncached: each read
/// is what avsd holds now.
async fn properties_proxy(
    conn: &zbus::Connection,
) -> zbus::Result<zbus::fdo::PropertiesProxy<'static>> {
    zbus::fdo::PropertiesProxy::builder(conn)
        .destination(avsctl::proxy::SERVICE)?
        .path(avsctl::proxy::PATH)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// `avsctl show`: every property (or those asked for), one per line.
async fn show(
    conn: &zbus::Connection,
    wanted: &[String],
    value_only: bool,
) -> zbus::Result<ExitCode> {
    let props = properties_proxy(conn).await?;
    let mut found = vec![false; wanted.len()];
    for iface in interfaces(conn).await? {
        let name = zbus::names::InterfaceName::try_from(iface.as_str())?;
        let mut all: Vec<_> = props.get_all(name).await?.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (prop, v) in all {
            let prop: String = prop;
            let key = avsctl::show::key(&iface, &prop);
            let hits: Vec<usize> = (0..wanted.len())
                .filter(|&i| wanted[i] == key || wanted[i] == prop)
                .collect();
            if !wanted.is_empty() && hits.is_empty() {
                continue;
            }
            hits.into_iter().for_each(|i| found[i] = true);
            let text = avsctl::show::format(&v);
            if value_only {
                println!("{text}");
            } else {
                println!("{key}={text}");
            }
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        eprintln!(
            "avsctl: avsd has no property `{}` (`avsctl show` lists them all)",
            wanted[i]
        );
        return Ok(ExitCode::from(exit::USAGE));
    }
    Ok(ExitCode::SUCCESS)
}

/// `avsctl watch`: each PropertiesChanged of every avsd interface as
/// `Interface.Property=value` lines, until Ctrl-C. Properties announced by
/// name only (the login URL and code) are read afresh, so a caller who
/// may not see them reads "".
async fn watch(conn: &zbus::Connection) -> zbus::Result<ExitCode> {
    let props = properties_proxy(conn).await?;
    let mut changes = props.receive_properties_changed().await?;
    let mut owners = props.inner().receive_owner_changed().await?;
    eprintln!("Watching avsd (Ctrl-C to stop)...");
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            owner = owners.next() => match owner {
                Some(Some(_)) => eprintln!("avsd started"),
                Some(None) => eprintln!("avsd stopped (journalctl -u avsd); still watching"),
                None => return Ok(ExitCode::from(exit::FAILED)),
            },
            change = changes.next() => {
                let Some(change) = change else {
                    return Ok(ExitCode::from(exit::FAILED));
                };
                let Ok(args) = change.args() else { continue };
                let iface = args.interface_name().to_string();
                let mut lines: Vec<(String, String)> = args
                    .changed_properties()
                    .iter()
                    .map(|(p, v)| (p.to_string(), avsctl::show::format(v)))
                    .collect();
                for p in args.invalidated_properties().iter() {
                    let v = props
                        .get(args.interface_name().clone(), p)
                        .await
                        .map(|v| avsctl::show::format(&v))
                        .unwrap_or_default();
                    lines.push((p.to_string(), v));
                }
                lines.sort();
                for (p, v) in lines {
                    println!("{}={v}", avsctl::show::key(&iface, &p));
                }
            }
        }
    }
}
