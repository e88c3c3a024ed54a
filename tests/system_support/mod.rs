//! The whole system for black-box tests: the LWA stand-in, the companion
//! on the real clock, a private bus, and helpers to log avsd in and watch
//! its properties. Test files using it declare `mod companion_support;`,
//! `mod support;` and `mod system_support;`.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use avsd::dbus::proxy::AuthorizationProxy;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::companion_support::{Browser, Env, PRODUCT, Sim, WAIT};
use crate::support::{Bus, Daemon};

/// The LWA stand-in, a companion on the real clock, and a private bus.
pub struct World {
    pub env: Env,
    pub sim: Sim,
    pub companion: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    pub companion_addr: std::net::SocketAddr,
    pub redirect: String,
    pub bus: Bus,
}

impl World {
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

    pub fn start_companion(&mut self, listener: TcpListener) {
        let toml = self.env.companion_toml(
            &self.companion_addr.to_string(),
            &self.redirect,
            &self.sim.base,
            "",
        ) + "\n[timing]\npoll_interval_secs = 1\n";
        let config = self.env.companion_config(&toml);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            avsd::companion::run(listener, config, stop)
                .await
                .expect("companion runs");
        });
        self.companion = Some((shutdown, task));
    }

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

    pub fn avsd_config(&self, renew_before: u64, register_on_start: bool) -> String {
        format!(
            "[log]\nlevel = \"debug\"\n[device]\nproduct_id = \"{PRODUCT}\"\nserial = \"kitchen-1\"\n\
             [companion]\nurl = \"https://{}\"\nca_file = \"{}\"\nrenew_before_secs = {renew_before}\n\
             register_on_start = {register_on_start}\n[avs]\nendpoint = \"https://127.0.0.1:9\"\n",
            self.companion_addr,
            self.env.ca_file.display()
        )
    }

    /// Log in as a person would: open the login URL, click through the
    /// stand-in's consent page, land on the companion's success page.
    pub async fn log_in(&self, login_url: &str) {
        let browser = Browser {
            client: self
                .env
                .client_builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        };
        let consent = browser.open_device_page(login_url).await;
        let back = browser.consent(&consent, true).await;
        let (status, page, _) = browser.get(&back).await;
        assert_eq!(status, 200, "{page}");
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub async fn auth_proxy(bus: &Bus) -> AuthorizationProxy<'static> {
    AuthorizationProxy::new(&bus.connect().await).await.unwrap()
}

/// Wait, through PropertiesChanged, until State is `want`.
pub async fn wait_state(auth: &AuthorizationProxy<'_>, want: &str, avsd: &Daemon) {
    let mut changes = auth.receive_state_changed().await;
    let wait = async {
        loop {
            if auth.state().await.unwrap() == want {
                return;
            }
            changes.next().await.expect("avsd left the bus");
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!(
            "State never became {want} (it is {}; LastError {:?}); avsd log:\n{}",
            auth.state().await.unwrap(),
            auth.last_error().await.unwrap(),
            avsd.log_text()
        );
    }
}
