//! Shared harness for the companion tests: a throwaway CA, the `avs-sim lwa`
//! binary, `avs-companion` in-process on port 0 (or as a process), and
//! browser- and device-like HTTPS clients.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avs_companion::CompanionConfig;
use avs_companion::flow::ManualClock;
use https::certs::LocalCa;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod clients;
pub use clients::*;

/// Client id the stand-in registers.
pub const CLIENT_ID: &str = "amzn1.application-oa2-client.test";
/// The client id of the stand-in's "Other devices and platforms" security
/// profile, allowed code-based linking.
pub const CBL_CLIENT_ID: &str = "amzn1.application-oa2-client.cbl";
/// A product every test may register.
pub const PRODUCT: &str = "test_product";
/// Startup can include a first build of rustls state; never wait forever.
pub const WAIT: Duration = Duration::from_secs(30);

/// Throwaway PKI and files for one test.
pub struct Env {
    /// The folder holding every file below; removed on drop.
    pub dir: tempfile::TempDir,
    /// The test CA, to sign more certificates.
    pub ca: LocalCa,
    /// `ca.crt`.
    pub ca_file: PathBuf,
    /// `server.crt` for 127.0.0.1 and localhost.
    pub cert_file: PathBuf,
    /// `server.key`.
    pub key_file: PathBuf,
    /// The LWA client secret.
    pub secret: String,
    /// The file holding it (0600).
    pub secret_file: PathBuf,
    /// The key the stand-ins sign and check access tokens with.
    pub token_key: Vec<u8>,
    /// The file holding it.
    pub token_key_file: PathBuf,
    /// Where the companion's database goes.
    pub db: PathBuf,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// Make the CA, certificates, client secret and token key.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = crate::tls::TestCa::write(dir.path(), "test CA");
        let p = |n: &str| dir.path().join(n);
        let secret = format!("secret-{}", avs_companion::flow::random_token(24));
        std::fs::write(p("client-secret"), format!("{secret}\n")).unwrap();
        std::fs::set_permissions(p("client-secret"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let token_key = avs_companion::flow::random_token(32).into_bytes();
        std::fs::write(p("token.key"), &token_key).unwrap();
        Self {
            ca_file: tls.ca_file,
            cert_file: tls.cert_file,
            key_file: tls.key_file,
            secret,
            secret_file: p("client-secret"),
            token_key,
            token_key_file: p("token.key"),
            db: p("state/companion.sqlite3"),
            ca: tls.ca,
            dir,
        }
    }

    /// A client certificate + key (PEM, concatenated) naming `name`.
    pub fn device_identity(&self, name: &str) -> reqwest::Identity {
        let pem = self.ca.client(name).expect("client cert");
        reqwest::Identity::from_pem(format!("{}{}", pem.cert, pem.key).as_bytes())
            .expect("identity")
    }

    /// The companion config as TOML; `extra` is appended to `[server]`.
    pub fn companion_toml(
        &self,
        listen: &str,
        redirect: &str,
        sim: &str,
        server_extra: &str,
    ) -> String {
        format!(
            r#"[log]
level = "debug"

[server]
listen = "{listen}"
cert_file = "{cert}"
key_file = "{key}"
{server_extra}

[lwa]
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
redirect_uri = "{redirect}"
authorize_url = "{sim}/ap/oa"
token_url = "{sim}/auth/o2/token"
ca_file = "{ca}"

[products]
{PRODUCT} = []
"dsn-limited" = ["0001"]

[storage]
database = "{db}"
"#,
            cert = self.cert_file.display(),
            key = self.key_file.display(),
            secret = self.secret_file.display(),
            ca = self.ca_file.display(),
            db = self.db.display(),
        )
    }

    /// A companion config from `toml` (the test's sections) plus this PKI.
    pub fn companion_config(&self, toml: &str) -> CompanionConfig {
        let path = self.dir.path().join("companion.toml");
        std::fs::write(&path, toml).unwrap();
        match avsd_config::load(&path) {
            Ok(c) => c,
            Err(e) => panic!("test config refused:\n{e}"),
        }
    }

    /// A client that trusts the test CA (no cookies, no redirects).
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// A reqwest client builder trusting the test CA.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.ca.pem.cert.as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WAIT)
    }
}

