//! Issue 22: `sudo avs-companion` by hand made a root-owned database the
//! service user could not write; and the companion's lines reach the
//! journal with their priorities (`journalctl -p warning` shows its
//! warnings), through journald's native protocol.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::companion::Env;

/// The command prefix that runs a program as root: nothing for root,
/// password-less sudo otherwise.
fn as_root() -> Vec<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Vec::new();
    }
    let sudo = Command::new("sudo").args(["-n", "true"]).status();
    assert!(
        sudo.is_ok_and(|s| s.success()),
        "these tests run the companion as root: run them as root or with password-less sudo"
    );
    ["sudo", "-n", "-E"].map(String::from).to_vec()
}

fn companion_config(env: &Env, state: &Path) -> std::path::PathBuf {
    let toml = env
        .companion_toml(
            "127.0.0.1:0",
            "https://127.0.0.1:8443/authresponse",
            "https://127.0.0.1:9",
            "",
        )
        .replace(
            &env.db.display().to_string(),
            &state.join("companion.sqlite3").display().to_string(),
        );
    let path = env.dir.path().join("companion.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn root_is_refused_where_the_service_user_owns_the_state() {
    let env = Env::new();
    let state = env.dir.path().join("state-of-nobody");
    std::fs::create_dir(&state).unwrap();
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    }
    let config = companion_config(&env, &state);
    let mut cmd = as_root();
    cmd.push(support::bin("avs-companion").to_string());
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--config")
        .arg(&config)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("running as root, but"), "{err}");
    assert!(
        err.contains("sudo -u ") && err.contains("systemctl start avs-companion"),
        "{err}"
    );
    assert!(
        !state.join("companion.sqlite3").exists(),
        "root made the database anyway"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));

    // `sessions` writes the same database and is refused the same way.
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--config")
        .arg(&config)
        .args(["sessions", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("running as root, but"), "{err}");
}

/// Binds a journald socket of the test's and runs the companion in a
/// mount namespace where that socket is `/run/systemd/journal/socket`.
const JAIL: &str = r#"set -e
mount -t tmpfs journal-jail /run/systemd
mkdir /run/systemd/journal
mount --bind "$0" /run/systemd/journal
exec "$@"
"#;

/// One journal entry: its fields, in journald's native protocol (`KEY=value`
/// lines, or `KEY`, a 64-bit little-endian length and the raw value).
fn fields(mut data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            data = &data[(end + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[(end + 1).min(data.len())..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.push((key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned()));
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

#[test]
fn lines_reach_the_journal_with_their_priority() {
    let env = Env::new();
    let state = env.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = companion_config(&env, &state);
    let journal = tempfile::tempdir().unwrap();
    let socket = UnixDatagram::bind(journal.path().join("socket")).unwrap();
    // Only a safety net: every wait below ends at the datagram it waits for.
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut cmd = as_root();
    let root = cmd.is_empty();
    cmd.extend(["unshare", "--mount", "sh", "-c", JAIL].map(String::from));
    cmd.push(journal.path().display().to_string());
    cmd.push(support::bin("avs-companion").to_string());
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--config")
        .arg(&config)
        // systemd sets it for a service whose output goes to the journal.
        .env("JOURNAL_STREAM", "0:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    // As root on a root-owned state directory the companion warns and
    // serves; through sudo the directory is the test user's and it refuses.
    let (want, priority) = if root {
        ("running as root", "4")
    } else {
        ("running as root, but", "3")
    };
    let entry = loop {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "no journal entry {want:?} ({e}); got {seen:#?}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let f = fields(&buf[..n]);
        let hit = f.iter().any(|(k, v)| k == "MESSAGE" && v.contains(want));
        seen.push(f.clone());
        if hit {
            break f;
        }
    };
    let get = |f: &[(String, String)], key: &str| {
        f.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    assert_eq!(
        get(&entry, "PRIORITY").as_deref(),
        Some(priority),
        "{entry:?}"
    );
    assert_eq!(
        get(&entry, "SYSLOG_IDENTIFIER").as_deref(),
        Some("avs-companion"),
        "{entry:?}"
    );
    if root {
        // And an ordinary info line: tracing-journald maps `info` to
        // notice (5) and `debug` to info (6), the same for avsd.
        let serving = loop {
            let n = socket.recv(&mut buf).expect("no \"serving HTTPS\" entry");
            let f = fields(&buf[..n]);
            if f.iter()
                .any(|(k, v)| k == "MESSAGE" && v.contains("serving HTTPS"))
            {
                break f;
            }
        };
        assert_eq!(
            get(&serving, "PRIORITY").as_deref(),
            Some("5"),
            "{serving:?}"
        );
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    // Natively logged lines do not also go to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(want), "{err}");
}

/// A database an earlier `sudo avs-companion` left owned by root: the
/// service user's `--check-config` (the unit's ExecStartPre) names it and
/// says how to hand it over, rather than the service failing at its first
/// write.
#[test]
fn check_config_names_a_database_the_service_user_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let state = env.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = companion_config(&env, &state);
    let db = state.join("companion.sqlite3");
    std::fs::write(&db, "").unwrap();
    // Readable, not writable, by the user the check runs as.
    for dir in [env.dir.path(), &state] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = as_root();
    cmd.extend(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
        .map(String::from),
    );
    cmd.push(support::bin("avs-companion").to_string());
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("key `storage.database`"), "{err}");
    assert!(
        err.contains(&format!(
            "`{}` cannot be written by this user",
            db.display()
        )),
        "{err}"
    );
    assert!(err.contains("chown avs-companion:"), "{err}");
}
