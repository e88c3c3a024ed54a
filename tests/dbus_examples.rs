//! The client examples in dbus/examples/ run against the real avsd on the
//! private bus, as a developer would run them: the Python one (jeepney)
//! as is, the C one built from the shipped introspection XML with
//! gdbus-codegen and GLib. Each reads State, LastError and LastErrorReason
//! and calls Tap; the microphone is muted first, so the reason they read is
//! a real one (`microphone-muted`) and Tap is refused by name.

use std::process::{Command, Output};

use support::{Bus, Daemon, MINIMAL_CONFIG};

const DEST: &str = "org.avsd.Avs1";
const PATH: &str = "/org/avsd/Avs1";

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An avsd whose microphone is muted and whose last Tap was refused so.
fn muted_avsd(bus: &Bus) -> Daemon {
    let avsd = Daemon::start_ready(bus, MINIMAL_CONFIG);
    let out = bus.busctl(&[
        "set-property",
        DEST,
        PATH,
        "org.avsd.Avs1.Microphone",
        "Muted",
        "b",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = bus.busctl(&["call", DEST, PATH, "org.avsd.Avs1.Dialog", "Tap"]);
    assert!(!out.status.success(), "Tap while muted is refused");
    avsd
}

/// A tool the examples need, with the package that has it.
fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (scripts/lib/setup.sh lists it)"
    );
}

#[test]
fn the_python_example_reads_the_reason_and_taps() {
    need("/usr/bin/python3", "python3-jeepney");
    let bus = Bus::start();
    let _avsd = muted_avsd(&bus);
    // Debian's python3, where python3-jeepney lives (not a pyenv one).
    let out = Command::new("/usr/bin/python3")
        .arg(support::repo().join("dbus/examples/status.py"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        !stderr.contains("No module named 'jeepney'"),
        "apt-get install python3-jeepney: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for line in [
        "Authorization.State=unregistered",
        "Authorization.LastErrorReason=none",
        "Dialog.State=idle",
        "Dialog.Connection=disconnected",
        "Dialog.LastErrorReason=microphone-muted",
        "Tap: refused org.avsd.Avs1.Error.MicrophoneMuted: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{stdout}{stderr}"
        );
    }
    assert!(
        stdout.contains("Dialog.LastError=the microphone is muted"),
        "{stdout}"
    );
}

#[test]
fn the_c_example_builds_from_the_shipped_xml_and_taps() {
    need("gdbus-codegen", "libglib2.0-dev-bin");
    need("cc", "gcc");
    need("pkg-config", "pkg-config");
    let dir = tempfile::Builder::new()
        .prefix("avsd-c-example")
        .tempdir()
        .unwrap();
    let xml = support::repo().join("dbus/org.avsd.Avs1.xml");
    let out = Command::new("gdbus-codegen")
        .args([
            "--interface-prefix",
            "org.avsd.Avs1.",
            "--c-namespace",
            "Avs",
            "--generate-c-code",
            "avs-dbus",
        ])
        .arg(&xml)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "gdbus-codegen: {}", text(&out).1);
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "gio-2.0", "gio-unix-2.0"])
        .output()
        .unwrap();
    assert!(
        flags.status.success(),
        "apt-get install libglib2.0-dev: {}",
        text(&flags).1
    );
    let flags = text(&flags).0;
    let out = Command::new("cc")
        .args(["-Wall", "-Werror", "-I.", "-o", "status"])
        .arg(support::repo().join("dbus/examples/status.c"))
        .arg("avs-dbus.c")
        .args(flags.split_whitespace())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {}", text(&out).1);

    let bus = Bus::start();
    let _avsd = muted_avsd(&bus);
    let out = Command::new(dir.path().join("status"))
        .arg(&xml)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for line in [
        "Dialog.State=idle",
        "Dialog.LastError=the microphone is muted",
        "Dialog.LastErrorReason=microphone-muted (a documented value)",
        "Tap: refused org.avsd.Avs1.Error.MicrophoneMuted: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{stdout}{stderr}"
        );
    }
}
