//! avsd under a pretend systemd: sd_notify through a NOTIFY_SOCKET the test
//! binds, and the unit files checked by systemd's own tools.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Bus, Daemon, MINIMAL_CONFIG, Notify};

#[test]
fn ready_after_the_name_is_owned_then_watchdog_then_stopping() {
    let bus = Bus::start();
    let notify = Notify::bind();
    let mut avsd = Daemon::start(
        &bus,
        Some(&notify),
        MINIMAL_CONFIG,
        &[("WATCHDOG_USEC", "400000")],
    );

    let seen = notify.wait_for("READY=1", Duration::from_secs(20));
    // The name must already be owned when READY=1 is sent.
    let out = bus.busctl(&["status", "org.avsd.Avs1"]);
    assert!(out.status.success(), "name not owned at READY=1: {seen:?}");
    let ready = seen.last().unwrap();
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("READY=1 comes with a STATUS= line");
    assert!(
        status.contains("companion.url"),
        "status should say what to do: {status}"
    );

    // WATCHDOG=1 keeps arriving at about half the interval.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    }

    avsd.signal("TERM");
    let stop_sent = Instant::now();
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    let status = avsd
        .wait_exit(Duration::from_secs(1))
        .unwrap_or_else(|| panic!("avsd still running 1 s after SIGTERM"));
    assert!(status.success(), "exit status {status:?}");
    eprintln!("avsd exited {:?} after SIGTERM", stop_sent.elapsed());
}

#[test]
fn sigint_stops_too_and_sighup_does_not() {
    let bus = Bus::start();
    let notify = Notify::bind();
    let mut avsd = Daemon::start(&bus, Some(&notify), MINIMAL_CONFIG, &[]);
    notify.wait_for("READY=1", Duration::from_secs(20));
    avsd.signal("HUP");
    // Still answering after SIGHUP (the call returns only if it is alive).
    let out = bus.busctl(&[
        "get-property",
        "org.avsd.Avs1",
        "/org/avsd/Avs1",
        "org.avsd.Avs1.Dialog",
        "State",
    ]);
    assert!(out.status.success());
    avsd.signal("INT");
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    let status = avsd
        .wait_exit(Duration::from_secs(1))
        .expect("avsd did not exit after SIGINT");
    assert!(status.success());
    assert!(avsd.log_text().contains("does not reload its config"));
}

#[test]
fn without_a_bus_it_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_avsd"))
        .arg("--config")
        .arg(support::repo().join("config/avsd.toml"))
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}/nothing", dir.path().display()),
        )
        .env("STATE_DIRECTORY", dir.path())
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the system D-Bus"), "{err}");
}

/// `systemd-analyze verify` exits 0 on many problems, so any output fails.
fn verify_unit(unit: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(support::repo().join("systemd").join(unit)).unwrap();
    // verify checks that ExecStart exists: point it at the built binary.
    let text = text.replace(
        "/usr/bin/avsd ",
        &format!("{} ", env!("CARGO_BIN_EXE_avsd")),
    );
    let path = dir.path().join(unit);
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && all.trim().is_empty(),
        "{unit}:\n{all}"
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=15"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{unit} scores above 1.5:\n{report}");
}

#[test]
fn avsd_unit_verifies_clean_and_is_hardened() {
    verify_unit("avsd.service");
    let unit = std::fs::read_to_string(support::repo().join("systemd/avsd.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=avsd",
        "User=avsd",
        "SupplementaryGroups=audio",
        "DeviceAllow=char-alsa rw",
        "After=network-online.target time-sync.target",
    ] {
        assert!(unit.contains(line), "avsd.service lacks {line}");
    }
}
