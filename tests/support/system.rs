//! The whole system for black-box tests: the LWA stand-in, the companion
//! on the real clock, a private bus, and helpers to log avsd in and watch
//! its properties. Test files using it declare `mod companion_support;`,
//! `mod support;` and `mod system_support;`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use avs_companion::CompanionConfig;
use avsctl::proxy::AuthorizationProxy;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::companion::{Browser, Env, PRODUCT, Sim, WAIT};
use crate::{Bus, Daemon, Notify};

/// The LWA stand-in, a companion on the real clock, and a private bus.
pub struct World {
    /// The PKI and secrets.
    pub env: Env,
    /// The LWA stand-in.
    pub sim: Sim,
    /// The in-process companion, while it runs: its stop token and task.
    pub companion: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The companion's address (kept across restarts).
    pub companion_addr: std::net::SocketAddr,
    /// The redirect URI registered at the stand-in.
    pub redirect: String,
    /// The private system bus.
    pub bus: Bus,
}

impl World {
    /// Stand-ins, companion and bus, with access tokens of `token_lifetime` seconds.
    pub async fn new(token_lifetime: u64) -> World {
        let env = Env::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let redirect = format!("https://{addr}/authresponse");
        let lifetime = token_lifetime.to_string();
        let sim = Sim::start(&env, &redirect, &["--token-lifetime", &lifetime]).await;
        let mut world = World {
            env,
            sim,
            companion: None,
            companion_addr: addr,
            redirect,
            bus: Bus::start(),
        };
        world.start_companion(listener);
        world
    }

    /// (Re)start the companion on `listener`.
    pub fn start_companion(&mut self, listener: TcpListener) {
        self.start_companion_with(listener, |_| {});
    }

