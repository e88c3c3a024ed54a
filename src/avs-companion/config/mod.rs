//! `companion.toml`: what `avs-companion` reads at start. Strict like
//! avsd's config; the commented sample in `config/companion.toml` is parsed
//! by a test with every key enabled.

mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use kit::strict::LogConfig;
pub use validate::{read_owned_secret, read_secret};

/// Where `avs-companion` reads its config when `--config` is not given.
pub const DEFAULT_COMPANION_CONFIG: &str = "/etc/avsd/companion.toml";
/// Amazon's consent page.
pub const AMAZON_AUTHORIZE_URL: &str = "https://www.amazon.com/ap/oa";
/// Amazon's token endpoint.
pub const AMAZON_TOKEN_URL: &str = "https://api.amazon.com/auth/o2/token";
/// The database file name inside the state directory.
pub const DB_FILE: &str = "companion.sqlite3";

/// The companion's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompanionConfig {
    /// `[log]`
    pub log: LogConfig,
    /// `[server]`
    pub server: ServerSection,
    /// `[lwa]`
    pub lwa: LwaSection,
    /// `[products]`: product id → allowed DSNs (empty: any DSN).
    pub products: BTreeMap<String, Vec<String>>,
    /// `[storage]`
    pub storage: StorageSection,
    /// `[timing]`
    pub timing: TimingSection,
    /// `[limits]`
    pub limits: LimitsSection,
}

/// `[server]`: where and how the HTTPS service listens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address and port to listen on.
    pub listen: String,
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key of the certificate.
    pub key_file: PathBuf,
    /// CA that signs device client certificates; set it to require mutual
    /// TLS on the device routes.
    pub device_ca_file: Option<PathBuf>,
    /// Connections open at once, from everyone; keep it well under the
    /// unit's `LimitNOFILE=`.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Close a connection that carried no request for this long.
    pub idle_timeout_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        let limits = https::Limits::default();
        Self {
            listen: "0.0.0.0:8443".into(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            device_ca_file: None,
            max_connections: limits.max_connections,
            max_connections_per_address: limits.max_connections_per_address,
            idle_timeout_secs: limits.idle_timeout.as_secs(),
        }
    }
}

impl ServerSection {
    /// The accept loop's limits.
    pub fn limits(&self) -> https::Limits {
        https::Limits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// `[lwa]`: the security profile at Amazon and where LWA is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LwaSection {
    /// Security-profile client id.
    pub client_id: String,
    /// File holding the client secret; must not be readable by group or others.
    pub client_secret_file: PathBuf,
    /// This service's `/authresponse` URL, registered as an Allowed Return URL.
    pub redirect_uri: String,
    /// LWA's consent page.
    pub authorize_url: String,
    /// LWA's token endpoint.
    pub token_url: String,
    /// Extra CA to trust for LWA (for a stand-in); the system roots stay trusted.
    pub ca_file: Option<PathBuf>,
    /// Refresh the access token when it has less than this left.
    pub refresh_margin_secs: u64,
    /// Give up on one LWA request after this long.
    pub request_timeout_secs: u64,
    /// Refreshes one session may force per minute by reporting a token AVS
    /// refused (`refusedToken`); more are answered `slow_down`.
    pub refused_refreshes_per_minute: u32,
    /// Refresh tokens due within the refresh margin in the background, at
    /// most this many a second per instance (spread with jitter); 0: only
    /// when a device asks.
    pub background_refreshes_per_second: u32,
}

impl Default for LwaSection {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret_file: PathBuf::new(),
            redirect_uri: String::new(),
            authorize_url: AMAZON_AUTHORIZE_URL.into(),
            token_url: AMAZON_TOKEN_URL.into(),
            ca_file: None,
            refresh_margin_secs: 600,
            request_timeout_secs: 30,
            refused_refreshes_per_minute: 4,
            background_refreshes_per_second: 0,
        }
    }
}

