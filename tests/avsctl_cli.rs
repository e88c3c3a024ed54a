//! `avsctl` as a script uses it: `show` lines, `watch` of each change, and
//! exit codes that tell "avsd not running", "denied", "refused" and
//! "failed" apart; against the real avsd on a private bus.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use avsctl::exit;
use support::{Bus, Daemon, MINIMAL_CONFIG};

const DEST: &str = "org.avsd.Avs1";
const PATH: &str = "/org/avsd/Avs1";

/// `avsctl ARGS` on `bus`, as the current user (or, with `outsider`, as
/// nobody without group avsd).
fn avsctl(bus: &Bus, args: &[&str], outsider: bool) -> std::process::Output {
    let mut cmd = if outsider {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(support::bin("avsctl"));
        c
    } else {
        Command::new(support::bin("avsctl"))
    };
    cmd.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn show_prints_every_property_as_key_value_lines() {
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);

    let out = avsctl(&bus, &["show"], false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for line in [
        "Authorization.State=unregistered",
        "Authorization.TokenExpiresAt=0",
        "Dialog.State=idle",
        "Dialog.Connection=disconnected",
        "Dialog.LastError=",
    ] {
        assert!(shown.lines().any(|l| l == line), "no {line:?} in:\n{shown}");
    }
    assert!(
        shown.lines().all(|l| l.contains('=') && l.contains('.')),
        "{shown}"
    );

    let out = avsctl(&bus, &["show", "-p", "Dialog.State", "--value"], false);
    assert_eq!(text(&out.stdout), "idle\n");
    // A bare name picks it from every interface that has it.
    let out = avsctl(&bus, &["show", "--property", "State"], false);
    assert_eq!(
        text(&out.stdout),
        "Authorization.State=unregistered\nDialog.State=idle\n"
    );
    let out = avsctl(&bus, &["show", "-p", "Nonsense"], false);
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
    assert!(
        text(&out.stderr).contains("Nonsense"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exit_codes_tell_not_running_denied_and_refused_apart() {
    let bus = Bus::start();
    let out = avsctl(&bus, &["status"], false);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::NOT_RUNNING)),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("avsd is not running"));
    let nowhere = Command::new(support::bin("avsctl"))
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(
        nowhere.status.code(),
        Some(i32::from(exit::NOT_RUNNING)),
        "{}",
        text(&nowhere.stderr)
    );

    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    let out = avsctl(&bus, &["tap"], false);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::REFUSED)),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("avsctl login"),
        "{}",
        text(&out.stderr)
    );

    if support::is_root() {
        let out = avsctl(&bus, &["tap"], true);
        assert_eq!(
            out.status.code(),
            Some(i32::from(exit::DENIED)),
            "{}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("group avsd"));
        // Reading is for everyone.
        assert!(avsctl(&bus, &["show"], true).status.success());
    }

    let out = avsctl(&bus, &["volume", "loud"], false);
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
    let help = text(&avsctl(&bus, &["--help"], false).stdout);
    assert!(help.contains(exit::HELP), "{help}");
    // The summary is the package's description, as for avsd.
    let manifest = std::fs::read_to_string(support::repo().join("src/avsctl/Cargo.toml")).unwrap();
    let description = manifest
        .lines()
        .find_map(|l| l.strip_prefix("description = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a description in src/avsctl/Cargo.toml");
    assert!(help.starts_with(&format!("{description}.\n")), "{help}");
}

#[test]
fn watch_prints_each_change_until_interrupted() {
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    let mut watch = Command::new(support::bin("avsctl"))
        .arg("watch")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out_tx = tx.clone();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let stderr = watch.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(format!("stderr: {line}"));
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |want: &str| loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == want => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("avsctl watch never printed {want:?}; it printed {seen:?}"),
        }
    };
    // Subscribed before it says so: changes from here on are printed.
    wait_for("stderr: Watching avsd (Ctrl-C to stop)...");
    let set = bus.busctl(&[
        "set-property",
        DEST,
        PATH,
        "org.avsd.Avs1.Speaker",
        "Volume",
        "y",
        "37",
    ]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    wait_for("Speaker.Volume=37");
    // Start without companion.url: Authorization goes to `error`.
    let _ = bus.busctl(&["call", DEST, PATH, "org.avsd.Avs1.Authorization", "Start"]);
    wait_for("Authorization.State=error");

    // Ctrl-C ends it with success.
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `avsctl login` while the companion is down: avsd retries, so avsctl
/// keeps waiting and says so; when the companion comes back it shows the
/// QR code and the link (which carries the code: nothing to type), and
/// ends with success once the person has logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_waits_out_an_unreachable_companion() {
    use support::system::World;
    use tokio::io::AsyncBufReadExt;

    let mut world = World::new(3600).await;
    world.stop_companion().await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, false));
    let mut login = tokio::process::Command::new(support::bin("avsctl"))
        .arg("login")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let wait = Duration::from_secs(60);
    let mut errors = tokio::io::BufReader::new(login.stderr.take().unwrap()).lines();
    let mut said = String::new();
    while !said.contains("avsd keeps trying; still waiting") {
        let line = tokio::time::timeout(wait, errors.next_line())
            .await
            .unwrap_or_else(|_| panic!("avsctl never said it waits:\n{said}\n{}", avsd.log_text()))
            .unwrap()
            .unwrap_or_else(|| panic!("avsctl ended:\n{said}\n{}", avsd.log_text()));
        said.push_str(&line);
        said.push('\n');
    }
    assert!(said.contains("The login cannot start yet"), "{said}");
    assert!(said.contains("cannot reach the companion"), "{said}");

    world.restart_companion().await;
    let mut lines = tokio::io::BufReader::new(login.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let url = loop {
        let line = tokio::time::timeout(wait, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no login link:\n{printed}\n{}", avsd.log_text()))
            .unwrap()
            .unwrap_or_else(|| panic!("avsctl ended:\n{printed}\n{}", avsd.log_text()));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(url) = line.strip_prefix("To log in, open ") {
            break url.to_string();
        }
    };
    assert!(printed.contains('\u{2588}'), "no QR code:\n{printed}");
    assert!(!printed.contains("enter the code"), "{printed}");
    world.log_in(&url).await;
    let status = tokio::time::timeout(wait, login.wait())
        .await
        .expect("avsctl login did not end after the login")
        .unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(status.success(), "{status}\n{printed}{rest}");
    assert!(rest.contains("Logged in"), "{rest}");
}

/// A pipe whose reader is already gone: the first write to it fails
/// with EPIPE (and raises SIGPIPE).
fn closed_pipe() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here only.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    write
}

/// Ended quietly by SIGPIPE (status 141 in a shell), as `cat` is: no
/// panic, no "failed printing to stdout" on stderr.
fn ended_quietly(what: &str, status: std::process::ExitStatus, err: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "avsctl {what} | (reader gone): {status:?}; stderr: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "avsctl {what}: {err}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_avsctl_quietly() {
    let bus = Bus::start();
    let _avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    for args in [
        &["status"][..],
        &["show"],
        &["show", "--value", "--property", "Dialog.State"],
        &["volume"],
        &["alerts"],
        &["reset"],
        &["--help"],
    ] {
        let out = Command::new(support::bin("avsctl"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        ended_quietly(&args.join(" "), out.status, &text(&out.stderr));
    }
    // `watch` writes when something changes: it ends at the first change.
    let watch = Command::new(support::bin("avsctl"))
        .arg("watch")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = watch;
    let mut err = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("Watching avsd"), "{line}");
    // Start fails (no companion configured) and changes State and LastError.
    let start = bus.busctl(&["call", DEST, PATH, "org.avsd.Avs1.Authorization", "Start"]);
    assert!(!start.status.success());
    let status = watch.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    ended_quietly("watch", status, &rest);
}
