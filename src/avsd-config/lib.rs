//! avsd's configuration file (`/etc/avsd/avsd.toml`): its keys, their
//! defaults and their checks, read with the strict loader of `kit`.
//! A crate of its own so that the config fuzz target and `avsd
//! --check-config`'s tests need no audio, D-Bus or TLS code.

pub mod audio;
pub mod auth;
mod files;
pub mod wakeword;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use audio::AudioConfig;
pub use auth::AuthConfig;
pub use kit::strict::{
    ConfigError, Invalid, LOG_LEVELS, LogConfig, Problem, StrictConfig, load, parse,
};
pub use wakeword::WakeWordConfig;

/// Where avsd reads its config when `--config` is not given.
pub const DEFAULT_AVSD_CONFIG: &str = "/etc/avsd/avsd.toml";

/// Where state lives when neither the config nor systemd's
/// `STATE_DIRECTORY` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/avsd";

/// avsd's configuration (`/etc/avsd/avsd.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvsdConfig {
    /// Logging.
    pub log: LogConfig,
    /// Persistent state.
    pub state: StateConfig,
    /// This device's identity at Amazon.
    pub device: DeviceConfig,
    /// The companion web service that holds the LWA refresh token.
    pub companion: CompanionClientConfig,
    /// The Alexa Voice Service connection.
    pub avs: AvsConfig,
    /// Microphone and speaker.
    pub audio: AudioConfig,
    /// Which login path gives avsd its token.
    pub auth: AuthConfig,
    /// Timers, alarms and reminders.
    pub alerts: AlertsConfig,
    /// Hands-free listening.
    pub wakeword: WakeWordConfig,
}

/// `[alerts]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A file whose presence says the clock is synchronized (on a machine
    /// without a real-time clock, no alert rings before it exists).
    pub clock_sync_file: PathBuf,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            clock_sync_file: PathBuf::from("/run/systemd/timesync/synchronized"),
        }
    }
}

/// `[avs]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvsConfig {
    /// `na`, `eu`, `fe`, or an `https://` base URL.
    pub endpoint: String,
    /// Extra CA (PEM) to trust for the endpoint, e.g. a local stand-in's.
    pub ca_file: Option<PathBuf>,
    /// Seconds between pings of an idle connection.
    pub ping_interval_secs: u64,
    /// Seconds between UserInactivityReport events (AVS asks for hourly).
    pub inactivity_report_secs: u64,
    /// Seconds a connection must stay up before the reconnect back-off
    /// starts again from its first step.
    pub stable_after_secs: u64,
}

impl Default for AvsConfig {
    fn default() -> Self {
        Self {
            endpoint: "na".to_string(),
            ca_file: None,
            ping_interval_secs: 300,
            inactivity_report_secs: 3600,
            stable_after_secs: 60,
        }
    }
}

/// `[state]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// State directory; unset means `$STATE_DIRECTORY`, else `/var/lib/avsd`.
    pub dir: Option<PathBuf>,
}

/// `[device]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// The product ID registered for this device type at Amazon.
    pub product_id: String,
    /// Device serial number; unset means the Pi's serial, else machine-id.
    pub serial: Option<String>,
}

/// `[companion]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompanionClientConfig {
    /// Base URL of `avs-companion`, e.g. `https://pi.local:8443`.
    pub url: String,
    /// PEM file of the CA that signed the companion's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, if the companion asks for one.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Begin registration at start-up when no session is saved.
    pub register_on_start: bool,
    /// Renew the access token this many seconds before it expires.
    pub renew_before_secs: u64,
}

impl Default for CompanionClientConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            register_on_start: true,
            renew_before_secs: 600,
        }
    }
}

