//! Code-based linking (`[auth] method = "code"`): avsd asks LWA for a code
//! pair, shows Amazon's page and the code on D-Bus, polls for its tokens
//! never faster than LWA's `interval` (doubling on `slow_down`), keeps the
//! refresh token in the state directory and refreshes ahead of expiry. It
//! answers the same [`super::AuthCommand`]s as the companion path, so the
//! rest of avsd cannot tell which path gave the token.

mod actor;
mod flow;
pub mod lwa;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use avsd_config::AvsdConfig;

/// What the code-login actor needs, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct CodeSettings {
    /// The LWA client, or why it cannot be built.
    pub lwa: Result<lwa::LwaClient, String>,
    /// Product ID at Amazon.
    pub product_id: String,
    /// Device serial number.
    pub dsn: String,
    /// Where the token file lives.
    pub state_dir: PathBuf,
    /// Ask for a code pair at start-up when nothing is saved.
    pub register_on_start: bool,
    /// Head start for refreshes (at most half a token's life).
    pub renew_before: Duration,
}

impl CodeSettings {
    /// Resolve settings from the config.
    pub fn from_config(config: &AvsdConfig) -> Self {
        let lwa = if config.device.product_id.is_empty() {
            Err(
                "cannot log in: `device.product_id` is not set in the config; set it (see the \
                 commented sample /etc/avsd/avsd.toml), restart avsd, then run `avsctl login`"
                    .to_string(),
            )
        } else {
            let ca = match &config.auth.ca_file {
                Some(p) => std::fs::read(p)
                    .map(Some)
                    .map_err(|e| format!("cannot read auth.ca_file `{}`: {e}", p.display())),
                None => Ok(None),
            };
            ca.and_then(|ca| {
                lwa::LwaClient::new(&config.auth.lwa_url, &config.auth.client_id, ca.as_deref())
            })
        };
        Self {
            lwa,
            product_id: config.device.product_id.clone(),
            dsn: crate::device::serial(config.device.serial.as_deref()),
            state_dir: config.state_dir(),
            register_on_start: config.companion.register_on_start,
            renew_before: Duration::from_secs(config.companion.renew_before_secs),
        }
    }
}

pub(super) use actor::CodeActor;
