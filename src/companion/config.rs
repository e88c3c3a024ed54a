//! `companion.toml`: what `avs-companion` reads at start. Strict like
//! avsd's config; the commented sample in `config/companion.toml` is parsed
//! by a test with every key enabled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Invalid, LOG_LEVELS, LogConfig, StrictConfig};
use crate::secret::Secret;

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
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".into(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            device_ca_file: None,
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
        }
    }
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// SQLite file; unset means `$STATE_DIRECTORY/companion.sqlite3`, else
    /// `/var/lib/avsd/companion.sqlite3`.
    pub database: Option<PathBuf>,
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

impl StrictConfig for CompanionConfig {
    const HELP: &'static [(&'static str, &'static str)] = &[
        (
            "log.level",
            "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        ),
        (
            "server.listen",
            "an address and port in quotes, e.g. \"0.0.0.0:8443\"",
        ),
        (
            "server.cert_file",
            "the path of a PEM certificate chain in quotes",
        ),
        ("server.key_file", "the path of a PEM private key in quotes"),
        (
            "server.device_ca_file",
            "the path of a PEM CA certificate in quotes",
        ),
        (
            "lwa.client_id",
            "the security profile's client id in quotes",
        ),
        (
            "lwa.client_secret_file",
            "the path of a file holding the client secret, in quotes",
        ),
        (
            "lwa.redirect_uri",
            "this service's https://HOST:PORT/authresponse URL in quotes",
        ),
        (
            "lwa.authorize_url",
            "an https:// URL in quotes (Amazon: https://www.amazon.com/ap/oa)",
        ),
        (
            "lwa.token_url",
            "an https:// URL in quotes (Amazon: https://api.amazon.com/auth/o2/token)",
        ),
        ("lwa.ca_file", "the path of a PEM CA certificate in quotes"),
        (
            "lwa.refresh_margin_secs",
            "a whole number of seconds, e.g. 600",
        ),
        (
            "lwa.request_timeout_secs",
            "a whole number of seconds, e.g. 30",
        ),
        (
            "products",
            "product ids as keys, each with a list of allowed DSNs in quotes ([] for any)",
        ),
        ("storage.database", "an absolute file path in quotes"),
        (
            "timing.registration_ttl_secs",
            "a whole number of seconds, e.g. 600",
        ),
        (
            "timing.state_ttl_secs",
            "a whole number of seconds, e.g. 600",
        ),
        (
            "timing.poll_interval_secs",
            "a whole number of seconds, e.g. 5",
        ),
    ];

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            out.push(Invalid::new(
                "log.level",
                format!("`{}` is not a log level", self.log.level),
                "use one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
            ));
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            out.push(Invalid::new(
                "server.listen",
                format!("`{}` is not an address:port", self.server.listen),
                "write it like \"0.0.0.0:8443\" or \"[::]:8443\"",
            ));
        }
        let files = [
            ("server.cert_file", Some(&self.server.cert_file)),
            ("server.key_file", Some(&self.server.key_file)),
            ("server.device_ca_file", self.server.device_ca_file.as_ref()),
            ("lwa.ca_file", self.lwa.ca_file.as_ref()),
        ];
        for (key, path) in files {
            if let Some(p) = path {
                check_file(&mut out, key, p, "make one with `avs-companion make-certs`");
            }
        }
        if self.lwa.client_id.trim().is_empty() || self.lwa.client_id.len() > 100 {
            out.push(Invalid::new(
                "lwa.client_id",
                "the client id must be 1 to 100 bytes",
                "copy it from your security profile's Web settings at developer.amazon.com",
            ));
        }
        if let Err(e) = read_secret(&self.lwa.client_secret_file) {
            out.push(Invalid::new("lwa.client_secret_file", e.0, e.1));
        }
        for (key, value, path) in [
            (
                "lwa.redirect_uri",
                &self.lwa.redirect_uri,
                Some("/authresponse"),
            ),
            ("lwa.authorize_url", &self.lwa.authorize_url, None),
            ("lwa.token_url", &self.lwa.token_url, None),
        ] {
            match url::Url::parse(value) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() => {
                    if let Some(p) = path
                        && u.path() != p
                    {
                        out.push(Invalid::new(
                            key,
                            format!("`{value}` does not end in {p}"),
                            format!("use https://HOST:PORT{p}, exactly as registered at Amazon"),
                        ));
                    }
                }
                _ => out.push(Invalid::new(
                    key,
                    format!("`{value}` is not an https:// URL"),
                    "LWA only talks HTTPS: write a full https:// URL",
                )),
            }
        }
        if self.products.is_empty() {
            out.push(Invalid::new(
                "products",
                "no product id is allowed, so no device could register",
                "add a [products] section with a line like `my_product = []`",
            ));
        }
        for (id, dsns) in &self.products {
            if id.is_empty() || id.len() > 384 || dsns.iter().any(|d| d.trim().is_empty()) {
                out.push(Invalid::new(
                    "products",
                    format!("product `{id}`: ids are 1 to 384 characters and DSNs are not empty"),
                    "fix the product id or remove the empty DSN",
                ));
            }
        }
        if let Some(db) = &self.storage.database
            && !db.is_absolute()
        {
            out.push(Invalid::new(
                "storage.database",
                format!("`{}` is not an absolute path", db.display()),
                "give the full path, starting with /",
            ));
        }
        for (key, v, lo, hi) in [
            (
                "lwa.refresh_margin_secs",
                self.lwa.refresh_margin_secs,
                0,
                3000,
            ),
            (
                "lwa.request_timeout_secs",
                self.lwa.request_timeout_secs,
                1,
                300,
            ),
            (
                "timing.registration_ttl_secs",
                self.timing.registration_ttl_secs,
                60,
                3600,
            ),
            (
                "timing.state_ttl_secs",
                self.timing.state_ttl_secs,
                60,
                3600,
            ),
            (
                "timing.poll_interval_secs",
                self.timing.poll_interval_secs,
                1,
                60,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                out.push(Invalid::new(
                    key,
                    format!("{v} is out of range"),
                    format!("use a value from {lo} to {hi}"),
                ));
            }
        }
        out
    }
}