/// `[storage]`: SQLite (the default) or PostgreSQL (`url`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// SQLite file; unset means `$STATE_DIRECTORY/companion.sqlite3`, else
    /// `/var/lib/avs-companion/companion.sqlite3`.
    pub database: Option<PathBuf>,
    /// `postgres://USER@HOST:PORT/DATABASE`: use PostgreSQL instead of
    /// SQLite (every instance of a fleet names the same database).
    pub url: Option<String>,
    /// File holding the PostgreSQL user's password (mode 0600, owned by
    /// the service user).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL connections one instance keeps open at most.
    pub max_connections: usize,
    /// Key file sealing refresh tokens and PKCE verifiers at rest (mode
    /// 0600, owned by the service user; one `<id> <base64 key>` a line,
    /// the newest last). Unset: they are stored in clear.
    pub key_file: Option<PathBuf>,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            database: None,
            url: None,
            password_file: None,
            max_connections: 16,
            key_file: None,
        }
    }
}

/// `[timing]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingSection {
    /// How long a registration code works before the user logs in.
    pub registration_ttl_secs: u64,
    /// How long a login `state` stays valid.
    pub state_ttl_secs: u64,
    /// How often a device may poll `/provision/accessToken` while waiting.
    pub poll_interval_secs: u64,
}

impl Default for TimingSection {
    fn default() -> Self {
        Self {
            registration_ttl_secs: 600,
            state_ttl_secs: 600,
            poll_interval_secs: 5,
        }
    }
}

/// `[limits]`: how much anyone may ask of the routes that need no login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// `POST /provision/regCode` a minute from one client address.
    pub registrations_per_address_per_minute: u32,
    /// `POST /provision/regCode` a minute for one product id and serial.
    pub registrations_per_device_per_minute: u32,
    /// Wrong registration codes a minute from one client address (on the
    /// code form and the device page; RFC 8628 §5.1).
    pub wrong_codes_per_address_per_minute: u32,
    /// Registrations waiting for a login at once; more are refused.
    pub max_pending_sessions: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            registrations_per_address_per_minute: 10,
            registrations_per_device_per_minute: 4,
            wrong_codes_per_address_per_minute: 10,
            max_pending_sessions: 1000,
        }
    }
}

impl CompanionConfig {
    /// The database file: config, then `$STATE_DIRECTORY`, then /var/lib/avs-companion.
    pub fn database_path(&self) -> PathBuf {
        if let Some(db) = &self.storage.database {
            return db.clone();
        }
        let dir = match std::env::var_os("STATE_DIRECTORY") {
            Some(v) if !v.is_empty() => {
                let s = v.to_string_lossy();
                PathBuf::from(s.split(':').next().unwrap_or("/var/lib/avs-companion"))
            }
            _ => PathBuf::from("/var/lib/avs-companion"),
        };
        dir.join(DB_FILE)
    }

    /// Where the store is, in words (the URL has no password).
    pub fn store_name(&self) -> String {
        match &self.storage.url {
            Some(url) => url.clone(),
            None => self.database_path().display().to_string(),
        }
    }

    /// The public base URL (origin of the redirect URI), for login links.
    pub fn public_base(&self) -> String {
        match url::Url::parse(&self.lwa.redirect_uri) {
            Ok(u) => u.origin().ascii_serialization(),
            Err(_) => String::new(),
        }
    }

    /// Whether `product_id` with `dsn` may register.
    pub fn allows(&self, product_id: &str, dsn: &str) -> bool {
        match self.products.get(product_id) {
            Some(dsns) => dsns.is_empty() || dsns.iter().any(|d| d == dsn),
            None => false,
        }
    }

    /// A short human summary for `--check-config`.
    pub fn summary(&self, path: &Path) -> String {
        let expires = std::fs::read_to_string(&self.server.cert_file)
            .ok()
            .and_then(|pem| https::check::expiry(&pem))
            .map(|d| {
                format!(
                    "  certificate:  expires on {d}; renew before: avs-companion make-certs --renew-server\n"
                )
            })
            .unwrap_or_default();
        format!(
            "{}: OK\n  listen:       https://{}\n  connections:  {} at most, {} per client address\n  mutual TLS:   {}\n  client id:    {}\n  redirect uri: {}\n  token url:    {}\n  products:     {}\n  database:     {}\n",
            path.display(),
            self.server.listen,
            self.server.max_connections,
            self.server.max_connections_per_address,
            if self.server.device_ca_file.is_some() {
                "required on device routes"
            } else {
                "off"
            },
            self.lwa.client_id,
            self.lwa.redirect_uri,
            self.lwa.token_url,
            self.products.keys().cloned().collect::<Vec<_>>().join(", "),
            self.store_name()
        ) + &expires
            + &kit::strict::dropins_line(path)
    }
}