    /// Like `start_companion`, with `adjust` applied to the parsed config:
    /// for values the config file refuses, such as a registration code that
    /// lives 2 s (the file's minimum is 60).
    pub fn start_companion_with(
        &mut self,
        listener: TcpListener,
        adjust: impl FnOnce(&mut CompanionConfig),
    ) {
        let toml = self.env.companion_toml(
            &self.companion_addr.to_string(),
            &self.redirect,
            &self.sim.base,
            "",
        ) + "\n[timing]\npoll_interval_secs = 1\n";
        let mut config = self.env.companion_config(&toml);
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            avs_companion::run(listener, config, stop)
                .await
                .expect("companion runs");
        });
        self.companion = Some((shutdown, task));
    }

    /// Stop the companion and wait until it has.
    pub async fn stop_companion(&mut self) {
        if let Some((shutdown, task)) = self.companion.take() {
            shutdown.cancel();
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }

    /// Start the companion again on the same address and database.
    pub async fn restart_companion(&mut self) {
        let listener = TcpListener::bind(self.companion_addr).await.unwrap();
        self.start_companion(listener);
    }

    /// Stop the companion and start it again on the same address and
    /// database with `adjust` applied to its config.
    pub async fn restart_companion_with(&mut self, adjust: impl FnOnce(&mut CompanionConfig)) {
        self.stop_companion().await;
        let listener = TcpListener::bind(self.companion_addr).await.unwrap();
        self.start_companion_with(listener, adjust);
    }

    /// An avsd config for this world.
    pub fn avsd_config(&self, renew_before: u64, register_on_start: bool) -> String {
        format!(
            "[log]\nlevel = \"debug\"\n[device]\nproduct_id = \"{PRODUCT}\"\nserial = \"kitchen-1\"\n\
             [companion]\nurl = \"https://{}\"\nca_file = \"{}\"\nrenew_before_secs = {renew_before}\n\
             register_on_start = {register_on_start}\n[avs]\nendpoint = \"https://127.0.0.1:9\"\n",
            self.companion_addr,
            self.env.ca_file.display()
        )
    }

    /// A freshly started `avsd` logged in: wait until it shows a login,
    /// log in with its URL (read past the proxy's cache, see [`fresh`]),
    /// and wait until it is authorized; its Authorization proxy.
    pub async fn log_in_daemon(&self, avsd: &Daemon) -> AuthorizationProxy<'static> {
        let auth = auth_proxy(&self.bus).await;
        wait_state(&auth, "waiting-for-user", avsd).await;
        let url = fresh(auth.inner(), "LoginUrl").await;
        if url.ends_with("/code") {
            let code = fresh(auth.inner(), "UserCode").await;
            let page = self.answer_code(&url, &code, true).await;
            assert!(page.contains("Device linked"), "{page}");
        } else {
            self.log_in(&url).await;
        }
        wait_state(&auth, "authorized", avsd).await;
        auth
    }

    /// `[auth]` for code-based linking at this world's stand-in, to append
    /// to an avsd config.
    pub fn code_auth_section(&self) -> String {
        format!(
            "[auth]\nmethod = \"code\"\nclient_id = \"{}\"\nlwa_url = \"{}\"\nca_file = \"{}\"\n",
            crate::companion::CBL_CLIENT_ID,
            self.sim.base,
            self.env.ca_file.display()
        )
    }

    /// Answer a code login as a person would at the stand-in's page
    /// (`url`, from LoginUrl): type `code` as shown, press Allow or Deny;
    /// the page it lands on.
    pub async fn answer_code(&self, url: &str, code: &str, allow: bool) -> String {
        let client = self.env.client();
        let post = |to: String, form: Vec<(&'static str, String)>| {
            let client = client.clone();
            async move {
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", url_escape(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                let r = client
                    .post(to)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                r.text().await.unwrap()
            }
        };
        let page = post(url.to_string(), vec![("user_code", code.to_lowercase())]).await;
        assert!(page.contains("id=\"allow\""), "no consent page:\n{page}");
        let decision = if allow { "allow" } else { "deny" };
        post(
            format!("{url}/consent"),
            vec![
                ("user_code", code.to_string()),
                ("decision", decision.into()),
            ],
        )
        .await
    }

    /// Log in as a person would: open the login URL, click through the
    /// stand-in's consent page, land on the companion's success page.
    pub async fn log_in(&self, login_url: &str) {
        self.answer_consent(login_url, true).await;
    }

    /// Refuse as a person would: open the login URL, press Deny on the
    /// stand-in's consent page, land on the companion's "not allowed" page.
    pub async fn deny(&self, login_url: &str) {
        let page = self.answer_consent(login_url, false).await;
        assert!(page.contains("Access not allowed"), "{page}");
    }

    /// Open the login URL in a fresh browser, press Allow or Deny at the
    /// stand-in, and return the companion's page it lands on.
    async fn answer_consent(&self, login_url: &str, allow: bool) -> String {
        let browser = Browser {
            client: self
                .env
                .client_builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        };
        let consent = browser.open_device_page(login_url).await;
        let back = browser.consent(&consent, allow).await;
        let (status, page, _) = browser.get(&back).await;
        assert_eq!(status, 200, "{page}");
        page
    }

    /// Every secret the device side could leak: the session ids and tokens
    /// the companion holds, and every refresh token the stand-in issued.
    pub async fn secrets(&self) -> Vec<String> {
        let mut out = self.sim.issued_refresh_tokens().await;
        let db = rusqlite::Connection::open_with_flags(
            &self.env.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut rows = db
            .prepare("SELECT id, access_token, refresh_token FROM sessions")
            .unwrap();
        let found = rows
            .query_map([], |r| {
                Ok([
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ])
            })
            .unwrap();
        for row in found {
            out.extend(row.unwrap().into_iter().flatten());
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Panic if avsd's log holds an access token, a refresh token or a
    /// session id: any the companion stored or the stand-in issued, and
    /// anything shaped like an LWA token (`Atza|`, `Atzr|`).
    pub async fn assert_no_secrets_in(&self, log: &str) {
        for marker in ["Atza|", "Atzr|"] {
            assert!(!log.contains(marker), "a token ({marker}…) in avsd's log");
        }
        let secrets = self.secrets().await;
        assert!(!secrets.is_empty(), "no session or token to look for");
        for secret in secrets {
            assert!(
                !log.contains(&secret),
                "a session id or token ({}…) in avsd's log",
                &secret[..4.min(secret.len())]
            );
        }
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A proxy of avsd's Authorization interface on `bus`.
pub async fn auth_proxy(bus: &Bus) -> AuthorizationProxy<'static> {
    AuthorizationProxy::new(&bus.connect().await).await.unwrap()
}

/// A string property read from avsd now, past the proxy's cache. A zbus
/// proxy fills its cache with GetAll and drops the changes announced before
/// that answer, so a change made while a proxy is being built can be
/// missing from the cache for good; the waits below subscribe first, then
/// read with Get, as a client must.
pub async fn fresh(proxy: &zbus::Proxy<'_>, name: &str) -> String {
    let props = zbus::fdo::PropertiesProxy::builder(proxy.connection())
        .destination("org.avsd.Avs1")
        .unwrap()
        .path("/org/avsd/Avs1")
        .unwrap()
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let value = props
        .get(proxy.interface().clone(), name)
        .await
        .unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
    String::try_from(value).unwrap_or_else(|e| panic!("{name} is not a string: {e}"))
}

/// Wait, through PropertiesChanged, until State is `want`.
pub async fn wait_state(auth: &AuthorizationProxy<'_>, want: &str, avsd: &Daemon) {
    let mut changes = auth.receive_state_changed().await;
    let wait = async {
        loop {
            if fresh(auth.inner(), "State").await == want {
                return;
            }
            changes.next().await.expect("avsd left the bus");
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!(
            "State never became {want} (it is {}; LastError {:?}); avsd log:\n{}",
            fresh(auth.inner(), "State").await,
            auth.last_error().await.unwrap(),
            avsd.log_text()
        );
    }
}

/// A running `avs-sim avs` with its control API.
pub struct AvsSim {
    /// The process.
    pub child: tokio::process::Child,
    /// `https://127.0.0.1:PORT`
    pub base: String,
    /// `http://127.0.0.1:PORT` of the control API.
    pub control: String,
    /// `https://127.0.0.1:PORT` of the media server (`--media-dir`, with
    /// the files of [`crate::media::dir`]).
    pub media: String,
    /// What it printed.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    http: reqwest::Client,
}

impl AvsSim {
    /// Start the stand-in with the world's certificate and token key.
    pub async fn start(env: &Env, extra: &[&str]) -> AvsSim {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(crate::bin("avs-sim"));
        cmd.arg("avs")
            .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&env.cert_file)
            .arg("--tls-key")
            .arg(&env.key_file)
            .arg("--token-key-file")
            .arg(&env.token_key_file)
            .arg("--media-dir")
            .arg(crate::media::dir())
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("avs-sim avs starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut control, mut media) = (String::new(), String::new(), String::new());
        while base.is_empty() || control.is_empty() || media.is_empty() {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("avs-sim avs printed no address")
                .unwrap()
                .unwrap_or_else(|| panic!("avs-sim avs exited:\n{}", log.lock().unwrap()));
            if let Some(a) = line.strip_prefix("avs-sim avs listening on ") {
                base = a.trim().to_string();
            } else if let Some(a) = line.strip_prefix("avs-sim avs control on ") {
                control = a.trim().to_string();
            } else if let Some(a) = line.strip_prefix("avs-sim avs media on ") {
                media = a.trim().to_string();
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        AvsSim {
            child,
            base,
            control,
            media,
            log,
            http: reqwest::Client::new(),
        }
    }

    /// POST a control request; panics unless it succeeds.
    pub async fn post(&self, path_and_query: &str) -> serde_json::Value {
        let r = self
            .http
            .post(format!("{}{path_and_query}", self.control))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_success(),
            "control {path_and_query}: {status} {body}"
        );
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// POST a directive to push on the downchannel.
    pub async fn push(&self, query: &str, directive: serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/push{query}", self.control))
            .body(directive.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "push: {}", r.status());
    }

    /// Push `bytes` as they are onto the downchannel, with no part framing
    /// (`/push?raw=true`): a stream broken on purpose.
    pub async fn push_raw(&self, bytes: &str) {
        let r = self
            .http
            .post(format!("{}/push?raw=true", self.control))
            .body(bytes.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "push: {}", r.status());
    }

    /// The stand-in's statistics.
    pub async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/stats", self.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Wait (on the stand-in's side) until `conditions` hold; the stats then.
    pub async fn wait(&self, conditions: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!(
                "{}/wait?{conditions}&timeout_ms=30000",
                self.control
            ))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "wait {conditions}: {status}; stats {body:#}"
        );
        body
    }
}

impl World {
    /// avsd's config pointed at the AVS stand-in `avs`.
    pub fn avsd_config_with_avs(&self, avs: &AvsSim, renew_before: u64) -> String {
        self.avsd_config(renew_before, true).replace(
            "[avs]\nendpoint = \"https://127.0.0.1:9\"\n",
            &format!(
                "[avs]\nendpoint = \"{}\"\nca_file = \"{}\"\n",
                avs.base,
                self.env.ca_file.display()
            ),
        )
    }

    /// Start avsd with `config`, log it in, and wait until it is authorized.
    pub async fn logged_in(&self, config: &str) -> (Daemon, AuthorizationProxy<'static>) {
        self.logged_in_wrapped(config, &[]).await
    }

    /// `logged_in`, with avsd run through `wrapper` (see
    /// [`Daemon::start_wrapped`]).
    pub async fn logged_in_wrapped(
        &self,
        config: &str,
        wrapper: &[String],
    ) -> (Daemon, AuthorizationProxy<'static>) {
        let notify = Notify::bind();
        let avsd = Daemon::start_wrapped(&self.bus, Some(&notify), config, None, &[], wrapper);
        notify.wait_for("READY=1", Duration::from_secs(20));
        let auth = self.log_in_daemon(&avsd).await;
        (avsd, auth)
    }
}

/// Wait, through PropertiesChanged, until Dialog.Connection is `want`.
pub async fn wait_connection(dialog: &avsctl::proxy::DialogProxy<'_>, want: &str, avsd: &Daemon) {
    wait_connection_within(dialog, want, avsd, WAIT).await;
}

/// `wait_connection` with its own limit, for waits that include back-off.
pub async fn wait_connection_within(
    dialog: &avsctl::proxy::DialogProxy<'_>,
    want: &str,
    avsd: &Daemon,
    limit: std::time::Duration,
) {
    let mut changes = dialog.receive_connection_changed().await;
    let wait = async {
        loop {
            if fresh(dialog.inner(), "Connection").await == want {
                return;
            }
            changes.next().await.expect("avsd left the bus");
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        panic!(
            "Connection never became {want} (it is {}); avsd log:\n{}",
            fresh(dialog.inner(), "Connection").await,
            avsd.log_text()
        );
    }
}
