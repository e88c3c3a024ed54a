//! avsd's D-Bus API on a private system bus with the shipped policy,
//! driven by independent clients (busctl, dbus-send) and by zbus.

mod support;

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use support::{Bus, Daemon, MINIMAL_CONFIG};

const DEST: &str = "org.avsd.Avs1";
const PATH: &str = "/org/avsd/Avs1";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn busctl_introspects_and_reads_initial_state() {
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);

    let out = bus.busctl(&["introspect", DEST, PATH]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for member in [
        "org.avsd.Avs1.Authorization",
        "org.avsd.Avs1.Dialog",
        ".Start",
        ".Reset",
        ".Tap",
        ".Hold",
        ".Release",
        ".Stop",
        ".LoginUrl",
        ".UserCode",
        ".TokenExpiresAt",
        ".LastError",
        ".Connection",
    ] {
        assert!(
            text.contains(member),
            "introspection lacks {member}:\n{text}"
        );
    }

    let get = |iface: &str, prop: &str| {
        let out = bus.busctl(&["get-property", DEST, PATH, iface, prop]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    assert_eq!(
        get("org.avsd.Avs1.Authorization", "State"),
        "s \"unregistered\""
    );
    assert_eq!(get("org.avsd.Avs1.Authorization", "LoginUrl"), "s \"\"");
    assert_eq!(get("org.avsd.Avs1.Authorization", "TokenExpiresAt"), "t 0");
    assert_eq!(get("org.avsd.Avs1.Dialog", "State"), "s \"idle\"");
    assert_eq!(
        get("org.avsd.Avs1.Dialog", "Connection"),
        "s \"disconnected\""
    );
}

#[test]
fn methods_that_cannot_act_return_named_errors() {
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);

    // dbus-send prints the error name; busctl prints the sentence.
    for member in ["Tap", "Hold", "Release"] {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address))
            .args(["--print-reply", &format!("--dest={DEST}"), PATH])
            .arg(format!("org.avsd.Avs1.Dialog.{member}"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("org.avsd.Avs1.Error.NotAuthorized"),
            "{member}: {err}"
        );
        assert!(err.contains("avsctl login"), "{member}: {err}");
    }
    let out = bus.busctl(&["call", DEST, PATH, "org.avsd.Avs1.Authorization", "Start"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("companion.url"), "{}", stderr(&out));

    // Stop on an idle dialog really is a success: it is idle afterwards.
    let out = bus.busctl(&["call", DEST, PATH, "org.avsd.Avs1.Dialog", "Stop"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn property_changes_are_announced() {
    let bus = Bus::start();
    let avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    let conn = bus.connect().await;
    let auth = avsd::dbus::proxy::AuthorizationProxy::new(&conn)
        .await
        .unwrap();
    let props = zbus::fdo::PropertiesProxy::builder(&conn)
        .destination(DEST)
        .unwrap()
        .path(PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut changes = props.receive_properties_changed().await.unwrap();

    // Start without a companion: State goes to `error`, LastError says why.
    let err = auth.start().await.unwrap_err();
    assert!(err.to_string().contains("NotConfigured"), "{err}");
    let mut seen = std::collections::HashMap::new();
    while !(seen.contains_key("State") && seen.contains_key("LastError")) {
        let signal = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .unwrap_or_else(|_| panic!("no PropertiesChanged; log:\n{}", avsd.log_text()))
            .unwrap();
        let args = signal.args().unwrap();
        assert_eq!(
            args.interface_name().as_str(),
            "org.avsd.Avs1.Authorization"
        );
        for (name, value) in args.changed_properties() {
            seen.insert(name.to_string(), value.to_string());
        }
    }
    assert_eq!(seen["State"], "\"error\"");
    assert!(
        seen["LastError"].contains("companion.url"),
        "{}",
        seen["LastError"]
    );

    // Reset goes back to unregistered, and says so.
    auth.reset().await.unwrap();
    let mut state = String::new();
    while state != "\"unregistered\"" {
        let signal = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("no PropertiesChanged after Reset")
            .unwrap();
        if let Some(v) = signal.args().unwrap().changed_properties().get("State") {
            state = v.to_string();
        }
    }
    assert_eq!(auth.last_error().await.unwrap(), "");
}

#[test]
fn policy_lets_anyone_read_but_only_group_avsd_act() {
    if !support::is_root() {
        eprintln!(
            "policy_lets_anyone_read_but_only_group_avsd_act: needs root for setpriv; not run"
        );
        return;
    }
    let gid = support::ensure_avsd_group().expect("group avsd could not be created");
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    let as_nobody = |groups: &str, args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534"])
            .arg(if groups.is_empty() {
                "--clear-groups".to_string()
            } else {
                format!("--groups={groups}")
            })
            .arg("busctl")
            .arg(format!("--address={}", bus.address))
            .args(args)
            .output()
            .unwrap()
    };

    let read = [
        "get-property",
        DEST,
        PATH,
        "org.avsd.Avs1.Authorization",
        "State",
    ];
    let out = as_nobody("", &read);
    assert!(
        out.status.success(),
        "nobody cannot read State: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "s \"unregistered\"");

    let out = as_nobody("", &["introspect", DEST, PATH]);
    assert!(
        out.status.success(),
        "nobody cannot introspect: {}",
        stderr(&out)
    );

    let tap = ["call", DEST, PATH, "org.avsd.Avs1.Dialog", "Tap"];
    let out = as_nobody("", &tap);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Access denied"), "{}", stderr(&out));

    let reset = ["call", DEST, PATH, "org.avsd.Avs1.Authorization", "Reset"];
    let out = as_nobody("", &reset);
    assert!(stderr(&out).contains("Access denied"), "{}", stderr(&out));

    // Properties are read-only for everyone; Set is not even delivered.
    let set = [
        "set-property",
        DEST,
        PATH,
        "org.avsd.Avs1.Authorization",
        "State",
        "s",
        "authorized",
    ];
    let out = as_nobody("", &set);
    assert!(!out.status.success());

    // A member of group avsd reaches the daemon and gets its real answer.
    let out = as_nobody(&gid.to_string(), &tap);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("Access denied"), "{err}");
    assert!(err.contains("not authorized"), "{err}");
}

#[test]
fn nobody_but_the_policy_user_may_own_the_name() {
    if !support::is_root() {
        eprintln!("nobody_but_the_policy_user_may_own_the_name: needs root for setpriv; not run");
        return;
    }
    let bus = Bus::start();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_avsd"))
        .arg("--config")
        .arg(support::repo().join("config/avsd.toml"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("STATE_DIRECTORY", bus.dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot own the bus name org.avsd.Avs1"),
        "{err}"
    );
}

#[tokio::test]
async fn shipped_introspection_xml_matches_the_live_object() {
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    let conn = bus.connect().await;
    let intro = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination(DEST)
        .unwrap()
        .path(PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let raw = intro.introspect().await.unwrap();
    let live = normalize(&raw);
    let file = support::repo().join("dbus/org.avsd.Avs1.xml");
    if std::env::var_os("AVSD_UPDATE_XML").is_some() {
        std::fs::write(&file, shippable(&raw)).unwrap();
    }
    let shipped = normalize(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        shipped, live,
        "dbus/org.avsd.Avs1.xml drifted from the live object; \
         if the change is intended run AVSD_UPDATE_XML=1 cargo test --test dbus_api"
    );
}

/// The live XML cut down to our interfaces, as a standalone document.
fn shippable(xml: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n\
         <!-- avsd's D-Bus API (org.avsd.Avs1 at /org/avsd/Avs1). Generated from the live\n     \
         object: AVSD_UPDATE_XML=1 cargo test --test dbus_api shipped -->\n\
         <node name=\"/org/avsd/Avs1\">\n",
    );
    let mut keep = false;
    for line in xml.lines() {
        if line.trim().starts_with("<interface name=\"org.avsd.Avs1.") {
            keep = true;
        }
        if keep && !line.trim().is_empty() {
            out.push_str(line);
            out.push('\n');
        }
        if line.trim() == "</interface>" {
            keep = false;
        }
    }
    out.push_str("</node>\n");
    out
}

/// Only the contract's two interfaces, without whitespace noise: the
/// standard interfaces zbus adds are not ours to pin.
fn normalize(xml: &str) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in xml.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("<interface name=\"org.avsd.Avs1.") {
            keep = true;
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
        if line == "</interface>" {
            keep = false;
        }
    }
    out
}