/// Spawn `cmd`, collect its stderr, and return it once it printed its
/// "listening on https://ADDR" line.
pub async fn spawn_listening(mut cmd: Command) -> (Child, String, Arc<Mutex<String>>) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let log = Arc::new(Mutex::new(String::new()));
    collect(child.stderr.take().unwrap(), log.clone());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("no listening line in time")
        .expect("read stdout");
    let Some(line) = line else {
        let _ = child.wait().await;
        panic!("process exited before listening:\n{}", log.lock().unwrap());
    };
    let base = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    let out = Arc::new(Mutex::new(String::new()));
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            out.lock().unwrap().push_str(&l);
        }
    });
    (child, base, log)
}

fn collect(r: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut s = into.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
}

/// A running `avs-sim lwa`.
pub struct Sim {
    /// The `avs-sim lwa` process.
    pub child: Child,
    /// Its base URL.
    pub base: String,
    /// What it printed.
    pub log: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Sim {
    /// Start `avs-sim lwa` with the test PKI, `redirect` and `extra` arguments.
    pub async fn start(env: &Env, redirect: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new(crate::bin("avs-sim"));
        cmd.arg("lwa")
            .args(["--listen", "127.0.0.1:0", "--client-id", CLIENT_ID])
            .args(["--cbl-client-id", CBL_CLIENT_ID, "--codepair-interval", "1"])
            .arg("--client-secret-file")
            .arg(&env.secret_file)
            .args(["--redirect-uri", redirect])
            .arg("--tls-cert")
            .arg(&env.cert_file)
            .arg("--tls-key")
            .arg(&env.key_file)
            .arg("--token-key-file")
            .arg(&env.token_key_file)
            .args(extra);
        let (child, base, log) = spawn_listening(cmd).await;
        Self {
            child,
            base,
            log,
            client: env.client(),
        }
    }

    /// POST to a `/_sim/…` control endpoint; its JSON answer.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}/_sim/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "control {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// GET a `/_sim/…` endpoint; its JSON answer.
    pub async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}/_sim/{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// One counter of `/_sim/stats`.
    pub async fn counter(&self, name: &str) -> u64 {
        self.get("counters").await[name].as_u64().unwrap_or(0)
    }

    /// Every refresh token the stand-in has issued.
    pub async fn issued_refresh_tokens(&self) -> Vec<String> {
        self.get("issued").await["refresh_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

/// `avs-companion` running in this process on its own port.
pub struct Companion {
    /// Its base URL.
    pub base: String,
    /// Stops it.
    pub shutdown: CancellationToken,
    /// Its task, to await after `shutdown`.
    pub task: JoinHandle<()>,
}

impl Companion {
    /// Start the companion on port 0 with `config` and `clock`.
    pub async fn start(
        listener: TcpListener,
        config: CompanionConfig,
        clock: Arc<ManualClock>,
    ) -> Self {
        let base = format!("https://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = avs_companion::run_with_clock(listener, config, s, clock).await {
                panic!("companion failed to start: {e}");
            }
        });
        Self {
            base,
            shutdown,
            task,
        }
    }

    /// Stop it and wait until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("companion did not stop")
            .expect("companion task panicked");
    }
}

/// The usual set-up: PKI, the stand-in, and the companion in-process.
pub struct Setup {
    /// The PKI and secrets.
    pub env: Env,
    /// The LWA stand-in.
    pub sim: Sim,
    /// The companion.
    pub companion: Companion,
    /// The companion's clock, moved by the test.
    pub clock: Arc<ManualClock>,
    /// The redirect URI registered at the stand-in.
    pub redirect: String,
}

impl Setup {
    /// The set-up with `sim_args` for the stand-in.
    pub async fn new(sim_args: &[&str]) -> Self {
        Self::with_server_extra(sim_args, "").await
    }

