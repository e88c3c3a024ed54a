//! The checks behind `--check-config`: every key's range, files that must
//! exist and what they hold (see `https::check`), and a client secret file
//! nobody else can read.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::CompanionConfig;
use kit::secret::Secret;
use kit::strict::{Invalid, LOG_LEVELS, StrictConfig};

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
            "server.max_connections",
            "a whole number of connections, e.g. 512",
        ),
        (
            "server.max_connections_per_address",
            "a whole number of connections, e.g. 32",
        ),
        (
            "server.idle_timeout_secs",
            "a whole number of seconds, e.g. 30",
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
            "lwa.refused_refreshes_per_minute",
            "a whole number from 1 to 60, e.g. 4",
        ),
        (
            "lwa.background_refreshes_per_second",
            "a whole number from 0 (off) to 1000, e.g. 20",
        ),
        (
            "products",
            "product ids as keys, each with a list of allowed DSNs in quotes ([] for any)",
        ),
        ("storage.database", "an absolute file path in quotes"),
        (
            "storage.url",
            "a PostgreSQL URL in quotes, e.g. \"postgres://avs@db.example:5432/avs\"",
        ),
        (
            "storage.password_file",
            "the path of a file holding the database password, in quotes",
        ),
        (
            "storage.key_file",
            "the path of the key file sealing refresh tokens at rest, in quotes",
        ),
        (
            "storage.max_connections",
            "a whole number of connections, e.g. 16",
        ),
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
        (
            "limits.registrations_per_address_per_minute",
            "a whole number, e.g. 10",
        ),
        (
            "limits.registrations_per_device_per_minute",
            "a whole number, e.g. 4",
        ),
        (
            "limits.wrong_codes_per_address_per_minute",
            "a whole number, e.g. 10",
        ),
        (
            "limits.max_pending_sessions",
            "a whole number of registrations, e.g. 1000",
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
        if !(1..=65_536).contains(&self.server.max_connections) {
            out.push(Invalid::new(
                "server.max_connections",
                format!("{} is out of range", self.server.max_connections),
                "use a value from 1 to 65536, well under the unit's LimitNOFILE",
            ));
        }
        if self.server.max_connections_per_address == 0
            || self.server.max_connections_per_address > self.server.max_connections
        {
            out.push(Invalid::new(
                "server.max_connections_per_address",
                format!(
                    "{} is out of range",
                    self.server.max_connections_per_address
                ),
                "use a value from 1 to server.max_connections",
            ));
        }
        if !(2..=3600).contains(&self.server.idle_timeout_secs) {
            out.push(Invalid::new(
                "server.idle_timeout_secs",
                format!("{} is out of range", self.server.idle_timeout_secs),
                "use a value from 2 to 3600",
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
        self.check_contents(&mut out);
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
        self.check_storage(&mut out);
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
                "lwa.refused_refreshes_per_minute",
                u64::from(self.lwa.refused_refreshes_per_minute),
                1,
                60,
            ),
            (
                "lwa.background_refreshes_per_second",
                u64::from(self.lwa.background_refreshes_per_second),
                0,
                1000,
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
            (
                "limits.registrations_per_address_per_minute",
                u64::from(self.limits.registrations_per_address_per_minute),
                1,
                10_000,
            ),
            (
                "limits.registrations_per_device_per_minute",
                u64::from(self.limits.registrations_per_device_per_minute),
                1,
                1000,
            ),
            (
                "limits.wrong_codes_per_address_per_minute",
                u64::from(self.limits.wrong_codes_per_address_per_minute),
                1,
                1000,
            ),
            (
                "limits.max_pending_sessions",
                self.limits.max_pending_sessions,
                1,
                1_000_000,
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

impl CompanionConfig {
    /// `[storage]`: one backend, a PostgreSQL URL without a password, and
    /// a password file nobody else can read.
    fn check_storage(&self, out: &mut Vec<Invalid>) {
        let st = &self.storage;
        if !(1..=1000).contains(&st.max_connections) {
            out.push(Invalid::new(
                "storage.max_connections",
                format!("{} is out of range", st.max_connections),
                "use a value from 1 to 1000, well under the server's max_connections divided by \
                 the number of instances",
            ));
        }
        if let Some(p) = &st.key_file
            && let Err(e) = crate::store::seal::Keys::load(p)
        {
            out.push(Invalid::new("storage.key_file", e.0, e.1));
        }
        let Some(url) = &st.url else {
            if st.password_file.is_some() {
                out.push(Invalid::new(
                    "storage.password_file",
                    "set, but storage.url is not: SQLite needs no password",
                    "remove it, or set storage.url to use PostgreSQL",
                ));
            }
            return;
        };
        if st.database.is_some() {
            out.push(Invalid::new(
                "storage.database",
                "set together with storage.url",
                "keep one: storage.url for PostgreSQL, storage.database for SQLite",
            ));
        }
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
                if u.password().is_some() {
                    out.push(Invalid::new(
                        "storage.url",
                        "holds a password, which would show in logs and `ps`",
                        "remove it from the URL and put it in the file storage.password_file names",
                    ));
                }
                if u.username().is_empty() {
                    out.push(Invalid::new(
                        "storage.url",
                        format!("`{url}` names no user"),
                        "write it as postgres://USER@HOST:PORT/DATABASE",
                    ));
                }
            }
            _ => out.push(Invalid::new(
                "storage.url",
                format!("`{url}` is not a postgres:// URL"),
                "write it as postgres://USER@HOST:PORT/DATABASE",
            )),
        }
        if let Some(p) = &st.password_file
            && let Err(e) = read_owned_secret(p)
        {
            out.push(Invalid::new("storage.password_file", e.0, e.1));
        }
    }

    /// What is wrong inside the certificate and key files, each with its
    /// config key.
    pub fn file_problems(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        self.check_contents(&mut out);
        out
    }

    /// What the certificate files hold, for those that exist: a runtime
    /// TLS failure after `--check-config` said OK is what this prevents.
    fn check_contents(&self, out: &mut Vec<Invalid>) {
        let (cert, key) = (&self.server.cert_file, &self.server.key_file);
        if cert.is_file() && key.is_file() {
            // The name browsers reach the service at is the redirect URI's.
            let host = url::Url::parse(&self.lwa.redirect_uri)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            if let Err((is_key, p)) = https::check::cert_and_key(cert, key, host.as_deref()) {
                let key = if is_key {
                    "server.key_file"
                } else {
                    "server.cert_file"
                };
                out.push(Invalid::new(key, p.message, p.fix));
            }
        }
        // A database (or its -wal, -shm) root made by running the service
        // by hand: the service user then fails at its first write.
        let db = self.database_path();
        let sqlite = self.storage.url.is_none();
        for suffix in ["", "-wal", "-shm"].into_iter().filter(|_| sqlite) {
            let mut file = db.clone().into_os_string();
            file.push(suffix);
            let file = std::path::PathBuf::from(file);
            if file.exists() && !writable(&file) {
                out.push(Invalid::new(
                    "storage.database",
                    format!("`{}` cannot be written by this user", file.display()),
                    format!(
                        "hand it to the service user: chown avs-companion: {} (made by running \
                         avs-companion as root?)",
                        file.display()
                    ),
                ));
            }
        }
        for (key, path) in [
            ("server.device_ca_file", self.server.device_ca_file.as_ref()),
            ("lwa.ca_file", self.lwa.ca_file.as_ref()),
        ] {
            if let Some(p) = path.filter(|p| p.is_file())
                && let Err(p) = https::check::ca_file(p)
            {
                out.push(Invalid::new(key, p.message, p.fix));
            }
        }
    }
}

/// Whether this process may write `path` (access(2), which answers for the
/// real user: the one `--check-config` runs as).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
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

/// Read a secret file that must also belong to this process's user (or
/// root): a file someone else owns could be swapped under the service.
pub fn read_owned_secret(path: &Path) -> Result<Secret, (String, String)> {
    use std::os::unix::fs::MetadataExt;
    let secret = read_secret(path)?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let owner = std::fs::metadata(path).map(|m| m.uid()).unwrap_or(euid);
    if owner != euid && owner != 0 {
        return Err((
            format!(
                "`{}` belongs to uid {owner}, not to the service user (uid {euid})",
                path.display()
            ),
            format!("run: chown {euid} {}", path.display()),
        ));
    }
    Ok(secret)
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
                "`{}` has mode {mode:04o}: group or others can read the secret in it",
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