impl StrictConfig for AvsdConfig {
    const HELP: &'static [(&'static str, &'static str)] = &[
        (
            "log.level",
            "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        ),
        (
            "state.dir",
            "an absolute directory path in quotes, e.g. \"/var/lib/avsd\"",
        ),
        (
            "device.product_id",
            "the product ID of your device type at Amazon, in quotes",
        ),
        (
            "device.serial",
            "a serial number in quotes, unique per device, e.g. \"0001\"",
        ),
        (
            "companion.url",
            "the companion's https:// base URL in quotes",
        ),
        (
            "companion.ca_file",
            "the path of a PEM CA certificate in quotes",
        ),
        (
            "companion.client_cert",
            "the path of a PEM client certificate in quotes",
        ),
        (
            "companion.client_key",
            "the path of a PEM private key in quotes",
        ),
        ("companion.register_on_start", "true or false"),
        (
            "companion.renew_before_secs",
            "a whole number of seconds, e.g. 600",
        ),
        ("auth.method", "\"companion\" or \"code\" in quotes"),
        (
            "auth.client_id",
            "the client id of your \"Other devices and platforms\" security profile in quotes",
        ),
        ("auth.lwa_url", "an https:// URL in quotes"),
        ("auth.ca_file", "the path of a PEM CA certificate in quotes"),
        (
            "avs.endpoint",
            "\"na\", \"eu\", \"fe\" or an https:// URL in quotes",
        ),
        ("avs.ca_file", "the path of a PEM CA certificate in quotes"),
        (
            "avs.ping_interval_secs",
            "a whole number of seconds from 1 to 300",
        ),
        (
            "avs.inactivity_report_secs",
            "a whole number of seconds from 1 to 3600",
        ),
        (
            "avs.stable_after_secs",
            "a whole number of seconds from 1 to 3600",
        ),
        (
            "audio.capture_device",
            "an ALSA PCM name in quotes, e.g. \"default\" or \"plughw:CARD=Mic\"",
        ),
        (
            "audio.capture_format",
            "SAMPLE:RATE:CHANNELS in quotes, e.g. \"i16:16000:1\" or \"f32:48000:2\"",
        ),
        (
            "audio.playback_device",
            "an ALSA PCM name in quotes, e.g. \"default\"",
        ),
        (
            "audio.playback_format",
            "SAMPLE:RATE:CHANNELS in quotes, e.g. \"i16:48000:2\"",
        ),
        (
            "audio.mixer_control",
            "an ALSA simple control name in quotes, e.g. \"PCM\" (`amixer scontrols` lists them)",
        ),
        (
            "audio.max_listen_secs",
            "a whole number of seconds from 1 to 60",
        ),
        (
            "audio.speech_threshold",
            "a number from 1 to 32767, e.g. 300",
        ),
        (
            "alerts.clock_sync_file",
            "an absolute file path in quotes, e.g. \"/run/systemd/timesync/synchronized\"",
        ),
        ("wakeword.enabled", "true or false"),
        (
            "wakeword.model",
            "a path in quotes, e.g. \"/usr/share/avsd/alexa.json\"",
        ),
        ("wakeword.profile", "\"NEAR_FIELD\" or \"FAR_FIELD\""),
    ];

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        self.audio.validate(&mut out);
        self.auth.validate(&mut out);
        self.wakeword.validate(&mut out);
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            out.push(Invalid::new(
                "log.level",
                format!("`{}` is not a log level", self.log.level),
                "use one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
            ));
        }
        if let Some(dir) = &self.state.dir
            && !dir.is_absolute()
        {
            out.push(Invalid::new(
                "state.dir",
                format!("`{}` is not an absolute path", dir.display()),
                "give the full path, starting with /",
            ));
        }
        if !self.alerts.clock_sync_file.is_absolute() {
            out.push(Invalid::new(
                "alerts.clock_sync_file",
                format!(
                    "`{}` is not an absolute path",
                    self.alerts.clock_sync_file.display()
                ),
                "give the full path, starting with /",
            ));
        }
        if let Some(serial) = &self.device.serial
            && (serial.trim().is_empty() || serial.len() > 64)
        {
            out.push(Invalid::new(
                "device.serial",
                "the serial must be 1 to 64 characters",
                "remove the line to use the Pi's serial number, or set a short unique id",
            ));
        }
        if !self.companion.url.is_empty() {
            match url::Url::parse(&self.companion.url) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
                Ok(_) => out.push(Invalid::new(
                    "companion.url",
                    format!("`{}` is not an https:// URL", self.companion.url),
                    "the companion only speaks HTTPS: use https://HOST:PORT",
                )),
                Err(e) => out.push(Invalid::new(
                    "companion.url",
                    format!("`{}` is not a URL: {e}", self.companion.url),
                    "write it like https://pi.local:8443",
                )),
            }
        }
        if !["na", "eu", "fe"].contains(&self.avs.endpoint.as_str()) {
            let ok = url::Url::parse(&self.avs.endpoint)
                .is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
            if !ok {
                out.push(Invalid::new(
                    "avs.endpoint",
                    format!(
                        "`{}` is neither a region nor an https:// URL",
                        self.avs.endpoint
                    ),
                    "use \"na\" (North America), \"eu\", \"fe\", or https://HOST[:PORT]",
                ));
            }
        }
        if !(1..=300).contains(&self.avs.ping_interval_secs) {
            out.push(Invalid::new(
                "avs.ping_interval_secs",
                format!("{} is out of range", self.avs.ping_interval_secs),
                "use 1 to 300: AVS closes a connection that is idle for 5 minutes",
            ));
        }
        if !(1..=3600).contains(&self.avs.inactivity_report_secs) {
            out.push(Invalid::new(
                "avs.inactivity_report_secs",
                format!("{} is out of range", self.avs.inactivity_report_secs),
                "use 3600 (AVS asks for a report every hour) or less, down to 1",
            ));
        }
        if !(1..=3600).contains(&self.avs.stable_after_secs) {
            out.push(Invalid::new(
                "avs.stable_after_secs",
                format!("{} is out of range", self.avs.stable_after_secs),
                "use 1 to 3600 (60 by default): how long a connection must stay up before \
                 the reconnect back-off starts from its first step again",
            ));
        }
        for (key, path) in [
            ("avs.ca_file", &self.avs.ca_file),
            ("companion.ca_file", &self.companion.ca_file),
            ("companion.client_cert", &self.companion.client_cert),
            ("companion.client_key", &self.companion.client_key),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                out.push(Invalid::new(
                    key,
                    format!("`{}` does not exist or is not a file", p.display()),
                    "fix the path, or remove the line",
                ));
            }
        }
        out.extend(files::check_contents(self));
        if self.companion.renew_before_secs == 0 || self.companion.renew_before_secs > 3000 {
            out.push(Invalid::new(
                "companion.renew_before_secs",
                format!("{} is out of range", self.companion.renew_before_secs),
                "use 1 to 3000 seconds; LWA access tokens live 3600 s and 600 is the usual head start",
            ));
        }
        if self.companion.client_cert.is_some() != self.companion.client_key.is_some() {
            out.push(Invalid::new(
                "companion.client_cert",
                "client_cert and client_key must be set together",
                "set both for mutual TLS, or neither",
            ));
        }
        out
    }
}

impl AvsdConfig {
    /// The state directory: config, then `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`; the first entry if it lists several), then the default.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state.dir {
            return dir.clone();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            Some(v) if !v.is_empty() => {
                let s = v.to_string_lossy();
                PathBuf::from(s.split(':').next().unwrap_or(DEFAULT_STATE_DIR))
            }
            _ => PathBuf::from(DEFAULT_STATE_DIR),
        }
    }

    /// A short human summary for `--check-config`.
    pub fn summary(&self, path: &Path) -> String {
        let companion = if self.auth.is_code() {
            format!("not used: code-based linking with {}", self.auth.lwa_url)
        } else if self.companion.url.is_empty() {
            "not set (registration cannot start until companion.url is set)".to_string()
        } else {
            self.companion.url.clone()
        };
        let product = if self.device.product_id.is_empty() {
            "not set"
        } else {
            &self.device.product_id
        };
        format!(
            "{}: OK\n  log level:  {}\n  state dir:  {}\n  product id: {}\n  companion:  {}\n",
            path.display(),
            self.log.level,
            self.state_dir().display(),
            product,
            companion
        ) + &kit::strict::dropins_line(path)
    }
}

#[cfg(test)]
mod tests;