    /// The same, with `server_extra` added to the companion's `[server]`.
    pub async fn with_server_extra(sim_args: &[&str], server_extra: &str) -> Self {
        let env = Env::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let redirect = format!("https://{addr}/authresponse");
        let sim = Sim::start(&env, &redirect, sim_args).await;
        let extra = server_extra.replace("{ca}", &env.ca_file.display().to_string());
        let config = env.companion_config(&env.companion_toml(
            &addr.to_string(),
            &redirect,
            &sim.base,
            &extra,
        ));
        let clock = Arc::new(ManualClock::new());
        let companion = Companion::start(listener, config, clock.clone()).await;
        Self {
            env,
            sim,
            companion,
            clock,
            redirect,
        }
    }

    /// Stop the companion and start it again on the same database.
    pub async fn restart(&mut self) {
        let old = std::mem::replace(
            &mut self.companion,
            Companion {
                base: String::new(),
                shutdown: CancellationToken::new(),
                task: tokio::spawn(async {}),
            },
        );
        old.stop().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = self.env.companion_config(&self.env.companion_toml(
            &addr.to_string(),
            &self.redirect,
            &self.sim.base,
            "",
        ));
        self.companion = Companion::start(listener, config, self.clock.clone()).await;
    }

    /// The database as it is now. Asks for `/` first (it reads and writes
    /// nothing), so the service has opened its database before it is read.
    pub async fn db(&self) -> DbSnapshot {
        let r = self
            .env
            .client()
            .get(format!("{}/", self.companion.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        DbSnapshot::read(&self.env.db)
    }

    /// Assert the database holds exactly what `before` held: same row
    /// counts, same rows.
    pub async fn assert_db_unchanged(&self, before: &DbSnapshot, after_what: &str) {
        let now = self.db().await;
        assert_eq!(
            now.counts(),
            before.counts(),
            "row counts changed after {after_what}"
        );
        assert_eq!(now, *before, "rows changed after {after_what}");
    }

    /// A device-like client of the companion.
    pub fn device(&self) -> Device {
        Device {
            client: self.env.client(),
            base: self.companion.base.clone(),
        }
    }

    /// A browser-like client of the companion.
    pub fn browser(&self) -> Browser {
        Browser {
            client: self
                .env
                .client_builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }
}

/// Every row of every table in the companion's SQLite database, read through
/// a read-only connection: equal snapshots mean a request stored nothing and
/// changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshot {
    /// Table name to its rows, each row its columns rendered as text, sorted.
    pub tables: BTreeMap<String, Vec<Vec<String>>>,
}

impl DbSnapshot {
    /// Read `path` read-only. The flow's tables must be there.
    pub fn read(path: &Path) -> Self {
        use rusqlite::types::ValueRef;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
        conn.busy_timeout(WAIT).unwrap();
        let names: Vec<String> = conn
            .prepare(
                // The migration history describes the schema, not the flow.
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                 AND name <> 'refinery_schema_history'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut tables = BTreeMap::new();
        for name in names {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).unwrap();
            let n = stmt.column_count();
            let mut rows: Vec<Vec<String>> = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                ValueRef::Null => "NULL".to_string(),
                                ValueRef::Integer(v) => v.to_string(),
                                ValueRef::Real(v) => v.to_string(),
                                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                                ValueRef::Blob(b) => format!("{b:?}"),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.sort();
            tables.insert(name, rows);
        }
        for t in ["sessions", "login_states"] {
            assert!(tables.contains_key(t), "no table {t} in {}", path.display());
        }
        Self { tables }
    }

    /// The rows of `table`.
    pub fn rows(&self, table: &str) -> &[Vec<String>] {
        &self.tables[table]
    }

    /// How many rows each table has.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.tables
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }
}
