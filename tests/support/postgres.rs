//! A private PostgreSQL server from Debian's `postgresql` package for the
//! tests: `initdb` into a temporary directory and `postgres` listening only
//! on a Unix socket there (no TCP port to race other tests for), run as
//! `nobody` when the tests run as root (initdb and postgres refuse root),
//! with password (SCRAM) logins so the companion's `storage.password_file`
//! is what lets it in. [`Postgres::stop`] and [`Postgres::resume`] take the
//! server away and bring it back on the same data; dropping it stops the
//! server and deletes everything.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The login the companion uses (the cluster's superuser).
pub const USER: &str = "avs";
/// How long a server may take to start or stop on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// A running PostgreSQL in a temporary directory.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    password: String,
    next_db: AtomicU32,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin; fix: apt-get install postgresql \
             (scripts/lib/setup.sh installs it)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `nobody` from /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody")).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect("a user `nobody` in /etc/passwd to run PostgreSQL as")
}

/// `program` as the unprivileged user when we are root.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let (uid, gid) = nobody();
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Make a cluster and start its server; returns once it accepts
    /// connections (its log says so).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("avs-pg-")
            .tempdir()
            .expect("temporary directory");
        let bin = bin_dir();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        if is_root() {
            let (uid, gid) = nobody();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the test dir");
        }
        // initdb reads the password as the server user; the companion's
        // copy belongs to us.
        let init_pw = dir.path().join("initdb-password");
        std::fs::write(&init_pw, format!("{password}\n")).expect("write the initdb password");
        std::fs::set_permissions(&init_pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            let (uid, gid) = nobody();
            std::os::unix::fs::chown(&init_pw, Some(uid), Some(gid)).unwrap();
        }
        let pw_file = dir.path().join("password");
        std::fs::write(&pw_file, format!("{password}\n")).expect("write the password file");
        std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", init_pw.display()))
            .env("LC_ALL", "C")
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&init_pw);
        let mut pg = Self {
            dir,
            bin,
            child: None,
            password,
            next_db: AtomicU32::new(0),
        };
        pg.resume();
        pg
    }

    /// Start the server (again) on the same data; returns once it accepts
    /// connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let mut child = unprivileged(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start postgres");
        let stderr = child.stderr.take().expect("postgres stderr");
        let (tx, rx) = mpsc::channel();
        // Drained to the end, so a chatty server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let ready = line.contains("database system is ready to accept connections");
                let _ = tx.send((ready, line));
            }
        });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((true, _)) => return,
                Ok((false, line)) => log.push(line),
                Err(_) => panic!("PostgreSQL did not become ready:\n{}", log.join("\n")),
            }
        }
    }

    /// Stop the server (fast shutdown: clients are disconnected), keeping
    /// the data for [`Postgres::resume`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        if rx.recv_timeout(WAIT).is_err() {
            // SAFETY: as above; the waiting thread reaps it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(WAIT);
        }
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file holding the password of [`USER`] (mode 0600, ours).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// The password of [`USER`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of `database` for `storage.url`.
    pub fn url(&self, database: &str) -> String {
        let host: String = url::form_urlencoded::byte_serialize(
            self.socket_dir().as_os_str().to_string_lossy().as_bytes(),
        )
        .collect();
        format!("postgres://{USER}@{host}:5432/{database}")
    }

    /// Run `sql` in `database` with psql; its output (tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-U", USER, "-d", database, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new, empty database; its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
