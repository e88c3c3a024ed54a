//! `WakeWord.Enabled` as the user sets it (D-Bus or `avsctl wakeword`)
//! survives a restart, even a SIGKILL right after the reply (the switch is
//! written atomically and fsynced before the call returns); avsd.toml's
//! `wakeword.enabled` is the value until the user sets it, and wins again
//! once the administrator changes it. The model path is one that does not
//! exist, so no capture device is opened: the switch is what is tested.

use std::path::Path;
use std::time::Duration;

use avsctl::proxy::WakeWordProxy;
use support::{Bus, Daemon};

/// avsd.toml with `wakeword.enabled = on`.
fn config(on: bool) -> String {
    format!(
        "[log]\nlevel = \"debug\"\n[wakeword]\nenabled = {on}\n\
         model = \"/nonexistent/avsd-test/alexa.json\"\n"
    )
}

async fn enabled(bus: &Bus) -> bool {
    WakeWordProxy::builder(&bus.connect().await)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
        .enabled()
        .await
        .unwrap()
}

/// Run avsctl against `bus`; its standard output.
fn avsctl(bus: &Bus, args: &[&str]) -> String {
    let out = std::process::Command::new(support::bin("avsctl"))
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "avsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kill avsd without giving it a chance to write anything more.
fn kill(mut avsd: Daemon) {
    avsd.signal("KILL");
    assert!(avsd.wait_exit(Duration::from_secs(20)).is_some());
}

fn start(bus: &Bus, on: bool, state: &Path) -> Daemon {
    Daemon::start_ready_in(bus, &config(on), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_setting_survives_a_kill_and_the_config_is_the_default() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();

    let avsd = start(&bus, false, state.path());
    assert!(!enabled(&bus).await, "nothing set yet: avsd.toml's false");
    WakeWordProxy::new(&bus.connect().await)
        .await
        .unwrap()
        .set_enabled(true)
        .await
        .unwrap();
    assert!(state.path().join("wakeword.json").is_file());
    kill(avsd);

    let avsd = start(&bus, false, state.path());
    assert!(enabled(&bus).await, "set over D-Bus, kept across a SIGKILL");
    assert!(
        avsd.log_text().contains("wake word: true (set by the user"),
        "the log says where the value comes from:\n{}",
        avsd.log_text()
    );
    avsctl(&bus, &["wakeword", "off"]);
    kill(avsd);

    let avsd = start(&bus, false, state.path());
    assert!(!enabled(&bus).await, "avsctl wakeword off, kept");
    let status = avsctl(&bus, &["status"]);
    assert!(status.contains("Wake word:     off"), "{status}");
    kill(avsd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_wins_over_the_older_user_setting() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();

    let avsd = start(&bus, true, state.path());
    assert!(enabled(&bus).await, "nothing set yet: avsd.toml's true");
    avsctl(&bus, &["wakeword", "off"]);
    kill(avsd);

    let avsd = start(&bus, true, state.path());
    assert!(
        !enabled(&bus).await,
        "the user's off wins over the same avsd.toml"
    );
    kill(avsd);

    // The administrator turns it off in avsd.toml: the user's older
    // setting is dropped, so turning it back on in avsd.toml takes effect.
    let avsd = start(&bus, false, state.path());
    assert!(!enabled(&bus).await);
    assert!(
        avsd.log_text().contains("avsd.toml changed since"),
        "{}",
        avsd.log_text()
    );
    assert!(!state.path().join("wakeword.json").exists());
    kill(avsd);

    let avsd = start(&bus, true, state.path());
    assert!(
        enabled(&bus).await,
        "avsd.toml's true, no older setting left"
    );
    kill(avsd);
}
