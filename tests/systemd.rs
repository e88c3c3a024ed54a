//! avsd under a pretend systemd: sd_notify through a NOTIFY_SOCKET the test
//! binds, and the unit files checked by systemd's own tools.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{Bus, Daemon, MINIMAL_CONFIG, Notify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_the_name_is_owned_then_watchdog_then_stopping() {
    let bus = Bus::start();
    // A client watching org.avsd.Avs1's owner, subscribed before avsd starts.
    let conn = bus.connect().await;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .unwrap()
        .interface("org.freedesktop.DBus")
        .unwrap()
        .member("NameOwnerChanged")
        .unwrap()
        .arg(0, "org.avsd.Avs1")
        .unwrap()
        .build();
    zbus::fdo::DBusProxy::new(&conn)
        .await
        .unwrap()
        .add_match_rule(rule)
        .await
        .unwrap();
    // Every message this connection receives, in the order the bus sent them.
    let mut messages = zbus::MessageStream::from(&conn);

    let notify = Notify::bind();
    let mut avsd = Daemon::start(
        &bus,
        Some(&notify),
        MINIMAL_CONFIG,
        &[("WATCHDOG_USEC", "200000")],
    );
    let seen = tokio::task::block_in_place(|| notify.wait_for("READY=1", Duration::from_secs(20)));

    // Only now ask the bus who owns the name. The bus handles messages in
    // order and queues them per connection in order: if avsd owned the name
    // before it sent READY=1, the NameOwnerChanged was queued to us before
    // this call reached the bus, so it arrives before the reply.
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetNameOwner",
            &("org.avsd.Avs1",),
        )
        .await
        .unwrap_or_else(|e| panic!("name not owned when READY=1 arrived ({e}); got {seen:?}"));
    let owner: String = reply.body().deserialize().unwrap();
    let call = reply.header().reply_serial().unwrap();
    let mut owner_announced = false;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("the GetNameOwner reply never came through the stream")
            .unwrap()
            .unwrap();
        let header = msg.header();
        if header.reply_serial() == Some(call) {
            break;
        }
        if header.member().is_some_and(|m| m == "NameOwnerChanged") {
            let (name, _old, new): (String, String, String) = msg.body().deserialize().unwrap();
            if name == "org.avsd.Avs1" && new == owner {
                owner_announced = true;
            }
        }
    }
    assert!(
        owner_announced,
        "READY=1 arrived before the bus announced {owner} as the owner of org.avsd.Avs1"
    );

    let ready = seen.last().unwrap();
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("READY=1 comes with a STATUS= line");
    assert!(
        status.contains("companion.url"),
        "status should say what to do: {status}"
    );

    // WATCHDOG=1 every half interval: a 200 ms watchdog means a ping every
    // 100 ms, so at least 5 in 1.5 s even on a busy machine.
    let pings = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut pings = 0;
        while pings < 5 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(msg) = notify.recv(left) {
                pings += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
            }
        }
        pings
    });
    assert!(
        pings >= 5,
        "only {pings} WATCHDOG=1 in 1.5 s with WATCHDOG_USEC=200000; log:\n{}",
        avsd.log_text()
    );

    avsd.signal("TERM");
    let stop_sent = Instant::now();
    tokio::task::block_in_place(|| notify.wait_for("STOPPING=1", Duration::from_secs(5)));
    let status = avsd
        .wait_exit(Duration::from_secs(1))
        .unwrap_or_else(|| panic!("avsd still running 1 s after SIGTERM"));
    assert!(status.success(), "exit status {status:?}");
    eprintln!("avsd exited {:?} after SIGTERM", stop_sent.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_while_another_process_owns_the_name() {
    let bus = Bus::start();
    let squatter = bus.connect().await;
    squatter.request_name("org.avsd.Avs1").await.unwrap();

    let notify = Notify::bind();
    let mut avsd = Daemon::start(&bus, Some(&notify), MINIMAL_CONFIG, &[]);
    let status = tokio::task::block_in_place(|| avsd.wait_exit(Duration::from_secs(20)))
        .expect("avsd kept running without its bus name");
    assert!(!status.success(), "exit status {status:?}");
    // Everything it sent is queued on the socket by now; READY=1 is not.
    let mut sent = Vec::new();
    while let Some(msg) = notify.recv(Duration::from_millis(1)) {
        sent.push(msg);
    }
    assert!(
        !sent.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "READY=1 without the bus name: {sent:?}"
    );
    assert!(
        avsd.log_text()
            .contains("cannot own the bus name org.avsd.Avs1"),
        "{}",
        avsd.log_text()
    );
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
    let out = Command::new(support::bin("avsd"))
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
    let text = text
        .replace("/usr/bin/avsd ", &format!("{} ", support::bin("avsd")))
        .replace(
            "/usr/bin/avs-companion ",
            &format!("{} ", support::bin("avs-companion")),
        );
    let path = dir.path().join(unit);
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", support::man_pages(dir.path()))
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
        // Issue 15: limits, and the companion's secrets out of reach.
        "MemoryMax=",
        "TasksMax=",
        "LimitCORE=0",
        "InaccessiblePaths=-/var/lib/avs-companion -/etc/avsd/companion",
    ] {
        assert!(unit.contains(line), "avsd.service lacks {line}");
    }
    // systemd.special(7): order after time-sync.target, never pull it in.
    for line in unit
        .lines()
        .filter(|l| l.starts_with("Wants=") || l.starts_with("Requires="))
    {
        assert!(!line.contains("time-sync.target"), "avsd.service: {line}");
    }
}

