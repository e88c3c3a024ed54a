//! Debian's haproxy in a temporary directory, as the TCP-mode load
//! balancer of a companion fleet: TLS passes through untouched, so devices'
//! client certificates still reach the companion. Round robin over
//! backends on loopback ports, health checks every 200 ms, a failed connect
//! retried on another backend (`option redispatch`), and the runtime API on
//! a Unix socket: which backend served how many connections, whether each
//! is up, and backends added or removed while it runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// How long haproxy may take to start or to see a backend come or go.
pub const WAIT: Duration = Duration::from_secs(30);

/// The backend section's name in the runtime API.
const BACKEND: &str = "companions";

/// A running haproxy; stopped and its directory removed on drop.
pub struct Haproxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// Holds the config and the admin socket.
    pub dir: tempfile::TempDir,
    socket: PathBuf,
    child: Child,
    log: Arc<Mutex<String>>,
}

/// A free loopback port for a program that takes its port from its config
/// (bound once and released). Drawn at random below the kernel's
/// ephemeral range (32768 and up): a port from `bind(0)`, just released,
/// is often the next `bind(0)` of another test in this process.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        // Each RandomState is seeded anew: a random number without a crate.
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + u16::try_from(r % 12_000).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// The haproxy program: `$HAPROXY`, else Debian's `/usr/sbin/haproxy`
/// (not on an unprivileged user's PATH), else `haproxy` on the PATH.
fn program() -> String {
    if let Ok(p) = std::env::var("HAPROXY") {
        return p;
    }
    let debian = "/usr/sbin/haproxy";
    if std::path::Path::new(debian).is_file() {
        debian.into()
    } else {
        "haproxy".into()
    }
}

impl Haproxy {
    /// Start haproxy on a free loopback port in front of `backends`
    /// (named `s0`, `s1`, … in that order); returns once its runtime API
    /// answers.
    pub async fn start(backends: &[SocketAddr]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_on(addr, backends).await
    }

    /// The same on `addr` (chosen beforehand, e.g. for a redirect URI the
    /// backends' config names).
    pub async fn start_on(addr: SocketAddr, backends: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("admin.sock");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("    server s{i} {b}\n"))
            .collect();
        let config = format!(
            "global\n\
             \x20   stats socket {sock} mode 600 level admin\n\
             \x20   maxconn 4096\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 1s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             \x20   retries 3\n\
             \x20   option redispatch 1\n\
             \x20   default-server check inter 200ms fall 1 rise 1\n\
             frontend fleet\n\
             \x20   bind {addr}\n\
             \x20   default_backend {BACKEND}\n\
             backend {BACKEND}\n\
             \x20   balance roundrobin\n\
             {servers}",
            sock = socket.display(),
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = Command::new(program());
        // -db: stay in the foreground; -f: our config only.
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start haproxy ({e}): apt-get install haproxy"));
        let log = Arc::new(Mutex::new(String::new()));
        for r in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Readable>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Readable>),
        ]
        .into_iter()
        .flatten()
        {
            drain(r, log.clone());
        }
        let mut h = Self {
            addr,
            dir,
            socket,
            child,
            log,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!("haproxy exited ({status}):\n{}", h.log());
            }
            if h.try_command("show info").await.is_ok() {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy's runtime API did not answer in time:\n{}",
                h.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What haproxy printed.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn try_command(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// A runtime API command; its answer.
    pub async fn command(&self, command: &str) -> String {
        self.try_command(command)
            .await
            .unwrap_or_else(|e| panic!("haproxy runtime API, {command:?}: {e}"))
    }

    /// Each backend's name and (connections served so far, status such as
    /// `UP`, `DOWN`, `MAINT`), from `show stat`.
    pub async fn backends(&self) -> BTreeMap<String, (u64, String)> {
        let csv = self.command("show stat").await;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |n: &str| {
            header
                .iter()
                .position(|h| *h == n)
                .unwrap_or_else(|| panic!("no {n} column in show stat:\n{csv}"))
        };
        let (px, sv, stot, status) = (col("pxname"), col("svname"), col("stot"), col("status"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status && f[px] == BACKEND && f[sv] != "BACKEND")
            .map(|f| {
                (
                    f[sv].to_string(),
                    (f[stot].parse().unwrap_or(0), f[status].to_string()),
                )
            })
            .collect()
    }

    /// Connections each backend served so far.
    pub async fn served(&self) -> BTreeMap<String, u64> {
        self.backends()
            .await
            .into_iter()
            .map(|(k, (n, _))| (k, n))
            .collect()
    }

    /// Wait until backend `name`'s status starts with `status` (`UP`,
    /// `DOWN`): haproxy's health check has seen it start or stop.
    pub async fn wait_status(&self, name: &str, status: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.backends().await;
            if now.get(name).is_some_and(|(_, s)| s.starts_with(status)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy never saw {name} {status}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Add backend `name` at `addr` while running (health-checked like the
    /// others); returns once haproxy sees it up.
    pub async fn add(&self, name: &str, addr: SocketAddr) {
        let out = self
            .command(&format!("add server {BACKEND}/{name} {addr} check"))
            .await;
        assert!(out.contains("New server registered"), "add server: {out}");
        for cmd in ["enable health", "enable server"] {
            let out = self.command(&format!("{cmd} {BACKEND}/{name}")).await;
            assert!(out.trim().is_empty(), "{cmd}: {out}");
        }
        self.wait_status(name, "UP").await;
    }

    /// Take backend `name` out: no new connections, its open ones cut,
    /// then gone from the configuration.
    pub async fn remove(&self, name: &str) {
        for cmd in [
            format!("disable server {BACKEND}/{name}"),
            format!("shutdown sessions server {BACKEND}/{name}"),
        ] {
            let out = self.command(&cmd).await;
            assert!(out.trim().is_empty(), "{cmd}: {out}");
        }
        // Sessions close asynchronously; deletion waits for them.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let out = self.command(&format!("del server {BACKEND}/{name}")).await;
            if out.contains("Server deleted") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "del server {name}: {out}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

trait Readable: tokio::io::AsyncRead + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + Unpin + Send + 'static> Readable for T {}

fn drain(mut r: Box<dyn Readable>, into: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}
