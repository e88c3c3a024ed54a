//! The rig every black-box test shares: where the programs and the
//! repository are, a private system bus that loads the project's own
//! policy, an sd_notify socket, and the real `avsd` binary whose log is
//! printed when a test fails.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in its `tests/` folder).
pub fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// The path of one of the workspace's programs (`avsd`, `avsctl`,
/// `avs-companion`, `avs-sim`), built by `cargo build --workspace --bins`
/// into the same profile folder as this test executable. `AVS_BIN_DIR`
/// names another folder (an installed package's `/usr/bin`, a release
/// build). Cargo builds only a package's own programs for its tests, and
/// these live in other packages of the workspace: hence the lookup, and the
/// panic that says how to build them.
pub fn bin(name: &str) -> &'static str {
    static FOUND: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = found.iter().find(|(n, _)| n == name) {
        return path;
    }
    let dir = match std::env::var_os("AVS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        // target/<profile>/deps/<test> → target/<profile>
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
            .unwrap_or_else(|| repo().join("target/debug")),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the programs first with `cargo build --workspace --bins` \
         (scripts/test does), or set AVS_BIN_DIR to the folder that holds them",
        path.display()
    );
    let path: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
    found.push((name.to_string(), path));
    path
}

/// A man page folder under `dir` holding the package's pages (debian/*.1,
/// *.8), for `MANPATH`: `systemd-analyze verify` runs `man` on every
/// `Documentation=` page of a unit, and the package is not installed here.
pub fn man_pages(dir: &Path) -> PathBuf {
    let man = dir.join("man");
    for entry in std::fs::read_dir(repo().join("debian")).expect("debian/") {
        let page = entry.expect("debian/ entry").path();
        if let Some(section) = page.extension().and_then(|e| e.to_str())
            && matches!(section, "1" | "8")
            && let Some(name) = page.file_name()
        {
            let to = man.join(format!("man{section}"));
            std::fs::create_dir_all(&to).expect("man folder");
            std::fs::copy(&page, to.join(name)).expect("copy a man page");
        }
    }
    man
}

/// Whether the tests run as root (needed to call as another user).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What the test user may do on a test bus beyond the shipped policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestUser {
    /// Own `org.avsd.Avs1` (standing in for user `avsd`) and, when not root
    /// (root may already), call its methods (standing in for group `avsd`).
    OwnsAndCalls,
    /// Own the name only: as a caller the test user meets the shipped policy.
    OwnsOnly,
    /// Nothing: the shipped policy alone.
    Nothing,
}

/// A private `dbus-daemon` configured like the system bus, including the
/// project's `dbus/*.conf`, plus rules letting the test user stand in for
/// user and group `avsd` (see `TestUser`).
pub struct Bus {
    /// The bus's folder (socket, config, policy copy); removed on drop.
    pub dir: tempfile::TempDir,
    /// The bus's address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
    child: Child,
}

impl Bus {
    /// A bus where the test user may own the name and call avsd.
    pub fn start() -> Bus {
        Bus::start_with(TestUser::OwnsAndCalls)
    }

    /// A bus with the given extra rules for the test user.
    pub fn start_with(rules: TestUser) -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("avsd-bus")
            .tempdir()
            .unwrap();
        // Other uids (nobody) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let policy_dir = dir.path().join("system.d");
        std::fs::create_dir(&policy_dir).unwrap();
        for entry in std::fs::read_dir(repo().join("dbus")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "conf") {
                std::fs::copy(&path, policy_dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let user = current_user();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&socket, &policy_dir, &user, rules)).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon must be installed (apt-get install dbus-daemon)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Bus {
            dir,
            address,
            child,
        }
    }

    /// `busctl --address=… ARGS` as the current user.
    pub fn busctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .unwrap()
    }

    /// A zbus connection to this bus.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn bus_config(socket: &Path, policy_dir: &Path, user: &str, rules: TestUser) -> String {
    let test_rules = match rules {
        TestUser::Nothing => String::new(),
        TestUser::OwnsOnly => bus_config_rules(user, false),
        TestUser::OwnsAndCalls if is_root() => bus_config_rules(user, false),
        TestUser::OwnsAndCalls => bus_config_rules(user, true),
    };
    include_str!("../../scripts/lib/private-bus.conf")
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@POLICY_DIR@", &policy_dir.display().to_string())
        .replace("@EXTRA_RULES@", &test_rules)
}

/// The test user owns the name; with `send`, it may also call avsd's
/// methods, as scripts/lib/private-bus.sh allows for the demo.
fn bus_config_rules(user: &str, send: bool) -> String {
    let send = if send {
        "\n    <!-- and, not being root, stands in for group avsd as a caller -->\n    \
         <allow send_destination=\"org.avsd.Avs1\"/>"
    } else {
        ""
    };
    format!(
        r#"  <!-- test only: the test user stands in for user avsd -->
  <policy user="{user}">
    <allow own="org.avsd.Avs1"/>{send}
    <!-- and for polkitd (the stand-in of support::polkit) -->
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
"#
    )
}

