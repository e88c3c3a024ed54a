//! Several `avs-companion` processes sharing one store, each on its own
//! fixed loopback port (so a load balancer in front keeps its addresses
//! across restarts), any of which can be killed with SIGKILL and started
//! again. What each printed, across restarts, stays readable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::process::{Child, Command};

use crate::companion::{Env, WAIT, spawn_listening};

/// What an instance logs (at info) once its store is open and it serves.
const SERVING: &str = "avs-companion serving HTTPS";

/// The `[storage]` section every instance gets, and whatever must live as
/// long as the fleet (a database server).
pub struct Store {
    /// The body of `[storage]` (TOML lines).
    pub storage: String,
    /// Says which backend, for messages.
    pub name: &'static str,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Store {
    /// One SQLite file shared by every instance (processes on one machine
    /// share it through SQLite's file locks).
    pub fn sqlite(path: &Path) -> Self {
        Self {
            storage: format!("database = \"{}\"\n", path.display()),
            name: "SQLite",
            _keep: Box::new(()),
        }
    }

    /// Any other store: its `[storage]` lines and what keeps it running.
    pub fn other(name: &'static str, storage: String, keep: impl std::any::Any + Send) -> Self {
        Self {
            storage,
            name,
            _keep: Box::new(keep),
        }
    }
}

/// One companion process of the fleet.
pub struct Instance {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
    logs: Vec<Arc<Mutex<String>>>,
    config: PathBuf,
}

impl Instance {
    /// Whether it is running (not killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Companion processes sharing one store.
pub struct Fleet {
    /// The instances, in start order.
    pub instances: Vec<Instance>,
    state: PathBuf,
}

impl Fleet {
    /// Start `n` instances, each on a free port, with the config
    /// `config(listen address)` (its own file per instance); returns once
    /// every one prints its listening line.
    pub async fn start(env: &Env, n: usize, config: impl Fn(SocketAddr) -> String) -> Self {
        let state = env.dir.path().join("fleet-state");
        let mut instances = Vec::new();
        for i in 0..n {
            let addr: SocketAddr = format!("127.0.0.1:{}", crate::haproxy::free_port())
                .parse()
                .unwrap();
            let path = env.dir.path().join(format!("companion-{i}.toml"));
            std::fs::write(&path, config(addr)).unwrap();
            instances.push(Instance {
                addr,
                child: None,
                logs: Vec::new(),
                config: path,
            });
        }
        let mut fleet = Self { instances, state };
        for i in 0..n {
            fleet.restart(i).await;
        }
        fleet
    }

    /// The listening addresses, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.instances.iter().map(|i| i.addr).collect()
    }

    /// `https://ADDR` of instance `i`.
    pub fn base(&self, i: usize) -> String {
        format!("https://{}", self.instances[i].addr)
    }

    /// Start instance `i` (again, after [`Fleet::kill`]) on its port;
    /// returns once it serves (its store is open: its "serving HTTPS" log
    /// line). One at a time: instances opening a new SQLite file at once
    /// race on its schema ("duplicate column name"), which a fleet must
    /// not, but which is not what these tests are about.
    pub async fn restart(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        assert!(inst.child.is_none(), "instance {i} is running");
        let mut cmd = Command::new(crate::bin("avs-companion"));
        cmd.arg("--config")
            .arg(&inst.config)
            .env("STATE_DIRECTORY", &self.state)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let (mut child, shown, log) = spawn_listening(cmd).await;
        assert_eq!(shown, format!("https://{}", inst.addr), "instance {i}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while !log.lock().unwrap().contains(SERVING) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("instance {i} exited ({status}):\n{}", log.lock().unwrap());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {i} never logged {SERVING:?}:\n{}",
                log.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        inst.child = Some(child);
        inst.logs.push(log);
    }

    /// Kill instance `i` with SIGKILL (no chance to finish anything) and
    /// reap it.
    pub async fn kill(&mut self, i: usize) {
        let mut child = self.instances[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("instance {i} is not running"));
        // tokio's kill is SIGKILL.
        child.kill().await.expect("kill -9 a companion");
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("a killed companion is reaped")
            .expect("wait");
    }

    /// Everything every instance printed, each line prefixed by its
    /// instance number.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, inst) in self.instances.iter().enumerate() {
            for log in &inst.logs {
                for line in log.lock().unwrap().lines() {
                    out.push_str(&format!("[{i}] {line}\n"));
                }
            }
        }
        out
    }

    /// How many log lines of all instances, all runs, contain `needle`.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.instances
            .iter()
            .flat_map(|i| i.logs.iter())
            .map(|l| l.lock().unwrap().matches(needle).count())
            .sum()
    }
}