fn check_file(out: &mut Vec<Invalid>, key: &str, path: &Path, hint: &str) {
    if path.as_os_str().is_empty() {
        out.push(Invalid::new(
            key,
            "not set",
            format!("set it to a file path; {hint}"),
        ));
    } else if !path.is_file() {
        out.push(Invalid::new(
            key,
            format!("`{}` does not exist or is not a file", path.display()),
            format!("fix the path; {hint}"),
        ));
    }
}

/// Read the client secret, refusing a file others could read.
/// The error is (what is wrong, how to fix it).
pub fn read_secret(path: &Path) -> Result<Secret, (String, String)> {
    if path.as_os_str().is_empty() {
        return Err((
            "not set".into(),
            "put the client secret in a file only the service user can read and give its path"
                .into(),
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        (
            format!("cannot read `{}`: {e}", path.display()),
            "fix the path, or create the file with the client secret in it".into(),
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err((
            format!(
                "`{}` has mode {mode:04o}: group or others can read the client secret",
                path.display()
            ),
            format!("run: chmod 600 {}", path.display()),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            format!("cannot read `{}`: {e}", path.display()),
            "make it readable by the service user (owner avsd, mode 600)".into(),
        )
    })?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err((
            format!("`{}` is empty", path.display()),
            "put the client secret from your security profile on its first line".into(),
        ));
    }
    Ok(Secret::new(secret))
}

impl CompanionConfig {
    /// The database file: config, then `$STATE_DIRECTORY`, then /var/lib/avsd.
    pub fn database_path(&self) -> PathBuf {
        if let Some(db) = &self.storage.database {
            return db.clone();
        }
        let dir = match std::env::var_os("STATE_DIRECTORY") {
            Some(v) if !v.is_empty() => {
                let s = v.to_string_lossy();
                PathBuf::from(
                    s.split(':')
                        .next()
                        .unwrap_or(crate::config::DEFAULT_STATE_DIR),
                )
            }
            _ => PathBuf::from(crate::config::DEFAULT_STATE_DIR),
        };
        dir.join(DB_FILE)
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
        format!(
            "{}: OK\n  listen:       https://{}\n  mutual TLS:   {}\n  client id:    {}\n  redirect uri: {}\n  token url:    {}\n  products:     {}\n  database:     {}\n",
            path.display(),
            self.server.listen,
            if self.server.device_ca_file.is_some() {
                "required on device routes"
            } else {
                "off"
            },
            self.lwa.client_id,
            self.lwa.redirect_uri,
            self.lwa.token_url,
            self.products.keys().cloned().collect::<Vec<_>>().join(", "),
            self.database_path().display()
        )
    }
}