/// The value of `key=` in a unit (the last one wins, as in systemd).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn companion_unit_verifies_clean_is_hardened_and_apart_from_avsd() {
    verify_unit("avs-companion.service");
    let unit =
        std::fs::read_to_string(support::repo().join("systemd/avs-companion.service")).unwrap();
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
        ("User", "avs-companion"),
        ("Group", "avs-companion"),
        // A config problem (exit 1, see companion_config.rs) is not
        // restarted every 5 s.
        ("RestartPreventExitStatus", "1"),
        ("StateDirectory", "avs-companion"),
        ("StateDirectoryMode", "0700"),
        ("LimitCORE", "0"),
        // The CA key make-certs writes is hidden from the service itself.
        ("InaccessiblePaths", "-/etc/avsd/companion/ca"),
    ] {
        assert_eq!(
            setting(&unit, key),
            Some(want),
            "avs-companion.service {key}="
        );
    }
    // Thousands of connections need thousands of descriptors.
    let nofile: u64 = setting(&unit, "LimitNOFILE")
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE= a number");
    assert!(nofile >= 8192, "LimitNOFILE={nofile}");
    for key in ["MemoryMax", "TasksMax"] {
        assert!(
            setting(&unit, key).is_some(),
            "avs-companion.service lacks {key}="
        );
    }

    // avsd runs as another user and cannot reach the companion's state.
    let avsd = std::fs::read_to_string(support::repo().join("systemd/avsd.service")).unwrap();
    assert_ne!(setting(&avsd, "User"), setting(&unit, "User"));
    assert_ne!(
        setting(&avsd, "StateDirectory"),
        setting(&unit, "StateDirectory")
    );
    let hidden = setting(&avsd, "InaccessiblePaths").unwrap_or_default();
    assert!(
        hidden
            .split_whitespace()
            .any(|p| p.trim_start_matches('-') == "/var/lib/avs-companion"),
        "avsd.service InaccessiblePaths={hidden}"
    );
}

/// Issue 22: `systemctl help` (and lintian) want Documentation=; each man
/// page a unit names is one the package ships. The users the units run as
/// are the ones the package's sysusers.d file declares.
#[test]
fn units_name_shipped_man_pages_and_sysusers_declares_their_users() {
    let cargo = std::fs::read_to_string(support::repo().join("src/avsd/Cargo.toml")).unwrap();
    let sysusers = std::fs::read_to_string(support::repo().join("systemd/avsd.sysusers")).unwrap();
    assert!(
        cargo.contains("\"../../systemd/avsd.sysusers\", \"usr/lib/sysusers.d/avsd.conf\""),
        "the package does not ship the sysusers.d file"
    );
    for name in ["avsd.service", "avs-companion.service"] {
        let unit = std::fs::read_to_string(support::repo().join("systemd").join(name)).unwrap();
        let docs =
            setting(&unit, "Documentation").unwrap_or_else(|| panic!("{name}: no Documentation="));
        for uri in docs.split_whitespace() {
            let page = uri
                .strip_prefix("man:")
                .unwrap_or_else(|| panic!("{name}: {uri} is not a man: page"));
            let (page, section) = page.trim_end_matches(')').split_once('(').unwrap();
            let file = format!("debian/{page}.{section}");
            assert!(
                support::repo().join(&file).is_file(),
                "{name}: {uri} but no {file}"
            );
            assert!(
                cargo.contains(&format!("\"../../{file}\"")),
                "{name}: {file} not shipped"
            );
        }
        let user = setting(&unit, "User").unwrap();
        assert!(
            sysusers
                .lines()
                .any(|l| l.starts_with(&format!("u {user} "))),
            "{name}: User={user} is not in systemd/avsd.sysusers"
        );
    }
    assert!(
        sysusers.lines().any(|l| l == "m avsd audio"),
        "avsd is not put in group audio"
    );
}