/// A bound `NOTIFY_SOCKET`, read datagram by datagram.
pub struct Notify {
    /// The socket's path, for `NOTIFY_SOCKET`.
    pub path: PathBuf,
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Notify {
    /// Bind a fresh socket in a temporary folder.
    pub fn bind() -> Notify {
        let dir = tempfile::Builder::new()
            .prefix("avsd-notify")
            .tempdir()
            .unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notify {
            path,
            socket,
            _dir: dir,
        }
    }

    /// The next datagram, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Read datagrams until one contains `needle` (as a line); panics after
    /// `timeout`. Returns every datagram seen, the matching one last.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} within {timeout:?}; got {seen:?}"
            );
            if let Some(msg) = self.recv(left) {
                let hit = msg.lines().any(|l| l == needle);
                seen.push(msg);
                if hit {
                    return seen;
                }
            }
        }
    }
}

/// The real `avsd` binary under test. Its stderr is kept and printed if
/// the test panics.
pub struct Daemon {
    child: Option<Child>,
    pid: i32,
    /// Every line avsd wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// How many lines `log` holds, announced as each one arrives.
    lines: tokio::sync::watch::Receiver<usize>,
    /// The config file avsd was started with.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Start avsd on `bus` with the given config text.
    pub fn start(
        bus: &Bus,
        notify: Option<&Notify>,
        config: &str,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        Self::start_in(bus, notify, config, None, extra_env)
    }

    /// Like `start`, keeping state in `state` (to survive a restart).
    pub fn start_in(
        bus: &Bus,
        notify: Option<&Notify>,
        config: &str,
        state: Option<&Path>,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        Self::start_wrapped(bus, notify, config, state, extra_env, &[])
    }

    /// Like `start_in`, run through `wrapper` (a command that ends by
    /// exec'ing its arguments, so the pid stays avsd's) when not empty.
    pub fn start_wrapped(
        bus: &Bus,
        notify: Option<&Notify>,
        config: &str,
        state: Option<&Path>,
        extra_env: &[(&str, &str)],
        wrapper: &[String],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("avsd-daemon")
            .tempdir()
            .unwrap();
        let state = state.map_or_else(|| dir.path().join("state"), Path::to_path_buf);
        let config_path = dir.path().join("avsd.toml");
        std::fs::write(&config_path, config).unwrap();
        let avsd = crate::bin("avsd");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(avsd);
                c
            }
            None => Command::new(avsd),
        };
        cmd.arg("--config")
            .arg(&config_path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("STATE_DIRECTORY", &state)
            .env("RUST_LOG", "debug")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", &n.path);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let (count, lines) = tokio::sync::watch::channel(0);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push(line);
                count.send_replace(all.len());
            }
        });
        Daemon {
            pid: child.id() as i32,
            child: Some(child),
            log,
            lines,
            config: config_path,
            _dir: dir,
        }
    }

    /// Start avsd and wait until its name is on the bus (READY=1).
    /// Start avsd with its state in `state` and wait for READY=1.
    pub fn start_ready_in(bus: &Bus, config: &str, state: &Path) -> Daemon {
        let notify = Notify::bind();
        let d = Daemon::start_in(bus, Some(&notify), config, Some(state), &[]);
        notify.wait_for("READY=1", Duration::from_secs(20));
        d
    }

    /// Start avsd with `config` and wait for READY=1.
    pub fn start_ready(bus: &Bus, config: &str) -> Daemon {
        let notify = Notify::bind();
        let d = Daemon::start(bus, Some(&notify), config, &[]);
        notify.wait_for("READY=1", Duration::from_secs(20));
        d
    }

    /// The log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until at least `count` log lines contain `needle`; panics with
    /// the log after `timeout`.
    pub async fn wait_log(&self, needle: &str, count: usize, timeout: Duration) {
        let mut lines = self.lines.clone();
        let seen = |log: &Vec<String>| log.iter().filter(|l| l.contains(needle)).count();
        let found = tokio::time::timeout(timeout, async {
            while seen(&self.log.lock().unwrap()) < count {
                lines.changed().await.expect("the log reader runs");
            }
        })
        .await;
        if found.is_err() {
            panic!(
                "avsd logged {needle:?} fewer than {count} times within {timeout:?}; log:\n{}",
                self.log_text()
            );
        }
    }

    /// avsd's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Send a signal by name (`TERM`, `KILL`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for exit up to `timeout`; None if still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(timeout).ok().and_then(Result::ok)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- avsd log ----\n{}\n------------------",
                self.log_text()
            );
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// A config with no companion: registration fails with a clear error.
pub const MINIMAL_CONFIG: &str = "[log]\nlevel = \"debug\"\n";

/// Whether this process is in group `avsd` (by gid, primary or supplementary).
pub fn in_group_avsd() -> bool {
    let Some(avsd) = group_gid("avsd") else {
        return false;
    };
    // SAFETY: getgroups with size 0 returns the count; then fills a buffer
    // of exactly that size.
    let groups = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut groups = vec![0; n.max(0) as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        groups.truncate(n.max(0) as usize);
        groups
    };
    // SAFETY: getegid has no preconditions and cannot fail.
    let egid = unsafe { libc::getegid() };
    egid == avsd || groups.contains(&avsd)
}

fn group_gid(name: &str) -> Option<u32> {
    let out = Command::new("getent").args(["group", name]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split(':').nth(2)?.trim().parse().ok()
}

/// Ensure group `avsd` exists when we can create it (root), so the policy's
/// `<policy group="avsd">` can be exercised.
pub fn ensure_avsd_group() -> Option<u32> {
    if let Some(g) = group_gid("avsd") {
        return Some(g);
    }
    if is_root() {
        let _ = Command::new("groupadd").args(["--system", "avsd"]).status();
    }
    group_gid("avsd")
}
